// Choosing the next token from logits, in Hugging Face's order: repetition penalty, temperature,
// top-k, top-p, then a draw. Temperature 0 means greedy (argmax) everywhere in bmrt.

import { randomInt } from 'node:crypto'

/** Every sampling setting off: greedy decoding (argmax), no penalties. */
export const DEFAULT_SAMPLING = {
  temperature: 0,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0
} as const satisfies Required<Omit<SamplingOptions, 'seed'>>

export interface SamplingOptions {
  /**
   * 0 = greedy; otherwise logits are divided by it before the draw
   * @default DEFAULT_SAMPLING.temperature (0)
   */
  temperature?: number
  /**
   * keep only the k most likely tokens (0 = off)
   * @default DEFAULT_SAMPLING.topK (0)
   */
  topK?: number
  /**
   * keep the smallest set of tokens whose probability reaches p (1 = off)
   * @default DEFAULT_SAMPLING.topP (1)
   */
  topP?: number
  /**
   * > 1 discourages tokens already in the context, as in the CTRL paper / HF (1 = off)
   * @default DEFAULT_SAMPLING.repetitionPenalty (1)
   */
  repetitionPenalty?: number
  /**
   * OpenAI's: subtracted once from the logit of every token generated so far (0 = off; -2..2)
   * @default DEFAULT_SAMPLING.presencePenalty (0)
   */
  presencePenalty?: number
  /**
   * OpenAI's: subtracted from a token's logit per time it was generated so far (0 = off; -2..2)
   * @default DEFAULT_SAMPLING.frequencyPenalty (0)
   */
  frequencyPenalty?: number
  /** seed for the draws; the same seed and inputs give the same tokens */
  seed?: number
}

export function validateSamplingOptions (o: SamplingOptions): void {
  const check = (ok: boolean, message: string): void => { if (!ok) throw new RangeError(message) }
  if (o.temperature !== undefined) check(Number.isFinite(o.temperature) && o.temperature >= 0, `temperature must be >= 0, got ${o.temperature}`)
  if (o.topK !== undefined) check(Number.isInteger(o.topK) && o.topK >= 0, `top-k must be an integer >= 0, got ${o.topK}`)
  if (o.topP !== undefined) check(o.topP > 0 && o.topP <= 1, `top-p must be in (0, 1], got ${o.topP}`)
  if (o.repetitionPenalty !== undefined) check(Number.isFinite(o.repetitionPenalty) && o.repetitionPenalty > 0, `repetition penalty must be > 0, got ${o.repetitionPenalty}`)
  for (const [name, value] of [['presence', o.presencePenalty], ['frequency', o.frequencyPenalty]] as const) {
    if (value !== undefined) check(Number.isFinite(value) && value >= -2 && value <= 2, `${name} penalty must be between -2 and 2, got ${value}`)
  }
  if (o.seed !== undefined) check(Number.isSafeInteger(o.seed), `seed must be an integer, got ${o.seed}`)
}

export class Sampler {
  private readonly options: Required<Omit<SamplingOptions, 'seed'>>
  private readonly random: () => number

  constructor (options: SamplingOptions = {}) {
    validateSamplingOptions(options)
    this.options = {
      temperature: options.temperature ?? DEFAULT_SAMPLING.temperature,
      topK: options.topK ?? DEFAULT_SAMPLING.topK,
      topP: options.topP ?? DEFAULT_SAMPLING.topP,
      repetitionPenalty: options.repetitionPenalty ?? DEFAULT_SAMPLING.repetitionPenalty,
      presencePenalty: options.presencePenalty ?? DEFAULT_SAMPLING.presencePenalty,
      frequencyPenalty: options.frequencyPenalty ?? DEFAULT_SAMPLING.frequencyPenalty
    }
    this.random = seededRandom(options.seed ?? randomInt(2 ** 32))
  }

  /**
   * Picks a token id. `context` holds the ids seen so far (for the repetition penalty), of which
   * those from `generatedFrom` on were generated (for the presence and frequency penalties).
   */
  sample (logits: Float32Array, context: readonly number[] = [], generatedFrom = context.length): number {
    const { temperature, topK, topP, repetitionPenalty, presencePenalty, frequencyPenalty } = this.options
    const scores = Float64Array.from(logits)
    if (repetitionPenalty !== 1) {
      for (const id of new Set(context)) {
        if (id >= 0 && id < scores.length) scores[id] = scores[id] > 0 ? scores[id] / repetitionPenalty : scores[id] * repetitionPenalty
      }
    }
    if (presencePenalty !== 0 || frequencyPenalty !== 0) {
      const counts = new Map<number, number>()
      for (let i = generatedFrom; i < context.length; i++) counts.set(context[i], (counts.get(context[i]) ?? 0) + 1)
      for (const [id, count] of counts) {
        if (id >= 0 && id < scores.length) scores[id] -= presencePenalty + frequencyPenalty * count
      }
    }
    if (temperature === 0) return argmax(scores)

    // Candidates sorted by score, cut by top-k, turned into probabilities, cut by top-p.
    let order = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a])
    if (topK > 0) order = order.slice(0, topK)
    const max = scores[order[0]]
    const weights = order.map(id => Math.exp((scores[id] - max) / temperature))
    const total = weights.reduce((a, b) => a + b, 0)
    let keep = order.length
    if (topP < 1) {
      let cumulative = 0
      for (let i = 0; i < order.length; i++) {
        cumulative += weights[i] / total
        if (cumulative >= topP) { keep = i + 1; break }
      }
    }
    const kept = weights.slice(0, keep)
    let r = this.random() * kept.reduce((a, b) => a + b, 0)
    for (let i = 0; i < keep; i++) {
      r -= kept[i]
      if (r < 0) return order[i]
    }
    return order[keep - 1]
  }
}

export function argmax (values: ArrayLike<number>): number {
  let best = 0
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i
  return best
}

/** A small seeded generator of floats in [0, 1) (splitmix32). */
export function seededRandom (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x9e3779b9) >>> 0
    let z = state
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    z ^= z >>> 16
    return (z >>> 0) / 2 ** 32
  }
}
