// The interface every block executor implements: the JS reference (js-backend.ts), the native
// addon and the PyTorch worker. A server runs a BlockSpan; a client runs a ModelHead. Hidden states
// are row-major fp32 arrays of [tokens, hiddenSize].

import type { ModelConfig } from './config.js'
import { InvalidInputError } from './errors.js'

export type BackendName = 'js' | 'native' | 'torch'

/** Absolute block indices [start, end). */
export interface BlockRange {
  start: number
  end: number
}

/** One session's step in a batch (see BlockSpan.forwardBatch). */
export interface SpanStep {
  session: number
  /** [tokens, hiddenSize] */
  hidden: Float32Array
  /** where the tokens go; default: the session's current length */
  position?: number
}

/**
 * A contiguous span of decoder blocks [start, end) with per-session KV caches.
 *
 * Cache budget, in Petals' units: `maxCacheTokens` (a load option, Petals' attn_cache_tokens) is
 * tokens PER BLOCK, so the span may reserve maxCacheTokens × (end - start) block-tokens, and a
 * session of maxLength m over k blocks reserves m × k of them. A session that does not fit is
 * refused with a CacheFullError. maxCacheTokens 0: no limit.
 */
export interface BlockSpan {
  readonly backend: BackendName
  readonly config: ModelConfig
  readonly start: number
  readonly end: number
  /** bytes of weights this span holds in memory */
  readonly weightBytes: number
  /** bytes of KV cache one token of one full-span session takes in this span */
  readonly cacheBytesPerToken: number

  /**
   * Opens a session whose KV cache holds up to `maxLength` tokens of `blocks` (absolute indices, a
   * non-empty part of [start, end); default the whole span), which is all its steps will run: a
   * route may enter this span mid-way and leave it mid-way. Returns the session's id. Throws when
   * `blocks` is outside the span (InvalidInputError), and CacheFullError when the budget cannot hold it.
   */
  openSession (maxLength: number, blocks?: BlockRange): number
  /**
   * Runs the session's blocks on `hidden` ([n, hiddenSize]) as the session's tokens at positions
   * `position`..`position + n - 1`, and returns the new hidden states. `position` defaults to the
   * session's current length; a smaller one rewinds the cache (Petals' start_from_position).
   * A session runs one step at a time.
   */
  forward (session: number, hidden: Float32Array, position?: number): Promise<Float32Array>
  /**
   * Steps of several different sessions in one call, outputs in the steps' order; the native
   * backend streams each weight once for all of them. Every session in a batch must run the same
   * blocks. Nothing runs when any step is invalid.
   */
  forwardBatch (steps: SpanStep[]): Promise<Float32Array[]>
  /** Tokens held in the session's cache. */
  sessionLength (session: number): number
  closeSession (session: number): void
  /**
   * Open sessions; `reserved`: the block-tokens they reserve divided by the span's block count
   * (a full-span session of m tokens shows m, one over half the span m / 2); `limit`:
   * maxCacheTokens, tokens per block (0: none). So limit - reserved is what a new full-span
   * session could still take, Petals' cache_tokens_left.
   */
  cacheUsage (): { sessions: number, reserved: number, limit: number }
  /** Releases the weights and every session. */
  close (): void
}

/**
 * The session's blocks, checked against the span: `blocks` must be a non-empty part of
 * [span.start, span.end); else an InvalidInputError, like the addon's.
 */
export function sessionBlocks (span: { start: number, end: number }, blocks?: BlockRange): BlockRange {
  if (blocks === undefined) return { start: span.start, end: span.end }
  const { start, end } = blocks
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < span.start || end > span.end || start >= end) {
    throw new InvalidInputError(`blocks ${start}:${end} are not a non-empty part of this span's blocks ${span.start}:${span.end}`)
  }
  return { start, end }
}

/**
 * The client-side ends of the model: token embeddings, final norm and lm_head. The JS head is the
 * reference; the native head runs lm_head on the CPU's cores or a GPU (Llama-2-70B's lm_head is
 * 32000 x 8192: 269 ms per token in JS).
 */
export interface ModelHead {
  readonly config: ModelConfig
  readonly backend: BackendName
  /** cpu, or cuda:N */
  readonly device: string
  /** bytes of the three tensors as held in memory */
  readonly weightBytes: number
  /** [ids.length, hiddenSize] embeddings of the token ids */
  embed (ids: readonly number[]): Float32Array
  /** Logits [vocabSize] of the last row of `hidden` ([n, hiddenSize]), after the final norm. */
  logits (hidden: Float32Array): Promise<Float32Array>
  /** Releases the weights. */
  close (): void
}

/** What the JS backend's loaders read tensors through: a Checkpoint, or DummyWeights. */
export interface TensorReader {
  /** A tensor's values in fp32, after checking its shape against `shape`. */
  readFloat32 (name: string, shape: number[]): Promise<Float32Array>
}
