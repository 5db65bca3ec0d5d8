// The model behind the gateway: the id clients name it by, prompts to token ids, generations with
// the context checked first, and swarm failures turned into HTTP errors a client can act on.

import { generate, type GeneratedToken, type GenerationResult } from '../inference/generate.js'
import type { LanguageModel, ServedBlocks } from '../inference/model.js'
import type { ChatMessage } from '../inference/tokenizer.js'
import { clip } from '../util/text.js'
import { MissingBlocksError } from '../petals/client/routing.js'
import type { SamplingRequest } from './generation-request.js'
import { ApiError, badRequest } from './http-util.js'

export interface GenerationHooks {
  /** aborting ends the generation after the current token (finish reason 'aborted') */
  signal?: AbortSignal
  /** hears the chain of servers at open and after every failover */
  onRoute?: (route: readonly ServedBlocks[]) => void
}

export class ApiModel {
  /** unix seconds, for /v1/models */
  readonly created = Math.floor(Date.now() / 1000)
  /** generations running now */
  active = 0
  /** tokens generated since start */
  generatedTokens = 0

  /** `aliases`: other ids clients may use (some clients only accept OpenAI's model names) */
  constructor (readonly model: LanguageModel, readonly id: string, readonly aliases: readonly string[] = []) {}

  get contextLength (): number {
    return this.model.config.maxPositionEmbeddings
  }

  /** Throws OpenAI's 404 unless `name` is this model. */
  check (name: string): void {
    if (name !== this.id && !this.aliases.includes(name)) {
      throw new ApiError(404, `The model \`${clip(name)}\` does not exist; this gateway serves \`${this.id}\``, { code: 'model_not_found', param: 'model' })
    }
  }

  promptIds (prompt: string | readonly number[]): number[] {
    if (typeof prompt === 'string') return this.model.tokenizer.encode(prompt)
    const vocab = this.model.config.vocabSize
    const bad = prompt.find(id => id >= vocab)
    if (bad !== undefined) throw badRequest(`prompt: token id ${bad} is outside the vocabulary of ${vocab}`, 'prompt')
    return [...prompt]
  }

  chatIds (messages: readonly ChatMessage[]): number[] {
    return this.model.tokenizer.encodeChat(messages)
  }

  /**
   * The tokens a completion of a `promptTokens`-token prompt may have: `maxTokens`, or (null) what
   * the context leaves. Throws OpenAI's 400 context_length_exceeded when they do not fit.
   */
  completionTokens (promptTokens: number, maxTokens: number | null): number {
    const context = this.contextLength
    const tokens = maxTokens ?? context - promptTokens
    if (promptTokens + Math.max(1, tokens) > context) {
      throw badRequest(`This model's maximum context length is ${context} tokens, but ${promptTokens + tokens} were requested (${promptTokens} in the prompt, ${tokens} for the completion). Shorten the prompt or lower max_tokens.`,
        maxTokens === null ? 'messages' : 'max_tokens', 'context_length_exceeded')
    }
    return tokens
  }

  /**
   * Streams a generation. The context is checked before anything reaches the swarm; failures
   * during the generation come out as ApiErrors (503 when the swarm cannot serve the model now).
   */
  async * generate (ids: readonly number[], sampling: SamplingRequest, hooks: GenerationHooks = {}): AsyncGenerator<GeneratedToken, GenerationResult> {
    const maxTokens = this.completionTokens(ids.length, sampling.maxTokens)
    this.active++
    try {
      const generation = generate(this.model, ids, {
        maxNewTokens: maxTokens,
        temperature: sampling.temperature,
        topP: sampling.topP,
        seed: sampling.seed,
        stop: sampling.stop,
        presencePenalty: sampling.presencePenalty,
        frequencyPenalty: sampling.frequencyPenalty,
        signal: hooks.signal,
        onRoute: hooks.onRoute
      })
      for (;;) {
        const next = await generation.next()
        if (next.done === true) return next.value
        if (next.value.id !== null) this.generatedTokens++
        yield next.value
      }
    } catch (err) {
      throw swarmError(err)
    } finally {
      this.active--
    }
  }
}

function swarmError (err: unknown): ApiError {
  if (err instanceof ApiError) return err
  if (err instanceof MissingBlocksError) {
    return new ApiError(503, `${err.message}: the swarm cannot serve the whole model right now; try again when more servers are online`,
      { type: 'unavailable_error', code: 'no_route', headers: { 'retry-after': '10' } })
  }
  if (err instanceof RangeError) return badRequest(err.message)
  return new ApiError(503, `the swarm failed to generate: ${(err as Error).message}`, { type: 'unavailable_error', code: 'swarm_error', headers: { 'retry-after': '5' } })
}
