// The interface every block executor implements: the JS reference (js-backend.ts), the native
// addon and the PyTorch worker. A server runs a BlockSpan; a client runs a ModelHead. Hidden states
// are row-major fp32 arrays of [tokens, hiddenSize].

import type { ModelConfig } from './config.js'

export type BackendName = 'js' | 'native'

/** A contiguous span of decoder blocks [start, end) with per-session KV caches. */
export interface BlockSpan {
  readonly backend: BackendName
  readonly config: ModelConfig
  readonly start: number
  readonly end: number
  /** bytes of weights this span holds in memory */
  readonly weightBytes: number
  /** bytes of KV cache one token of one session takes in this span */
  readonly cacheBytesPerToken: number

  /** Opens a session whose KV cache holds up to `maxLength` tokens; returns its id. */
  openSession (maxLength: number): number
  /**
   * Runs the span on `hidden` ([n, hiddenSize]) as the session's tokens at positions
   * `position`..`position + n - 1`, and returns the new hidden states. `position` defaults to the
   * session's current length; a smaller one rewinds the cache (Petals' start_from_position).
   */
  forward (session: number, hidden: Float32Array, position?: number): Promise<Float32Array>
  /** Tokens held in the session's cache. */
  sessionLength (session: number): number
  closeSession (session: number): void
  /** Open sessions, the cache tokens they reserve, and the span's limit (0: none). */
  cacheUsage (): { sessions: number, reserved: number, limit: number }
  /** Releases the weights and every session. */
  close (): void
}

/** The client-side ends of the model: token embeddings, final norm and lm_head. */
export interface ModelHead {
  readonly config: ModelConfig
  /** [ids.length, hiddenSize] embeddings of the token ids */
  embed (ids: readonly number[]): Float32Array
  /** Logits [vocabSize] of the last row of `hidden` ([n, hiddenSize]), after the final norm. */
  logits (hidden: Float32Array): Float32Array
}
