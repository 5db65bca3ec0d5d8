// Sybils (issue 20, rows 1 and 2): identities that cost nothing, each signing a record "online
// 0:5, inferenceRps 1e6" for the bundled model (so routing prefers them to any honest chain), then
// refusing every session or accepting it and never answering. Used by test/sybils.test.ts and
// bench/attack.ts.

import { createNode, joinSwarm, type BmrtNode } from '../p2p/node.js'
import { Registry } from '../p2p/registry.js'
import { ErrorCode, INFERENCE_PROTOCOL, openFrames, Request, Response } from '../petals/protocol/wire.js'
import { serverInfoRecord } from '../petals/protocol/server-info.js'

export type SybilBehaviour = 'refuse' | 'stall'

/**
 * A libp2p node with an identity of its own that announces the whole bundled model, faster than
 * anything, and then refuses each session at once (an error frame, as a full server would answer) or
 * reads every frame and never answers.
 */
export class Sybil {
  /** sessions opened on it */
  sessions = 0

  private constructor (readonly node: BmrtNode) {}

  static async start (model: string, behaviour: SybilBehaviour, initialPeers: string[]): Promise<Sybil> {
    const node = await createNode({ role: 'server', bootstrap: initialPeers })
    const sybil = new Sybil(node)
    await node.handle(INFERENCE_PROTOCOL, async stream => {
      sybil.sessions++
      const frames = openFrames(stream)
      try {
        if (await frames.read(Request) === null) return
        if (behaviour === 'refuse') {
          await frames.write(Response, { error: { code: ErrorCode.CACHE_FULL, message: 'no room for this session' } })
          await stream.close()
          return
        }
        while (await frames.read(Request) !== null) {} // never answers
      } catch {} // the client gave up on it
    })
    await joinSwarm(node)
    await new Registry(node).announce(model, { start: 0, end: 5, state: 'online', info: serverInfoRecord({ inferenceRps: 1e6, throughput: 1e6, cacheTokensLeft: 1e6 }) })
    return sybil
  }

  get peerId (): string {
    return this.node.peerId.toString()
  }
}
