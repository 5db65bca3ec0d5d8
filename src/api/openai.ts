// The OpenAI-compatible endpoints: /v1/models, /v1/completions and /v1/chat/completions, with
// responses and streams shaped exactly as OpenAI shapes them
// (https://platform.openai.com/docs/api-reference/chat, and the parser of
// https://github.com/openai/openai-node/blob/master/src/core/streaming.ts).
// A client that goes away ends its generation, which closes its swarm session.

import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { collect, type FinishReason, type GeneratedToken, type GenerationResult } from '../inference/generate.js'
import { VERSION } from '../petals/protocol/version.js'
import type { ApiModel } from './api-model.js'
import { parseMessages, parseModel, parsePrompt, parseSampling } from './generation-request.js'
import { EventStream, readJsonBody, sendJson } from './http-util.js'

const FINGERPRINT = `fp_bmrt_${VERSION}`
/** OpenAI's default for legacy completions */
const COMPLETIONS_DEFAULT_MAX_TOKENS = 16
/** comment lines while a slow swarm prefills, so proxies and clients see the stream is alive */
const PING_INTERVAL_MS = 10_000

export function listModels (res: ServerResponse, model: ApiModel): void {
  const entry = (id: string): object => ({ id, object: 'model', created: model.created, owned_by: 'bmrt' })
  sendJson(res, 200, { object: 'list', data: [model.id, ...model.aliases].map(entry) })
}

type Kind = 'chat' | 'text'

/** POST /v1/chat/completions (`chat`) or /v1/completions (`text`). Resolves with a log line. */
export async function createCompletion (req: IncomingMessage, res: ServerResponse, model: ApiModel, kind: Kind): Promise<string> {
  const body = await readJsonBody(req)
  const name = parseModel(body, model.id)
  model.check(name)
  const sampling = parseSampling(body, kind === 'chat' ? null : COMPLETIONS_DEFAULT_MAX_TOKENS)
  const ids = kind === 'chat' ? model.chatIds(parseMessages(body)) : model.promptIds(parsePrompt(body))
  const stream = body.stream === true
  const includeUsage = stream && (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true

  // The client leaving (a closed socket before the response ended) aborts the generation.
  const abort = new AbortController()
  res.on('close', () => { if (!res.writableFinished) abort.abort() })
  const generation = model.generate(ids, sampling, { signal: abort.signal })
  const shape = new ResponseShape(kind, name)

  if (!stream) {
    const result = await collect(generation)
    if (abort.signal.aborted) return `client left after ${result.ids.length} tokens`
    sendJson(res, 200, shape.whole(result))
    return summary(result)
  }

  // Validation errors surface before the first token: ask for it before answering 200.
  const first = await generation.next()
  const events = new EventStream(res)
  const ping = setInterval(() => events.ping(), PING_INTERVAL_MS)
  try {
    events.send(shape.chunk(kind === 'chat' ? { role: 'assistant', content: '' } : '', null, includeUsage))
    const send = (token: GeneratedToken): void => { if (token.text.length > 0) events.send(shape.chunk(kind === 'chat' ? { content: token.text } : token.text, null, includeUsage)) }
    if (first.done !== true) send(first.value)
    const result = first.done === true ? first.value : await collect(generation, send)
    if (abort.signal.aborted) return `client left after ${result.ids.length} tokens; generation stopped`
    events.send(shape.chunk(kind === 'chat' ? {} : '', finishReason(result.finishReason), includeUsage))
    if (includeUsage) events.send({ ...shape.head(), choices: [], usage: usage(result) })
    events.end()
    return summary(result)
  } catch (err) {
    events.fail(err)
    throw err
  } finally {
    clearInterval(ping)
  }
}

/** The fields every response and chunk of one request shares. */
class ResponseShape {
  private readonly id: string
  private readonly created = Math.floor(Date.now() / 1000)

  constructor (private readonly kind: Kind, private readonly model: string) {
    this.id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`
  }

  head (): Record<string, unknown> {
    const object = this.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion'
    return { id: this.id, object, created: this.created, model: this.model, system_fingerprint: FINGERPRINT }
  }

  /** One streamed chunk: a chat delta, or a piece of completion text. */
  chunk (delta: Record<string, string> | string, finish: string | null, withUsage: boolean): Record<string, unknown> {
    const choice = typeof delta === 'string'
      ? { index: 0, text: delta, logprobs: null, finish_reason: finish }
      : { index: 0, delta, logprobs: null, finish_reason: finish }
    return { ...this.head(), choices: [choice], ...(withUsage ? { usage: null } : {}) }
  }

  whole (result: GenerationResult): Record<string, unknown> {
    const finish = finishReason(result.finishReason)
    const choice = this.kind === 'chat'
      ? { index: 0, message: { role: 'assistant', content: result.text }, logprobs: null, finish_reason: finish }
      : { index: 0, text: result.text, logprobs: null, finish_reason: finish }
    return { ...this.head(), object: this.kind === 'chat' ? 'chat.completion' : 'text_completion', choices: [choice], usage: usage(result) }
  }
}

function finishReason (reason: FinishReason): string {
  return reason === 'length' ? 'length' : 'stop'
}

function usage (result: GenerationResult): { prompt_tokens: number, completion_tokens: number, total_tokens: number } {
  return { prompt_tokens: result.promptTokens, completion_tokens: result.ids.length, total_tokens: result.promptTokens + result.ids.length }
}

function summary (result: GenerationResult): string {
  return `${result.promptTokens} prompt + ${result.ids.length} completion tokens, prefill ${(result.prefillSeconds * 1000).toFixed(0)} ms, ` +
    `${result.tokensPerSecond.toFixed(1)} tokens/s, finish ${result.finishReason}`
}

