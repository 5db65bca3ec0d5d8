// What the tests of bad, hostile or greedy clients (bad-peers, peer-limits, fuzz) need around the
// raw peer of src/testing/raw-peer.ts: a target server, raw bytes, and assertions on its answers.

import assert from 'node:assert/strict'
import type { AbortOptions, Stream } from '@libp2p/interface'
import { ErrorCode, Request, Response } from '../src/petals/protocol/wire.js'
import type { FrameStream } from '../src/p2p/frames.js'
import { loadAddon } from '../src/inference/native-backend.js'
import { BlockServer, type ServerOptions } from '../src/petals/server/server.js'
import { BUNDLED_MODEL, waitFor } from './helpers.js'

// The peer and its frames live in src/testing/ (bench/attack.ts scripts attackers with them too).
export { BUNDLED_HIDDEN, hiddenTensor, openRequest, RawPeer } from '../src/testing/raw-peer.js'

/** The block executor the target servers run: the addon where it built. */
export const TARGET_BACKEND = loadAddon() !== null ? 'native' : 'js'

/**
 * A server of the whole bundled model on 127.0.0.1, known as `model`, for raw peers to talk to: a
 * given throughput and no refreshes to speak of, so nothing but the peers' traffic keeps it busy.
 */
export async function startTargetServer (model: string, options: Partial<ServerOptions> = {}): Promise<BlockServer> {
  return await BlockServer.start({
    modelDir: BUNDLED_MODEL,
    modelName: model,
    blocks: { start: 0, end: 5 },
    listen: ['/ip4/127.0.0.1/tcp/0'],
    throughput: 1,
    updatePeriodMs: 600_000,
    ...options,
    load: { backend: TARGET_BACKEND, ...options.load }
  })
}

/** A request as it goes on the wire: its length prefix (an unsigned varint), then the protobuf. */
export function frameBytes (request: Request): Uint8Array {
  return prefixed(Request.encode(request))
}

/** `body` behind the varint of its length, as a length-prefixed stream carries it. */
export function prefixed (body: Uint8Array, length = body.byteLength): Uint8Array {
  const prefix: number[] = []
  let n = length
  while (n >= 0x80) { prefix.push((n % 0x80) | 0x80); n = Math.floor(n / 0x80) }
  prefix.push(n)
  const out = new Uint8Array(prefix.length + body.byteLength)
  out.set(prefix)
  out.set(body, prefix.length)
  return out
}

/** Sends raw bytes, waiting for the stream to drain when the peer's window is full. */
export async function sendBytes (stream: Stream, bytes: Uint8Array): Promise<void> {
  if (!stream.send(bytes)) await stream.onDrain()
}

/** The error frame the server answers with, after which it closes the stream. */
export async function refusal (frames: FrameStream, options?: AbortOptions): Promise<{ code: ErrorCode, message: string }> {
  const response = await frames.read(Response, options)
  assert.ok(response?.error !== undefined, `expected an error frame, got ${JSON.stringify(response)}`)
  assert.equal(await frames.read(Response, options), null, 'the server ends the session after an error')
  return response.error
}

/** Waits until `server` holds `sessions` sessions (refused or ended ones' caches freed). */
export async function sessionsOpen (server: BlockServer, sessions: number): Promise<void> {
  await waitFor(`${sessions} sessions open`, () => server.span!.cacheUsage().sessions === sessions)
}
