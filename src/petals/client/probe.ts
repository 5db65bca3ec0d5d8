// Asking one server what it holds and how busy it is (/bmrt/info): the swarm monitor's live probe,
// which tells a server that answers from one whose record merely has not expired yet.

import { peerIdFromString } from '@libp2p/peer-id'
import type { BmrtNode } from '../../p2p/node.js'
import { Info, INFO_PROTOCOL, InfoRequest, openFrames } from '../protocol/wire.js'

export interface ProbeResult {
  info: Info
  /** from dialing to the answer, in milliseconds */
  rttMs: number
}

/** Asks `peerId` about `model`; throws if it does not answer within `timeoutMs` (default 3 s). */
export async function probeServer (node: BmrtNode, peerId: string, model: string, timeoutMs = 3000): Promise<ProbeResult> {
  const signal = AbortSignal.timeout(timeoutMs)
  const started = performance.now()
  const stream = await node.dialProtocol(peerIdFromString(peerId), INFO_PROTOCOL, { signal, runOnLimitedConnection: true })
  try {
    const frames = openFrames(stream)
    await frames.write(InfoRequest, { model }, { signal })
    const info = await frames.read(Info, { signal })
    if (info === null) throw new Error('closed the stream without answering')
    const rttMs = performance.now() - started
    await stream.close({ signal: AbortSignal.timeout(1000) }).catch(() => stream.abort(new Error('probe ended')))
    return { info, rttMs }
  } catch (err) {
    stream.abort(err as Error) // a hung server must not hold the probe
    throw err
  }
}
