// The server side of the block protocols (Petals' rpc_inference, rpc_forward and rpc_info).
//
// One stream is one session: an Open frame (model, blocks, max_length, batch), then Step frames
// with only the new tokens' hidden states, each answered by one frame of output hidden states.
// The session's KV caches are reserved at Open against the span's cache budget, and freed when the
// stream ends for any reason: the client closed it, went away, idled past the step timeout, or
// sent something malformed. A bad frame gets an error frame and ends its session, never the node.
// Each stream also counts against its peer's limits (peer-limits.ts) until it is gone.
// When an Open does not fit in the cache, sessions idle for longer than idleReclaimMs are ended,
// the longest idle first, until it fits: sessions that only hold cache cannot lock others out.

import type { Stream } from '@libp2p/interface'
import type { BlockSpan } from '../../inference/backend.js'
import type { DType, WeightFormat } from '../../inference/dtype.js'
import { CacheFullError, InvalidInputError } from '../../inference/errors.js'
import { BadFrameError, type FrameStream } from '../../p2p/frames.js'
import { clip } from '../../util/text.js'
import { concatTokens } from '../../util/tensor.js'
import { decodeHidden, encodeHidden, ErrorCode, fitsWireDType, fromWireDType, Info, InfoRequest, openFrames, ProtocolError, Request, Response, toWireDType } from '../protocol/wire.js'
import { SESSION_NONCE_BYTES, sha256, type ReceiptSigner } from '../protocol/receipts.js'
import type { PeerLimits } from './peer-limits.js'
import type { Priority, TaskOwner, TaskQueue } from './task-queue.js'

/**
 * How long a peer has to close its side after the server closed its own (after an answer, an
 * error or a refusal) before the stream is reset: a stream the server is done with holds nothing
 * for long, even when the peer never closes it.
 */
const LINGER_MS = 5000

/** An InfoRequest holds a model name: anything larger is not one. */
const MAX_INFO_REQUEST_BYTES = 4096

/** How long a session may wait for its next frame (Petals' step_timeout: 5 min). */
export const DEFAULT_STEP_TIMEOUT_MS = 5 * 60_000
/** How long a session may last in all (Petals' session_timeout: 30 min). */
export const DEFAULT_SESSION_TIMEOUT_MS = 30 * 60_000
/** The most sequences one session may step together. */
export const DEFAULT_MAX_BATCH = 64
/**
 * How long a session must have been idle (no step running or asked for) before its cache may be
 * taken back for a new session that does not fit otherwise. Petals has no such rule: its sessions
 * keep their cache until step_timeout (5 min).
 */
export const DEFAULT_IDLE_RECLAIM_MS = 30_000

export interface HandlerOptions {
  /** the name clients ask for */
  modelName: string
  /** the span being served now (null while loading or moving) */
  span: () => BlockSpan | null
  /** announce state, reported by /bmrt/info */
  state: () => string
  version: string
  /** activations on the wire when the client does not ask for a dtype */
  dtype: DType
  queue: TaskQueue
  /** the longest session a client may open (tokens per sequence) */
  inferenceMaxLength: number
  /**
   * the most sequences one session may step together
   * @default DEFAULT_MAX_BATCH (64)
   */
  maxBatch?: number
  /**
   * how long a session may wait for its next frame
   * @default DEFAULT_STEP_TIMEOUT_MS (5 min, as Petals)
   */
  stepTimeoutMs?: number
  /**
   * how long a session may last in all
   * @default DEFAULT_SESSION_TIMEOUT_MS (30 min, as Petals)
   */
  sessionTimeoutMs?: number
  /**
   * how long a session must have been idle before a new session that does not fit in the cache
   * may end it and take its cache
   * @default DEFAULT_IDLE_RECLAIM_MS (30 s)
   */
  idleReclaimMs?: number
  /** signs the receipt of each step of a session whose Open carried a nonce */
  signer: ReceiptSigner
  /** the weight format the span computes in, which receipts name */
  format: () => WeightFormat
  /** hears of every step computed for clients: batch × tokens, and the compute time */
  onStep?: (tokens: number, seconds: number) => void
  /** sessions and unprocessed bytes per peer */
  peerLimits: PeerLimits
}

/** One session as the tracker sees it. */
export interface TrackedSession {
  /** ends the session with `error` (sent to its client as an error frame) */
  end: (error: ProtocolError) => void
  /** frees the session's caches at once (only called while it is idle), then ends it */
  reclaim: (error: ProtocolError) => void
  /** since when it has held cache with no step running or asked for; null: busy, or holds no cache */
  idleSince: number | null
  /** the cache it holds, in tokens of a whole-span session (BlockSpan.cacheUsage's unit) */
  holds: number
}

/**
 * The sessions a server has open, so that moving or stopping can end them with a clear error, and
 * a new session short of cache can take an idle one's.
 */
export class SessionTracker {
  private readonly live = new Set<TrackedSession>()

  get size (): number { return this.live.size }

  add (session: TrackedSession): () => void {
    this.live.add(session)
    return () => this.live.delete(session)
  }

  /** Ends every open session with `error` (sent to its client as an error frame). */
  endAll (error: ProtocolError): void {
    for (const session of [...this.live]) session.end(error)
  }

  /** How long the longest-idle session has been idle (0: none is). */
  longestIdleMs (now = Date.now()): number {
    return Math.max(0, ...[...this.live].map(s => s.idleSince === null ? 0 : now - s.idleSince))
  }

  /** The cache that sessions idle for at least `minIdleMs` hold together (whole-span tokens). */
  reclaimable (minIdleMs: number, now = Date.now()): number {
    let total = 0
    for (const s of this.live) if (s.idleSince !== null && now - s.idleSince >= minIdleMs) total += s.holds
    return total
  }

  /**
   * Frees the cache of the session idle the longest, if it has been idle for at least `minIdleMs`,
   * and ends it with a TIMEOUT error that says why; false when no session qualifies.
   */
  reclaimIdle (minIdleMs: number, now = Date.now()): boolean {
    let oldest: TrackedSession | null = null
    for (const s of this.live) {
      if (s.idleSince !== null && now - s.idleSince >= minIdleMs && (oldest === null || s.idleSince < oldest.idleSince!)) oldest = s
    }
    if (oldest === null) return false
    const seconds = ((now - oldest.idleSince!) / 1000).toFixed(1)
    this.live.delete(oldest)
    oldest.reclaim(new ProtocolError(ErrorCode.TIMEOUT, `session ended: idle for ${seconds} s while a new session needed its cache`))
    return true
  }
}

/**
 * Serves one /bmrt/inference (priority 'inference') or /bmrt/forward ('forward') stream from
 * `owner` (its peer, and the subnet group it shares compute turns with).
 */
export async function serveSession (stream: Stream, owner: TaskOwner, priority: Priority, options: HandlerOptions, tracker: SessionTracker): Promise<void> {
  if (stream.status !== 'open') return // reset before it reached us: nothing to serve or count
  const frames = openFrames(stream)
  const stepTimeoutMs = options.stepTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS
  const sessionTimeoutMs = options.sessionTimeoutMs ?? DEFAULT_SESSION_TIMEOUT_MS
  const deadline = Date.now() + sessionTimeoutMs
  // Aborting `ended` ends the session wherever it waits: a read, or a queued compute task.
  const ended = new AbortController()
  const sessions: number[] = []
  let span: BlockSpan | null = null
  const free = (): void => {
    for (const session of sessions.splice(0)) span?.closeSession(session)
  }
  const tracked: TrackedSession = {
    end: error => ended.abort(error),
    reclaim: error => { tracked.idleSince = null; free(); ended.abort(error) },
    idleSince: null,
    holds: 0
  }
  const untrack = tracker.add(tracked)
  const usage = options.peerLimits.track(owner.peer, frames, error => ended.abort(error))
  // A client that goes away cancels its queued work at once (the stream closes or resets).
  stream.addEventListener('close', () => ended.abort(new Error('the client closed the stream')), { once: true })

  // The next frame; null when the client closed its side (the normal end of a session). One
  // controller per session, aborted by a timeout, the tracker or nothing: no signal per step.
  const next = async (): Promise<Request | null> => {
    ended.signal.throwIfAborted()
    const left = deadline - Date.now()
    const timer = setTimeout(() => ended.abort(new ProtocolError(ErrorCode.TIMEOUT, left < stepTimeoutMs
      ? `session ended: a session may last at most ${sessionTimeoutMs / 1000} s`
      : `session ended: no step for ${stepTimeoutMs / 1000} s`)), Math.max(0, Math.min(stepTimeoutMs, left)))
    try {
      return await frames.read(Request, { signal: ended.signal })
    } catch (err) {
      throw ended.signal.aborted ? ended.signal.reason : err
    } finally {
      clearTimeout(timer)
    }
  }

  try {
    usage.startSession()
    const first = await next()
    if (first === null) { await closeStream(stream); return }
    const open = first.open
    if (open === undefined) throw new ProtocolError(ErrorCode.BAD_REQUEST, 'a session starts with an Open frame (model, blocks, max_length, batch)')
    if (first.step !== undefined) throw new ProtocolError(ErrorCode.BAD_REQUEST, 'a frame carries an Open or a Step, not both: send the Open alone first')
    span = options.span()
    const batch = open.batch
    const maxLength = open.maxLength
    checkOpen(open, span, options)
    const dtype = open.dtype !== undefined ? fromWireDType(open.dtype) : options.dtype
    const nonce = open.session
    if (nonce !== undefined && (nonce.length < SESSION_NONCE_BYTES.min || nonce.length > SESSION_NONCE_BYTES.max)) {
      throw new ProtocolError(ErrorCode.BAD_REQUEST, `a session nonce has ${SESSION_NONCE_BYTES.min} to ${SESSION_NONCE_BYTES.max} bytes, got ${nonce.length}`)
    }
    const blocks = { start: open.start, end: open.end }
    const idleReclaimMs = options.idleReclaimMs ?? DEFAULT_IDLE_RECLAIM_MS
    const needs = batch * maxLength * (blocks.end - blocks.start) / (span.end - span.start)
    for (;;) {
      try {
        for (let b = 0; b < batch; b++) sessions.push(span.openSession(maxLength, blocks))
        break
      } catch (err) {
        if (!(err instanceof CacheFullError)) throw err
        free()
        // Make room by ending the longest-idle session, then try again; refuse, ending nobody, when
        // even all the sessions idle long enough would not make room.
        const usage = span.cacheUsage()
        if (usage.reserved - tracker.reclaimable(idleReclaimMs) + needs > usage.limit || !tracker.reclaimIdle(idleReclaimMs)) {
          throw new ProtocolError(ErrorCode.CACHE_FULL, `${err.message}; the sessions idle for ${idleReclaimMs / 1000} s or more would not make room`)
        }
      }
    }
    tracked.holds = needs
    tracked.idleSince = Date.now()
    usage.answered()
    const hidden = span!.config.hiddenSize
    let length = 0 // tokens in every sequence's cache

    for (;;) {
      const request = await next()
      tracked.idleSince = null
      if (request === null) { await closeStream(stream); return } // the client's normal goodbye
      if (request.open !== undefined) throw new ProtocolError(ErrorCode.BAD_REQUEST, 'this session is open already: one Open per stream, then Step frames')
      const step = request.step
      if (step === undefined) throw new ProtocolError(ErrorCode.BAD_REQUEST, 'expected a Step frame')
      const { values, tokens } = decodeHidden(step.hidden, { batch, hidden })
      const position = step.position ?? length
      if (position > length) throw new ProtocolError(ErrorCode.BAD_REQUEST, `position ${position} is beyond the ${length} tokens cached`)
      if (position + tokens > maxLength) {
        throw new ProtocolError(ErrorCode.TOO_LONG, `the session holds ${maxLength} tokens; ${position} + ${tokens} new would exceed it`)
      }
      const rows = tokens * hidden
      const steps = sessions.map((session, b) => ({ session, position, hidden: values.subarray(b * rows, (b + 1) * rows) }))
      let seconds = 0
      const outputs = await options.queue.run(priority, async () => {
        const started = performance.now()
        try {
          return await span!.forwardBatch(steps)
        } finally {
          seconds = (performance.now() - started) / 1000
        }
      }, { signal: ended.signal, owner, cost: batch * tokens * (blocks.end - blocks.start) })
      length = position + tokens
      options.onStep?.(batch * tokens, seconds)
      const output = concatTokens(outputs)
      // Finite inputs far out of the model's range overflow, and the client would refuse the answer.
      if (!fitsWireDType(output, dtype)) {
        throw new ProtocolError(ErrorCode.BAD_REQUEST, `blocks ${blocks.start}:${blocks.end} turned these hidden states into values ${dtype} cannot carry ` +
          '(NaN, infinite or out of its range): they are far outside what the model produces')
      }
      const answer = encodeHidden(output, [batch, tokens, hidden], dtype)
      // What this server computed, signed, when the client asked for receipts (receipts.ts).
      const receipt = nonce === undefined
        ? undefined
        : options.signer.sign({
          model: options.modelName, ...blocks, session: nonce, position, tokens, batch, dtype: answer.dtype,
          inputSha256: sha256(step.hidden!.data), outputSha256: sha256(answer.data), format: options.format()
        })
      await frames.write(Response, { hidden: answer, receipt })
      usage.answered()
      tracked.idleSince = Date.now()
    }
  } catch (err) {
    const error = err instanceof ProtocolError
      ? err
      : err instanceof BadFrameError
        ? new ProtocolError(ErrorCode.BAD_REQUEST, err.message)
        : err instanceof InvalidInputError
          ? new ProtocolError(ErrorCode.BAD_REQUEST, err.message)
          : new ProtocolError(ErrorCode.INTERNAL, (err as Error).message)
    await sendError(frames, error)
  } finally {
    tracked.idleSince = null
    untrack()
    free()
    usage.stopCounting()
    frames.discardInput()
  }
}

/** Refuses what this server cannot or will not serve, with the reason. */
function checkOpen (open: NonNullable<Request['open']>, span: BlockSpan | null, options: HandlerOptions): asserts span is BlockSpan {
  if (open.model !== options.modelName) throw new ProtocolError(ErrorCode.NOT_SERVED, `this server serves ${options.modelName}, not ${clip(open.model)}`)
  if (span === null) throw new ProtocolError(ErrorCode.NOT_SERVED, 'this server is loading its blocks; try another')
  if (open.start >= open.end || open.start < span.start || open.end > span.end) {
    throw new ProtocolError(ErrorCode.NOT_SERVED, `blocks ${open.start}:${open.end} are not within this server's ${span.start}:${span.end}`)
  }
  if (open.maxLength < 1 || open.maxLength > options.inferenceMaxLength) {
    throw new ProtocolError(ErrorCode.TOO_LONG, `max_length must be 1..${options.inferenceMaxLength}, got ${open.maxLength}`)
  }
  const maxBatch = options.maxBatch ?? DEFAULT_MAX_BATCH
  if (open.batch < 1 || open.batch > maxBatch) throw new ProtocolError(ErrorCode.TOO_LONG, `batch must be 1..${maxBatch}, got ${open.batch}`)
}


/**
 * Closes our side of a stream the server is done with, and resets it if the peer has not closed
 * its own within LINGER_MS (or if ours cannot be closed).
 */
async function closeStream (stream: Stream): Promise<void> {
  try {
    await stream.close({ signal: AbortSignal.timeout(5000) })
  } catch {
    stream.abort(new Error('could not close the stream'))
    return
  }
  if (stream.status === 'closed' || stream.status === 'aborted' || stream.status === 'reset') return
  const timer = setTimeout(() => stream.abort(new Error(`the peer did not close the stream within ${LINGER_MS / 1000} s of the server`)), LINGER_MS)
  stream.addEventListener('close', () => clearTimeout(timer), { once: true })
}

/** Sends an error frame (when the stream still takes one) and closes our side. */
async function sendError (frames: FrameStream, error: ProtocolError): Promise<void> {
  try {
    await frames.write(Response, { error: { code: error.code, message: error.message } }, { signal: AbortSignal.timeout(5000) })
  } catch {
    frames.stream.abort(error) // the client is gone or stuck: drop the stream
    return
  }
  await closeStream(frames.stream)
}

/** Serves one /bmrt/info request: one small frame in, one out. */
export async function serveInfo (stream: Stream, options: HandlerOptions, tracker: SessionTracker): Promise<void> {
  const frames = openFrames(stream, MAX_INFO_REQUEST_BYTES)
  try {
    const request = await frames.read(InfoRequest, { signal: AbortSignal.timeout(10_000) })
    if (request === null) { await closeStream(stream); return }
    const span = options.span()
    const usage = span?.cacheUsage()
    const info: Info = {
      version: options.version,
      model: options.modelName,
      start: span?.start ?? 0,
      end: span?.end ?? 0,
      dtype: toWireDType(options.dtype),
      backend: span?.backend ?? '',
      inferenceMaxLength: options.inferenceMaxLength,
      cacheTokensLeft: usage !== undefined && usage.limit > 0 ? Math.max(0, Math.floor(usage.limit - usage.reserved)) : undefined,
      sessions: tracker.size,
      state: request.model === options.modelName ? options.state() : 'not served'
    }
    await frames.write(Info, info, { signal: AbortSignal.timeout(5000) })
    await closeStream(stream)
  } catch (err) {
    stream.abort(err as Error) // the info protocol has no error frame
  }
}
