// Per-peer limits on a real server: a greedy peer that holds too many sessions, or sends too many
// bytes ahead of the answers, is refused with PEER_LIMIT and counted, while other peers' sessions
// are served; once the greedy peer lets go, it is served again.

import assert from 'node:assert/strict'
import { collect } from '../src/inference/generate.js'
import { decodeHidden, ErrorCode, Request, Response } from '../src/petals/protocol/wire.js'
import { DistributedModel } from '../src/petals/client/distributed-model.js'
import type { BlockServer } from '../src/petals/server/server.js'
import { EXPECTED } from './expected.js'
import { BUNDLED_MODEL, waitFor } from './helpers.js'
import { BUNDLED_HIDDEN, frameBytes, hiddenTensor, openRequest, RawPeer, refusal, sendBytes, startTargetServer } from './raw-peer.js'

const MODEL = 'stories-peer-limits'
const MAX_SESSIONS = 3
const MAX_PENDING_BYTES = 1 << 20
const KIB = 1024

describe('per-peer limits of a server', function () {
  let server: BlockServer
  let greedy: RawPeer
  let other: RawPeer
  let model: DistributedModel

  before(async () => {
    server = await startTargetServer(MODEL, { peerLimits: { maxSessions: MAX_SESSIONS, maxPendingBytes: MAX_PENDING_BYTES } })
    greedy = await RawPeer.start()
    other = await RawPeer.start()
    model = await DistributedModel.load(BUNDLED_MODEL, { initialPeers: server.node.getMultiaddrs().map(String), modelName: MODEL })
  })
  after(async () => {
    await model.close()
    await other.stop()
    await greedy.stop()
    await server.stop()
  })

  const greedyUsage = (): { sessions: number, pendingBytes: number } => server.peerLimits.usage(greedy.node.peerId.toString())
  /** Opens a session and runs one step through it, so that it surely holds its slot. */
  const session = async (peer: RawPeer, maxLength = 32): ReturnType<RawPeer['dial']> => {
    const dialed = await peer.dial(server)
    await dialed.frames.write(Request, openRequest(MODEL, { maxLength }))
    await dialed.frames.write(Request, { step: { hidden: hiddenTensor(2) } })
    const answer = await dialed.frames.read(Response)
    assert.equal(decodeHidden(answer?.hidden, { batch: 1, hidden: BUNDLED_HIDDEN }).tokens, 2, `expected hidden states, got ${JSON.stringify(answer?.error)}`)
    return dialed
  }
  /** The bundled model's first reference story through the swarm client (a third peer). */
  const storyStillRight = async (): Promise<void> => {
    const { promptIds, ids } = EXPECTED[0]
    const result = await collect(model.generate(promptIds, { maxNewTokens: ids.length }))
    assert.deepEqual(result.ids, ids)
  }

  it(`refuses a peer's session past ${MAX_SESSIONS} open ones, serves other peers, and serves it again once it closes some`, async () => {
    const held = []
    for (let i = 0; i < MAX_SESSIONS; i++) held.push(await session(greedy))
    assert.equal(greedyUsage().sessions, MAX_SESSIONS)

    const { frames } = await greedy.dial(server)
    await frames.write(Request, openRequest(MODEL))
    const error = await refusal(frames)
    assert.equal(error.code, ErrorCode.PEER_LIMIT)
    assert.match(error.message, /your peer already holds 3 sessions on this server, the most one peer may: close one first/)
    assert.equal(server.peerLimits.refused.sessions, 1)

    // Other peers are untouched: a raw one, and a client generating a whole story.
    const others = await session(other)
    await others.stream.close()
    await storyStillRight()

    // The held sessions still work, and closing them makes room again.
    const [first] = held
    await first.frames.write(Request, { step: { hidden: hiddenTensor(1) } })
    assert.ok((await first.frames.read(Response))?.hidden !== undefined)
    for (const { stream } of held) await stream.close()
    await waitFor('the greedy peer\'s sessions to be released', () => greedyUsage().sessions === 0)
    const again = await session(greedy)
    await again.stream.close()
    assert.equal(server.peerLimits.refused.sessions, 1, 'nothing else was refused')
  })

  it('refuses a peer that has sent more than 1 MiB the server has not processed, across its sessions, and only that peer', async () => {
    // 6 sequences of 512 tokens (the model's context) of fp32 hidden states: a 768 KiB frame,
    // under the limit by itself.
    const batch = 6
    const bigStep = (): Uint8Array => frameBytes({ step: { hidden: hiddenTensor(512, 0.5, [batch, 512, BUNDLED_HIDDEN]) } })
    const maxLength = 512
    // Session A sends half its frame and stops: those bytes wait, unprocessable, on the server.
    const a = await greedy.dial(server)
    await a.frames.write(Request, openRequest(MODEL, { maxLength, batch }))
    const aStep = bigStep()
    await sendBytes(a.stream, aStep.subarray(0, 512 * KIB))
    await waitFor('the half frame to arrive', () => greedyUsage().pendingBytes >= 512 * KIB)

    // Session B's partial frame takes the peer past 1 MiB: B is refused, A is not.
    const b = await greedy.dial(server)
    await b.frames.write(Request, openRequest(MODEL, { maxLength, batch }))
    await sendBytes(b.stream, bigStep().subarray(0, 600 * KIB))
    const error = await refusal(b.frames)
    assert.equal(error.code, ErrorCode.PEER_LIMIT)
    assert.match(error.message, /your peer has sent 1\.\d+ MiB that this server has not processed yet, more than the 1\.00 MiB one peer may: wait for each step's answer/)
    assert.equal(server.peerLimits.refused.pendingBytes, 1)

    // Another peer sends the same frame whole while the greedy one is over its limit: served.
    const c = await other.dial(server)
    await c.frames.write(Request, openRequest(MODEL, { maxLength, batch }))
    await sendBytes(c.stream, bigStep())
    assert.equal(decodeHidden((await c.frames.read(Response))?.hidden, { batch, hidden: BUNDLED_HIDDEN }).tokens, 512)
    await c.stream.close()
    await storyStillRight()

    // Once B is gone, A finishes its frame and gets its answer; then new sessions work too.
    await b.stream.close()
    await waitFor('session B\'s bytes to be released', () => greedyUsage().pendingBytes < 600 * KIB)
    await sendBytes(a.stream, aStep.subarray(512 * KIB))
    assert.equal(decodeHidden((await a.frames.read(Response))?.hidden, { batch, hidden: BUNDLED_HIDDEN }).tokens, 512)
    await waitFor('session A\'s frame to count as processed', () => greedyUsage().pendingBytes === 0)
    await a.stream.close()
    const again = await session(greedy)
    await again.stream.close()
    assert.equal(server.peerLimits.refused.pendingBytes, 1, 'nothing else was refused')
    assert.equal(server.peerLimits.refused.sessions, 1, 'nothing else was refused')
  })
})
