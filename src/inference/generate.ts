// The generation loop: prefill the prompt, then sample one token at a time, streaming text as it
// becomes final. Works on any LanguageModel (this machine's, or a swarm through the client SDK).

import type { LanguageModel, LanguageModelSession, SessionOptions } from './model.js'
import { Sampler, validateSamplingOptions, type SamplingOptions } from './sampling.js'

export interface GenerateOptions extends SamplingOptions, SessionOptions {
  /**
   * tokens to generate at most
   * @default DEFAULT_MAX_NEW_TOKENS (128)
   */
  maxNewTokens?: number
  /** strings that end generation; the text returned stops before the first one found */
  stop?: readonly string[]
  /**
   * keep going after an end-of-sequence token
   * @default false
   */
  ignoreEos?: boolean
  /** aborting ends generation with finishReason 'aborted' */
  signal?: AbortSignal
}

export interface GeneratedToken {
  /** the token's id; null for text held back until the end and released then */
  id: number | null
  /** text that became final with this token (may be empty while a stop string or a UTF-8 sequence is incomplete) */
  text: string
}

export type FinishReason = 'length' | 'eos' | 'stop' | 'aborted'

export interface GenerationResult {
  /** generated ids (without the prompt; an EOS that ended generation is not included) */
  ids: number[]
  text: string
  finishReason: FinishReason
  promptTokens: number
  prefillSeconds: number
  decodeSeconds: number
  /** generated tokens per second of decoding (after the first token) */
  tokensPerSecond: number
}

export const DEFAULT_MAX_NEW_TOKENS = 128

/**
 * Streams tokens for `promptIds`. Iterate with for-await to get tokens; the generator's return value
 * (or `collect`) gives the whole result.
 */
export async function * generate (model: LanguageModel, promptIds: readonly number[], options: GenerateOptions = {}): AsyncGenerator<GeneratedToken, GenerationResult> {
  const maxNewTokens = checkGenerateOptions(promptIds, options)
  const conversation = await Conversation.open(model, promptIds.length + maxNewTokens, options)
  try {
    return yield * conversation.generate(promptIds, options)
  } finally {
    await conversation.close()
  }
}

function checkGenerateOptions (ids: readonly number[], options: GenerateOptions): number {
  const maxNewTokens = options.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS
  if (!Number.isSafeInteger(maxNewTokens) || maxNewTokens < 1) throw new RangeError(`max new tokens must be a positive integer, got ${maxNewTokens}`)
  if (ids.length === 0) throw new RangeError('the prompt is empty: give at least one token')
  validateSamplingOptions(options)
  return maxNewTokens
}

/**
 * A multi-turn conversation on one session: the model's caches keep every earlier turn, so each
 * turn feeds only the tokens that are new. A turn gives the whole conversation's ids so far; the
 * part the caches already hold is skipped, and where the ids differ from what was fed (a chat
 * template may tokenise a reply differently than it was generated) the caches rewind to the
 * common prefix.
 */
export class Conversation {
  /** ids in the session's caches, in order */
  private fed: number[] = []

  private constructor (readonly model: LanguageModel, private readonly session: LanguageModelSession, readonly maxLength: number) {}

  static async open (model: LanguageModel, maxLength: number, options: SessionOptions = {}): Promise<Conversation> {
    const context = model.config.maxPositionEmbeddings
    if (maxLength > context) throw new RangeError(`a session of ${maxLength} tokens exceeds the model's context of ${context} tokens`)
    return new Conversation(model, await model.openSession(maxLength, { onRoute: options.onRoute, signal: options.signal }), maxLength)
  }

  /** Tokens in the caches. */
  get length (): number {
    return this.fed.length
  }

  /** Streams the reply to the conversation whose ids are now `ids` (every turn so far). */
  async * generate (ids: readonly number[], options: GenerateOptions = {}): AsyncGenerator<GeneratedToken, GenerationResult> {
    const maxNewTokens = checkGenerateOptions(ids, options)
    if (ids.length + maxNewTokens > this.maxLength) {
      throw new RangeError(`prompt (${ids.length} tokens) + max new tokens (${maxNewTokens}) exceeds the ${this.maxLength} tokens this session holds` +
        (this.maxLength < this.model.config.maxPositionEmbeddings ? '' : ' (the model\'s context)'))
    }
    const stops = (options.stop ?? []).filter(s => s.length > 0)
    let keep = 0
    while (keep < this.fed.length && keep < ids.length && this.fed[keep] === ids[keep]) keep++
    keep = Math.min(keep, ids.length - 1) // the last prompt token must be fed to get its logits

    const sampler = new Sampler(options)
    const text = new TextTracker(this.model, ids[ids.length - 1], stops)
    const seen = [...ids]
    const eos = new Set(options.ignoreEos === true ? [] : this.model.eosTokenIds)
    let finishReason: FinishReason = 'length'
    const started = performance.now()
    let firstTokenAt = started
    this.fed = this.fed.slice(0, keep) // if a step fails, the caches hold no more than this
    let logits = await this.session.step(ids.slice(keep), keep)
    this.fed = [...ids]
    for (let produced = 0; produced < maxNewTokens; produced++) {
      if (options.signal?.aborted === true) { finishReason = 'aborted'; break }
      const id = sampler.sample(logits, seen, ids.length)
      if (produced === 0) firstTokenAt = performance.now()
      if (eos.has(id)) { finishReason = 'eos'; break }
      seen.push(id)
      const { delta, stopped } = text.push(id)
      yield { id, text: delta }
      if (stopped) { finishReason = 'stop'; break }
      if (produced + 1 < maxNewTokens) {
        logits = await this.session.step([id])
        this.fed.push(id)
      }
    }
    const finished = performance.now()
    const rest = text.flush()
    if (rest.length > 0) yield { id: null, text: rest }
    const generated = seen.slice(ids.length)
    const decodeSeconds = (finished - firstTokenAt) / 1000
    return {
      ids: generated,
      text: text.final,
      finishReason,
      promptTokens: ids.length,
      prefillSeconds: (firstTokenAt - started) / 1000,
      decodeSeconds,
      tokensPerSecond: generated.length > 1 && decodeSeconds > 0 ? (generated.length - 1) / decodeSeconds : 0
    }
  }

  async close (): Promise<void> {
    await this.session.close()
  }
}

/** Runs a generation to the end, handing each token to `onToken`, and returns its result. */
export async function collect (generation: AsyncGenerator<GeneratedToken, GenerationResult>,
  onToken: (token: GeneratedToken) => void = () => {}): Promise<GenerationResult> {
  for (;;) {
    const next = await generation.next()
    if (next.done === true) return next.value
    onToken(next.value)
  }
}

/**
 * Turns generated ids into text that is safe to show, decoding only a short window each step:
 * the text a token adds is decode(window + token) minus decode(window), where the window starts
 * at the last token that completed text (the prompt's last token at first, so SentencePiece's
 * leading-space rule sees the same context as a full decode). A token that leaves an unfinished
 * UTF-8 sequence adds nothing until the sequence completes. Text that could still become a stop
 * string is held back.
 */
class TextTracker {
  private readonly ids: number[]
  private prefixOffset = 0
  private readOffset = 1
  private text = ''
  private emitted = 0
  final = ''
  private done = false

  constructor (private readonly model: LanguageModel, anchor: number, private readonly stops: readonly string[]) {
    this.ids = [anchor]
  }

  push (id: number): { delta: string, stopped: boolean } {
    this.ids.push(id)
    this.decodeNew(false)
    const longest = Math.max(0, ...this.stops.map(s => s.length))
    let stopAt = -1
    for (const s of this.stops) {
      const at = this.text.indexOf(s, Math.max(0, this.emitted - longest))
      if (at !== -1 && (stopAt === -1 || at < stopAt)) stopAt = at
    }
    if (stopAt !== -1) {
      this.final = this.text.slice(0, stopAt)
      this.done = true
      return { delta: this.take(stopAt), stopped: true }
    }
    this.final = this.text
    return { delta: this.take(this.text.length - this.pendingStopPrefix(this.text.length)), stopped: false }
  }

  /** Text held back so far, released when generation ends for a reason other than a stop string. */
  flush (): string {
    if (this.done) return ''
    this.decodeNew(true) // an unfinished UTF-8 sequence at the very end shows as U+FFFD
    this.final = this.text
    return this.take(this.text.length)
  }

  /** Appends the text of the ids after the window; unless `force`, only once it is complete. */
  private decodeNew (force: boolean): void {
    const tokenizer = this.model.tokenizer
    const before = tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset))
    const after = tokenizer.decode(this.ids.slice(this.prefixOffset))
    if (after.length > before.length && (force || !after.endsWith('\uFFFD'))) {
      this.text += after.slice(before.length)
      this.prefixOffset = this.readOffset
      this.readOffset = this.ids.length
    }
  }

  private take (end: number): string {
    if (end <= this.emitted) return ''
    const delta = this.text.slice(this.emitted, end)
    this.emitted = end
    return delta
  }

  /** Length of the longest tail of text[0, end) that begins some stop string. */
  private pendingStopPrefix (end: number): number {
    let hold = 0
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, end - this.emitted); n > hold; n--) {
        if (this.text.slice(end - n, end) === s.slice(0, n)) { hold = n; break }
      }
    }
    return hold
  }
}
