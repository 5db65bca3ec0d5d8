// An inference session over a chain of servers (Petals' InferenceSession), with failover.
//
// Each hop keeps the history of its inputs (the hidden states that entered its first block), the
// "client-side cache" of Petals' dual-cache design. When a hop fails (an error, a closed stream, no
// answer in time), the client bans its server, routes that hop's block range again, and gives the
// first replacement the whole history plus the new tokens so it rebuilds its KV cache in one
// prefill; further replacements get the full outputs of the one before. Servers downstream keep
// their caches and get only the new tokens. Unlike upstream Petals (`_ServerInferenceSession.step`
// and `InferenceSession._update_sequence` in
// https://github.com/bigscience-workshop/petals/blob/main/src/petals/client/inference_session.py;
// https://github.com/bigscience-workshop/petals/issues/587), the position is tracked for the whole
// session, fresh servers always start at position 0, and full outputs are cropped to the new tokens
// before they reach a warm server.

import { setTimeout as wait } from 'node:timers/promises'
import type { BmrtNode } from '../../p2p/node.js'
import type { DType } from '../../inference/dtype.js'
import { ErrorCode, INFERENCE_PROTOCOL } from '../protocol/wire.js'
import { HopError, RemoteSpan, type ReceiptListener, type RemoteSpanOptions } from './remote-span.js'
import { sliceTokens } from '../../util/tensor.js'
import { formatRoute, MissingBlocksError, type RouteHop } from './routing.js'
import { retryDelayMs } from './ban-list.js'
import type { SequenceManager } from './sequence-manager.js'
import { DEFAULT_VERIFY_RATE, SpotChecker, UncheckedStepError, WrongOutputError, type CheckedStep, type SpotCheckResult } from './spot-check.js'

/**
 * Failed attempts in a row, with no hop answering between them and no server left that is not
 * banned, before a step gives up: with retryDelayMs's backoff (1, 2, 4 … 60 s) about 2 minutes of
 * waiting. Failovers to servers not banned do not count.
 */
export const DEFAULT_MAX_RETRIES = 8

export interface InferenceSessionOptions {
  /** tokens each sequence may hold, prompt included */
  maxLength: number
  /**
   * sequences stepped together
   * @default 1
   */
  batch?: number
  /**
   * failed attempts in a row, with no hop answering between them and no server left that is not
   * banned, before a step gives up
   * @default DEFAULT_MAX_RETRIES (8: about 2 minutes of backoff)
   */
  maxRetries?: number
  /**
   * opening a server session
   * @default DEFAULT_CONNECT_TIMEOUT_MS (5 s)
   */
  connectTimeoutMs?: number
  /**
   * one server's answer to one step, at most: once steps were measured, a step may take
   * max(MIN_STEP_TIMEOUT_MS, STEP_TIMEOUT_MULTIPLE × their p90), see StepTimes
   * @default DEFAULT_CLIENT_STEP_TIMEOUT_MS (60 s)
   */
  stepTimeoutMs?: number
  /**
   * the share of steps re-run on a second server that holds the same blocks, whose outputs must
   * match (spot-check.ts); 0 turns checks off
   * @default DEFAULT_VERIFY_RATE (0.05)
   */
  verifyRate?: number
  /** hears of the chain chosen at open and after every failover */
  onRoute?: (route: readonly RouteHop[], reason: string) => void
  /** hears what each spot check found */
  onSpotCheck?: (result: SpotCheckResult, hop: RouteHop) => void
  /** aborting ends waits for servers (before retries) at once, with an AbortError */
  signal?: AbortSignal
}

/** What the session needs to know about the model and swarm. */
export interface SessionContext {
  node: BmrtNode
  manager: SequenceManager
  model: string
  numBlocks: number
  hiddenSize: number
  dtype: DType
  /** hears of waits and retries (a user should know why nothing happens) */
  log?: (message: string) => void
  /** hears of every receipt a server sent (fields and hashes checked; the signature not yet) */
  onReceipt?: ReceiptListener
}

/** Inputs of one hop for positions [0, length): per sequence, a growing [tokens, hidden] buffer. */
class TokenHistory {
  private rows: Float32Array[]
  length = 0

  constructor (readonly batch: number, readonly hidden: number) {
    this.rows = Array.from({ length: batch }, () => new Float32Array(0))
  }

  /** The first `keep` tokens of a [batch, tokens, hidden] tensor. */
  static of (x: Float32Array, batch: number, tokens: number, hidden: number, keep: number): TokenHistory {
    const history = new TokenHistory(batch, hidden)
    history.append(sliceTokens(x, batch, tokens, hidden, 0, keep), keep)
    return history
  }

  truncate (length: number): void {
    this.length = Math.min(this.length, length)
  }

  append (x: Float32Array, tokens: number): void {
    const { hidden } = this
    const need = (this.length + tokens) * hidden
    for (let b = 0; b < this.batch; b++) {
      if (this.rows[b].length < need) { // grow by doubling: appends stay O(1) amortised
        const grown = new Float32Array(Math.max(need, 2 * this.rows[b].length))
        grown.set(this.rows[b].subarray(0, this.length * hidden))
        this.rows[b] = grown
      }
      this.rows[b].set(x.subarray(b * tokens * hidden, (b + 1) * tokens * hidden), this.length * hidden)
    }
    this.length += tokens
  }

  /** [batch, length + tokens, hidden]: the history followed by `x` ([batch, tokens, hidden]). */
  with (x: Float32Array, tokens: number): Float32Array {
    const { hidden, length } = this
    const total = length + tokens
    const out = new Float32Array(this.batch * total * hidden)
    for (let b = 0; b < this.batch; b++) {
      out.set(this.rows[b].subarray(0, length * hidden), b * total * hidden)
      out.set(x.subarray(b * tokens * hidden, (b + 1) * tokens * hidden), (b * total + length) * hidden)
    }
    return out
  }
}

/** One server of the chain, as this session uses it. */
class Hop {
  remote: RemoteSpan | null = null
  /** tokens the server holds in its caches for this session */
  cached = 0

  /**
   * @param history inputs for positions already processed; null for a replacement that takes the
   *   previous hop's full output instead
   */
  constructor (readonly route: RouteHop, public history: TokenHistory | null) {}
}

export class InferenceSession {
  /** tokens processed so far (per sequence) */
  position = 0
  /** failovers so far */
  failovers = 0
  private closed = false
  readonly batch: number
  /** the check running in the background (below rate 1), if any: one at a time */
  private background: Promise<void> | null = null
  /** servers a background check found wrong, whose hops are replaced at the next step */
  private readonly convicted = new Map<string, WrongOutputError>()

  private constructor (private readonly context: SessionContext, private readonly options: InferenceSessionOptions, private hops: Hop[],
    private readonly checker: SpotChecker) {
    this.batch = options.batch ?? 1
  }

  static async open (context: SessionContext, options: InferenceSessionOptions): Promise<InferenceSession> {
    const batch = options.batch ?? 1
    if (!Number.isSafeInteger(options.maxLength) || options.maxLength < 1) throw new RangeError(`max length must be a positive integer, got ${options.maxLength}`)
    if (!Number.isSafeInteger(batch) || batch < 1) throw new RangeError(`batch must be a positive integer, got ${batch}`)
    const checker = new SpotChecker(context, options.verifyRate ?? DEFAULT_VERIFY_RATE, options)
    const route = await withRetries(options.maxRetries, async () =>
      await context.manager.inferenceRoute(0, context.numBlocks, batch * options.maxLength), context.log, options.signal)
    options.onRoute?.(route, 'open')
    return new InferenceSession(context, options, route.map(r => new Hop(r, new TokenHistory(batch, context.hiddenSize))), checker)
  }

  /** The chain in use now. */
  get route (): RouteHop[] {
    return this.hops.map(h => h.route)
  }

  get maxLength (): number {
    return this.options.maxLength
  }

  /**
   * Runs new tokens' hidden states ([batch, tokens, hidden], fp32) through every block and returns
   * the last block's outputs. `position` (default: after the last step) may be smaller to rewind.
   */
  async step (hidden: Float32Array, position = this.position): Promise<Float32Array> {
    if (this.closed) throw new Error('the inference session is closed')
    const { batch } = this
    const size = this.context.hiddenSize
    if (hidden.length === 0 || hidden.length % (batch * size) !== 0) {
      throw new RangeError(`hidden states must be [${batch}, tokens, ${size}], got ${hidden.length} values`)
    }
    const tokens = hidden.length / (batch * size)
    if (!Number.isSafeInteger(position) || position < 0 || position > this.position) {
      throw new RangeError(`position must be 0..${this.position}, got ${position}`)
    }
    if (position + tokens > this.options.maxLength) {
      throw new RangeError(`the session holds ${this.options.maxLength} tokens; ${position} + ${tokens} new would exceed it`)
    }
    for (const hop of this.hops) hop.history?.truncate(position)

    let x = hidden // the new tokens' input to hop i
    let full: Float32Array | null = null // [batch, position + tokens, hidden] when the previous hop was fresh
    let attempt = 0
    for (let i = 0; i < this.hops.length;) {
      const hop = this.hops[i]
      if (hop.remote?.lost === true) {
        // Closed while idle, by nobody's fault we can name: reopen (on the same server if it is
        // still in the route), replaying the history, without a ban, a retry or a wait.
        hop.remote.close()
        Object.assign(hop, { remote: null, cached: 0 })
        this.context.log?.(`the session on ${hop.route.peerId} was closed while idle; opening it again`)
      }
      // A replacement after another fresh one has no history: it is never warm, even at position 0
      // (a failure on the prompt), and takes the previous hop's full output.
      const warm = hop.history !== null && hop.cached >= position
      const input = warm ? x : hop.history !== null ? hop.history.with(x, tokens) : full
      if (input === null) throw new Error('internal: a fresh hop has neither history nor a full input')
      const count = warm ? tokens : position + tokens
      try {
        const convicted = this.convicted.get(hop.route.peerId)
        if (convicted !== undefined) {
          // A background check found this server wrong since the last step: what it computed since
          // the checked step, and everything downstream computed from it, is rebuilt: its blocks go
          // to another server (the failover below), and the hops after it start over from the
          // replacement's full outputs.
          this.convicted.delete(hop.route.peerId)
          for (const after of this.hops.slice(i + 1)) {
            after.remote?.close()
            Object.assign(after, { remote: null, cached: 0, history: null })
          }
          throw convicted
        }
        hop.remote ??= await RemoteSpan.open(this.context.node, hop.route, { ...this.remoteOptions(), format: this.context.manager.formatOf(hop.route.peerId) })
        const out = await hop.remote.step(input, count, warm ? position : 0)
        if (this.checker.due()) {
          const step: CheckedStep = {
            hop: hop.route,
            input: warm ? hop.history!.with(x, tokens) : input,
            total: position + tokens,
            output: warm ? out : sliceTokens(out, batch, count, size, position, tokens),
            tokens,
            batch,
            receipts: [...hop.remote.receipts],
            answer: { from: warm ? position : 0, output: out }
          }
          // At rate 1 every step waits for its check: WrongOutputError (a HopError) when two other
          // servers agree this one is wrong, which bans it and recomputes the step below, like any
          // failed hop's, so no wrong step reaches the caller; nor does a step that could not be
          // checked (UncheckedStepError: no ban, a wait, and the step again). Below rate 1
          // unchecked steps reach the caller anyway, and a check (a forward of the whole history
          // elsewhere) would cost each checked step that much: it runs in the background instead,
          // one at a time, and a conviction takes effect at the next step.
          if (this.checker.rate < 1) this.background ??= this.checkInBackground(step)
          else {
            const result = await this.checker.check(step)
            if (result.outcome === 'unsettled') throw new UncheckedStepError(hop.route.peerId, `${hop.route.peerId} and ${result.verifier} disagree on blocks ${hop.route.start}:${hop.route.end} (${result.why}): the step is not delivered`)
            if (result.outcome === 'unchecked') throw new UncheckedStepError(hop.route.peerId, `${result.why}, to check ${hop.route.peerId}'s step: the step is not delivered`)
          }
        }
        this.context.manager.onSuccess(hop.route.peerId)
        if (warm) hop.history!.append(x, tokens)
        else hop.history = TokenHistory.of(input, batch, count, size, count)
        hop.cached = position + tokens
        full = count === position + tokens ? out : null // every position (a fresh hop, or any at 0)
        x = warm ? out : sliceTokens(out, batch, count, size, position, tokens)
        attempt = 0 // backoff is for failing again where we failed: a hop that answers resets it
        i++
      } catch (err) {
        if (!(err instanceof HopError)) throw err
        const maxRetries = this.options.maxRetries ?? DEFAULT_MAX_RETRIES
        // A server that ended an idle session did nothing wrong: reconnect without a ban. Nor can a
        // dispute with no third opinion name the wrong one.
        const banned = err.code !== ErrorCode.TIMEOUT && !(err instanceof UncheckedStepError)
        if (banned) this.context.manager.onFailure(hop.route.peerId)
        hop.remote?.close()
        // Whoever serves these blocks next starts fresh from the hop's input history.
        const history = hop.history ?? TokenHistory.of(full!, batch, position + tokens, size, position)
        history.truncate(position)
        Object.assign(hop, { remote: null, cached: 0, history })
        // Servers not banned, and not the one that failed, take over at once: a failure counts
        // against maxRetries, and waits, only when no such server was left. Each such failover bans
        // a server, so there are no more of them than servers known (PATCHES.md, "Failover
        // before retries").
        let replacements = await this.reroute(hop.route)
        const untried = banned && replacements !== null && replacements.every(r => r.peerId !== hop.route.peerId && !this.context.manager.bans.isBanned(r.peerId))
        if (!untried) {
          if (attempt >= maxRetries) {
            throw new Error(`blocks ${hop.route.start}:${hop.route.end} failed ${attempt + 1} times with no other server left; giving up. Last error: ${err.message}`)
          }
          const delay = retryDelayMs(attempt++)
          if (delay > 0) {
            this.context.log?.(`${err.message}; retrying blocks ${hop.route.start}:${hop.route.end} in ${delay / 1000} s (attempt ${attempt + 1} of ${maxRetries + 1})`)
            await sleep(delay, this.options.signal)
            replacements = await this.reroute(hop.route) // the swarm may have changed meanwhile
          }
        }
        if (replacements === null) continue // nobody else serves them now: try the same server again
        this.hops.splice(i, 1, ...replacements.map((r, k) => new Hop(r, k === 0 ? history : null)))
        this.failovers++
        this.options.onRoute?.(this.route, `blocks ${hop.route.start}:${hop.route.end} failed on ${hop.route.peerId} (${err.message}); replaced by ${formatRoute(replacements)}`)
      }
    }
    this.position = position + tokens
    return x
  }

  /** Runs a check apart from the steps; a conviction is kept for the next step. */
  private async checkInBackground (step: CheckedStep): Promise<void> {
    try {
      await this.checker.check(step)
    } catch (err) {
      if (err instanceof WrongOutputError) this.convicted.set(err.peerId, err)
      else this.context.log?.(`a spot check of ${step.hop.peerId} failed: ${(err as Error).message}`)
    } finally {
      this.background = null
    }
  }

  /** A new chain for one failed hop's blocks, or null when none can be found right now. */
  private async reroute (failed: RouteHop): Promise<RouteHop[] | null> {
    try {
      return await this.context.manager.inferenceRoute(failed.start, failed.end, this.batch * this.options.maxLength)
    } catch (err) {
      if (err instanceof MissingBlocksError) return null
      throw err
    }
  }

  private remoteOptions (): RemoteSpanOptions {
    return {
      protocol: INFERENCE_PROTOCOL,
      model: this.context.model,
      maxLength: this.options.maxLength,
      batch: this.batch,
      hiddenSize: this.context.hiddenSize,
      dtype: this.context.dtype,
      connectTimeoutMs: this.options.connectTimeoutMs,
      stepTimeoutMs: this.options.stepTimeoutMs,
      stepTimes: this.context.manager.stepTimes,
      speeds: this.context.manager.speeds,
      onReceipt: this.context.onReceipt
    }
  }

  /** Ends every server's session, last hop first. */
  close (): void {
    if (this.closed) return
    this.closed = true
    for (const hop of [...this.hops].reverse()) hop.remote?.close()
  }
}

/** Runs `attempt` until it stops failing with MissingBlocksError, waiting as Petals does between tries. */
export async function withRetries<T> (maxRetries = DEFAULT_MAX_RETRIES, attempt: () => Promise<T>, log?: (message: string) => void, signal?: AbortSignal): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await attempt()
    } catch (err) {
      if (!(err instanceof MissingBlocksError) || i >= maxRetries) throw err
      const delay = retryDelayMs(i + 1)
      log?.(`${err.message}; looking again in ${delay / 1000} s (attempt ${i + 2} of ${maxRetries + 1})`)
      await sleep(delay, signal)
    }
  }
}

async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted()
  if (ms > 0) await wait(ms, undefined, { signal })
}
