// The client's end of one server session (one hop of a route): a long-lived stream that carries
// only each step's new tokens. Steps longer than a frame allows (prefills, replays) go as several
// consecutive steps of fewer tokens, which the server treats exactly like one long step.

import { randomBytes } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Connection, ConnectionLimits } from '@libp2p/interface'
import type { BmrtNode } from '../../p2p/node.js'
import { DTYPE_BYTES, type DType, type WeightFormat } from '../../inference/dtype.js'
import { decodeHidden, encodeHidden, ErrorCode, MAX_TENSOR_BYTES, openFrames, ProtocolError, Request, Response, toWireDType } from '../protocol/wire.js'
import type { FrameStream } from '../../p2p/frames.js'
import { median, percentile } from '../../util/stats.js'
import { sliceTokens } from '../../util/tensor.js'
import type { KeptReceipt } from '../protocol/evidence.js'
import { checkReceipt, ReceiptError, SESSION_NONCE_BYTES, type Receipt, type SignedReceipt } from '../protocol/receipts.js'
import type { RouteHop } from './routing.js'

/** How long opening a server session may take (Petals' connect_timeout: 5 s). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000
/** How long one server's answer to one step may take, before this client has measured any. */
export const DEFAULT_CLIENT_STEP_TIMEOUT_MS = 60_000
/** The shortest step timeout, however fast steps were (StepTimes). */
export const MIN_STEP_TIMEOUT_MS = 5000
/** A step may take this many times the p90 of measured steps (StepTimes) before it is given up. */
export const STEP_TIMEOUT_MULTIPLE = 10
/** Answered one-token steps StepTimes keeps; it needs MIN_STEP_SAMPLES of them before it shortens timeouts. */
const STEP_SAMPLES = 64
const MIN_STEP_SAMPLES = 3

/**
 * How long this client's one-token steps took, per block, so that a server that accepts a session
 * and never answers costs seconds, not DEFAULT_CLIENT_STEP_TIMEOUT_MS (issue 20, row 2; PATCHES.md,
 * "Step timeouts from measured steps"). Petals waits a fixed request_timeout (3 min) instead.
 */
export class StepTimes {
  /** ms per block of the last STEP_SAMPLES answered one-token frames */
  private readonly samples: number[] = []
  private next = 0

  /** Notes an answered frame of `tokens` tokens per sequence over `blocks` blocks. */
  record (ms: number, blocks: number, tokens: number): void {
    if (tokens !== 1 || !(blocks > 0) || !Number.isFinite(ms)) return
    if (this.samples.length < STEP_SAMPLES) this.samples.push(ms / blocks)
    else this.samples[this.next] = ms / blocks
    this.next = (this.next + 1) % STEP_SAMPLES
  }

  /**
   * The wait for a frame of `tokens` tokens over `blocks` blocks: max(MIN_STEP_TIMEOUT_MS,
   * STEP_TIMEOUT_MULTIPLE × p90 per block × blocks × tokens), at most `longest`, and `longest`
   * until MIN_STEP_SAMPLES steps were measured. A prefill is charged as that many one-token steps,
   * more than it takes on any backend, so only a server that stalls runs into it.
   */
  timeoutMs (blocks: number, tokens: number, longest: number): number {
    if (this.samples.length < MIN_STEP_SAMPLES) return longest
    const p90 = percentile(this.samples, 0.9)
    return Math.min(longest, Math.max(MIN_STEP_TIMEOUT_MS, Math.ceil(STEP_TIMEOUT_MULTIPLE * p90 * blocks * tokens)))
  }
}

/** One-token steps ServerSpeeds keeps per server, and how many it needs before it speaks. */
const SPEED_SAMPLES = 16
const MIN_SPEED_SAMPLES = 3

/**
 * The decode speed each server showed this client, so that routing need not take a server's record
 * at its word (issue 21, "records that lie"): blocks per second of its answered one-token steps,
 * the median of the last SPEED_SAMPLES. Routing charges the round trip apart (the ping), so it is
 * taken off each step's time, but at most half of it: on loopback the connection's ping (about
 * 1 ms) often exceeds a whole step of the bundled model, and a server would look infinitely fast.
 * A server that announces more than it does is routed by what it does once it has answered
 * MIN_SPEED_SAMPLES steps. Petals routes by the announced rps only.
 */
export class ServerSpeeds {
  private readonly samples = new Map<string, number[]>()

  /** @param rttSeconds the round trip to a server, as routing knows it (undefined: unknown) */
  constructor (private readonly rttSeconds: (peerId: string) => number | undefined = () => undefined) {}

  /** Notes that `peerId` answered a frame of `tokens` tokens per sequence over `blocks` blocks in `ms`. */
  record (peerId: string, ms: number, blocks: number, tokens: number): void {
    if (tokens !== 1 || !(blocks > 0) || !Number.isFinite(ms)) return
    const rtt = this.rttSeconds(peerId)
    const seconds = Math.max(ms / 1000 - (rtt !== undefined && Number.isFinite(rtt) ? rtt : 0), ms / 2000)
    if (!(seconds > 0)) return
    const samples = this.samples.get(peerId) ?? []
    samples.push(blocks / seconds)
    if (samples.length > SPEED_SAMPLES) samples.shift()
    this.samples.set(peerId, samples)
  }

  /** Blocks per second `peerId`'s answers showed, or null before MIN_SPEED_SAMPLES of them. */
  rps (peerId: string): number | null {
    const samples = this.samples.get(peerId)
    return samples === undefined || samples.length < MIN_SPEED_SAMPLES ? null : median(samples)
  }
}

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
   * how long one frame's answer may take at most (stepTimes may shorten it)
   * @default DEFAULT_CLIENT_STEP_TIMEOUT_MS (60 s)
   */
  stepTimeoutMs?: number
  /** measured step times: each answered frame adds to them, and they shorten the wait for the next */
  stepTimes?: StepTimes
  /** each server's measured speed: each answered frame adds to it */
  speeds?: ServerSpeeds
  /** the weight format the server announced, which its receipts must name (undefined: any) */
  format?: WeightFormat
  /** hears of each receipt once its fields and hashes are checked */
  onReceipt?: ReceiptListener
}

/** Hears of a server's receipt for a step it answered: its fields and hashes checked, its signature not yet. */
export type ReceiptListener = (peerId: string, signed: SignedReceipt, receipt: Receipt) => void

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
  private kept: KeptReceipt[] = []

  private constructor (readonly hop: RouteHop, private readonly frames: FrameStream, private readonly options: RemoteSpanOptions,
    private readonly nonce: Uint8Array) {}

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
      // The nonce asks the server for a signed receipt with each answer, and ties them to this session.
      const session = randomBytes(SESSION_NONCE_BYTES.min)
      await frames.write(Request, {
        open: { model: options.model, start: hop.start, end: hop.end, maxLength: options.maxLength, batch: options.batch, dtype: toWireDType(options.dtype), session }
      })
      return new RemoteSpan(hop, frames, options, session)
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
   * The server's signed receipts for the steps its cache holds now, in order (a rewind drops those
   * of the positions it overwrites): with the session's inputs, the evidence against it.
   */
  get receipts (): readonly KeptReceipt[] {
    return this.kept
  }

  /**
   * Runs `tokens` tokens' hidden states ([batch, tokens, hidden], fp32) through the hop's blocks,
   * starting at `position`, and returns the outputs of the same shape.
   */
  async step (hidden: Float32Array, tokens: number, position: number): Promise<Float32Array> {
    const { batch, hiddenSize, dtype } = this.options
    this.kept = this.kept.filter(r => r.position < position)
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
    const blocks = this.hop.end - this.hop.start
    const longest = this.options.stepTimeoutMs ?? DEFAULT_CLIENT_STEP_TIMEOUT_MS
    const timeoutMs = this.options.stepTimes?.timeoutMs(blocks, tokens, longest) ?? longest
    let response: Response | null
    let elapsed = 0
    const sent = encodeHidden(input, [batch, tokens, hiddenSize], dtype)
    try {
      const started = performance.now()
      await this.frames.write(Request, { step: { position, hidden: sent } })
      response = await this.frames.read(Response, { signal: AbortSignal.timeout(timeoutMs) })
      elapsed = performance.now() - started
    } catch (err) {
      const e = err as Error
      const reason = e.name === 'TimeoutError' || e.name === 'AbortError' ? `no answer within ${timeoutMs / 1000} s` : e.message
      throw new HopError(peer, `${peer} failed: ${reason}`, err instanceof ProtocolError ? err.code : undefined)
    }
    if (response === null) throw new HopError(peer, `${peer} closed the session`)
    if (response.error !== undefined) {
      throw new HopError(peer, `${peer} refused: ${response.error.message} (${response.error.code})`, response.error.code)
    }
    let values: Float32Array
    let receipt: Receipt
    try {
      const decoded = decodeHidden(response.hidden, { batch, hidden: hiddenSize })
      if (decoded.tokens !== tokens) throw new Error(`answered ${decoded.tokens} tokens for ${tokens}`)
      values = decoded.values
      receipt = checkReceipt(response.receipt, {
        model: this.options.model, start: this.hop.start, end: this.hop.end, session: this.nonce, position, tokens, batch,
        dtype: sent.dtype, input: sent.data, output: response.hidden!.data, format: this.options.format
      })
    } catch (err) {
      throw new HopError(peer, `${peer} sent ${err instanceof ReceiptError ? 'a bad receipt' : 'bad hidden states'}: ${(err as Error).message}`)
    }
    this.kept.push({ signed: response.receipt!, position, tokens })
    this.options.onReceipt?.(peer, response.receipt!, receipt)
    this.options.stepTimes?.record(elapsed, blocks, tokens)
    this.options.speeds?.record(peer, elapsed, blocks, tokens)
    return values
  }

  /** Ends the session: the server frees its caches. */
  close (): void {
    if (this.closed) return
    this.closed = true
    this.frames.stream.close().catch(() => this.frames.stream.abort(new Error('closing')))
  }
}

/** Writes [batch, count, hidden] into tokens [first, first + count) of [batch, tokens, hidden]. */
function putTokens (out: Float32Array, part: Float32Array, batch: number, tokens: number, hidden: number, first: number, count: number): void {
  for (let b = 0; b < batch; b++) {
    out.set(part.subarray(b * count * hidden, (b + 1) * count * hidden), (b * tokens + first) * hidden)
  }
}
