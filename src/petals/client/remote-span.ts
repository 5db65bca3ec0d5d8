// The client's end of one server session (one hop of a route): a long-lived stream that carries
// only each step's new tokens. Steps longer than a frame allows (prefills, replays) go as several
// consecutive steps of fewer tokens, which the server treats exactly like one long step.

import { peerIdFromString } from '@libp2p/peer-id'
import type { Connection, ConnectionLimits } from '@libp2p/interface'
import type { BmrtNode } from '../../p2p/node.js'
import { DTYPE_BYTES, type DType } from '../../inference/dtype.js'
import { decodeHidden, encodeHidden, ErrorCode, MAX_TENSOR_BYTES, openFrames, ProtocolError, Request, Response, toWireDType } from '../protocol/wire.js'
import type { FrameStream } from '../../p2p/frames.js'
import type { RouteHop } from './routing.js'

/** How long opening a server session may take (Petals' connect_timeout: 5 s). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000
/** How long one server's answer to one step may take. */
export const DEFAULT_CLIENT_STEP_TIMEOUT_MS = 60_000

export interface RemoteSpanOptions {
  protocol: string
  model: string
  /** tokens per sequence the server reserves */
  maxLength: number
  batch: number
  hiddenSize: number
  dtype: DType
  /**
   * how long opening the stream may take
   * @default DEFAULT_CONNECT_TIMEOUT_MS (5 s, as Petals' connect_timeout)
   */
  connectTimeoutMs?: number
  /**
   * how long one frame's answer may take
   * @default DEFAULT_CLIENT_STEP_TIMEOUT_MS (60 s)
   */
  stepTimeoutMs?: number
}

function describeLimits (limits: ConnectionLimits): string {
  // bytes is what is left of the circuit's allowance; libp2p's unit for seconds is not reliable.
  const parts = [limits.bytes !== undefined ? `${Math.floor(Number(limits.bytes) / 1024)} KiB left` : '', limits.seconds !== undefined ? 'a time limit' : ''].filter(p => p !== '')
  return parts.length > 0 ? ` (${parts.join(', ')})` : ''
}

/** A failure of one hop, with the peer to blame. */
export class HopError extends Error {
  constructor (readonly peerId: string, message: string, readonly code?: ErrorCode) {
    super(message)
    this.name = 'HopError'
  }
}

export class RemoteSpan {
  private closed = false

  private constructor (readonly hop: RouteHop, private readonly frames: FrameStream, private readonly options: RemoteSpanOptions) {}

  /** Opens the stream and sends Open; a refusal (e.g. cache full) arrives with the first answer. */
  static async open (node: BmrtNode, hop: RouteHop, options: RemoteSpanOptions): Promise<RemoteSpan> {
    try {
      const signal = AbortSignal.timeout(options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS)
      const peer = peerIdFromString(hop.peerId)
      let connection: Connection
      try {
        connection = await node.dial(peer, { signal })
      } catch (err) {
        // With only a limited connection, libp2p dials again in search of an unlimited one; when
        // that fails, the limited one is what there is.
        const limited = node.getConnections(peer).find(c => c.limits !== undefined)
        if (limited === undefined) throw err
        connection = limited
      }
      // A relay that limits circuits (libp2p's default: 2 min, 128 KiB) would cut a session off
      // mid-generation; refusing here lets routing choose another server instead.
      if (connection.limits !== undefined) throw new Error(`reachable only through a relay that limits each circuit${describeLimits(connection.limits)}, too little for a session; bmrt's relay-only nodes set no such limit`)
      const stream = await connection.newStream(options.protocol, { signal })
      const frames = openFrames(stream)
      await frames.write(Request, {
        open: { model: options.model, start: hop.start, end: hop.end, maxLength: options.maxLength, batch: options.batch, dtype: toWireDType(options.dtype) }
      })
      return new RemoteSpan(hop, frames, options)
    } catch (err) {
      throw new HopError(hop.peerId, `could not open a session on ${hop.peerId}: ${(err as Error).message}`)
    }
  }

  /**
   * Whether the session is gone without a word: its stream or connection closed while it sat idle
   * (libp2p closes a connection whose pings go unanswered, as when a server hung for a while).
   * Nothing was lost that the client's history cannot replay.
   */
  get lost (): boolean {
    return !this.closed && this.frames.stream.writeStatus !== 'writable'
  }

  /**
   * Runs `tokens` tokens' hidden states ([batch, tokens, hidden], fp32) through the hop's blocks,
   * starting at `position`, and returns the outputs of the same shape.
   */
  async step (hidden: Float32Array, tokens: number, position: number): Promise<Float32Array> {
    const { batch, hiddenSize, dtype } = this.options
    const perToken = batch * hiddenSize * DTYPE_BYTES[dtype]
    const chunk = Math.max(1, Math.floor(MAX_TENSOR_BYTES / perToken))
    const out = new Float32Array(batch * tokens * hiddenSize)
    for (let first = 0; first < tokens; first += chunk) {
      const count = Math.min(chunk, tokens - first)
      const input = sliceTokens(hidden, batch, tokens, hiddenSize, first, count)
      const output = await this.exchange(input, count, position + first)
      putTokens(out, output, batch, tokens, hiddenSize, first, count)
    }
    return out
  }

  private async exchange (input: Float32Array, tokens: number, position: number): Promise<Float32Array> {
    const { batch, hiddenSize, dtype } = this.options
    const peer = this.hop.peerId
    let response: Response | null
    try {
      await this.frames.write(Request, { step: { position, hidden: encodeHidden(input, [batch, tokens, hiddenSize], dtype) } })
      response = await this.frames.read(Response, { signal: AbortSignal.timeout(this.options.stepTimeoutMs ?? DEFAULT_CLIENT_STEP_TIMEOUT_MS) })
    } catch (err) {
      const e = err as Error
      const reason = e.name === 'TimeoutError' || e.name === 'AbortError' ? `no answer within ${(this.options.stepTimeoutMs ?? DEFAULT_CLIENT_STEP_TIMEOUT_MS) / 1000} s` : e.message
      throw new HopError(peer, `${peer} failed: ${reason}`, err instanceof ProtocolError ? err.code : undefined)
    }
    if (response === null) throw new HopError(peer, `${peer} closed the session`)
    if (response.error !== undefined) {
      throw new HopError(peer, `${peer} refused: ${response.error.message} (${response.error.code})`, response.error.code)
    }
    try {
      const { values, tokens: got } = decodeHidden(response.hidden, { batch, hidden: hiddenSize })
      if (got !== tokens) throw new Error(`answered ${got} tokens for ${tokens}`)
      return values
    } catch (err) {
      throw new HopError(peer, `${peer} sent bad hidden states: ${(err as Error).message}`)
    }
  }

  /** Ends the session: the server frees its caches. */
  close (): void {
    if (this.closed) return
    this.closed = true
    this.frames.stream.close().catch(() => this.frames.stream.abort(new Error('closing')))
  }
}

/** Tokens [first, first + count) of every sequence of [batch, tokens, hidden]. */
export function sliceTokens (x: Float32Array, batch: number, tokens: number, hidden: number, first: number, count: number): Float32Array {
  if (batch === 1 || count === tokens) {
    if (batch === 1) return x.subarray(first * hidden, (first + count) * hidden)
    return x
  }
  const out = new Float32Array(batch * count * hidden)
  for (let b = 0; b < batch; b++) {
    out.set(x.subarray((b * tokens + first) * hidden, (b * tokens + first + count) * hidden), b * count * hidden)
  }
  return out
}

/** Writes [batch, count, hidden] into tokens [first, first + count) of [batch, tokens, hidden]. */
function putTokens (out: Float32Array, part: Float32Array, batch: number, tokens: number, hidden: number, first: number, count: number): void {
  for (let b = 0; b < batch; b++) {
    out.set(part.subarray(b * count * hidden, (b + 1) * count * hidden), (b * tokens + first) * hidden)
  }
}
