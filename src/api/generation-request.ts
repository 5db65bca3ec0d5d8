// OpenAI request fields → bmrt generation options. Unknown fields are accepted and ignored (clients
// such as LangChain send extras); fields that would change the output in a way bmrt cannot honour
// (n > 1, logprobs, logit_bias, tools) are refused with a 400 that names them.

import type { ChatMessage } from '../inference/tokenizer.js'
import { badRequest, quote } from './http-util.js'

export interface SamplingRequest {
  /** null: as many as the context leaves room for */
  maxTokens: number | null
  temperature: number
  topP: number
  seed?: number
  stop: string[]
  presencePenalty: number
  frequencyPenalty: number
}

type Body = Record<string, unknown>

function optionalNumber (body: Body, field: string, min: number, max: number, fallback: number): number {
  const value = body[field]
  if (value === undefined || value === null) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw badRequest(`${field} must be a number from ${min} to ${max}, got ${quote(value)}`, field)
  }
  return value
}

function optionalInteger (body: Body, field: string, min: number): number | undefined {
  const value = body[field]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw badRequest(`${field} must be an integer >= ${min}, got ${quote(value)}`, field)
  }
  return value
}

function refuse (body: Body, field: string, isHarmless: (value: unknown) => boolean, why: string): void {
  const value = body[field]
  if (value !== undefined && value !== null && !isHarmless(value)) throw badRequest(`${field} is not supported: ${why}`, field)
}

/** The sampling fields shared by /v1/completions, /v1/chat/completions and jobs. */
export function parseSampling (body: Body, defaultMaxTokens: number | null): SamplingRequest {
  refuse(body, 'n', v => v === 1, 'bmrt returns one choice per request')
  refuse(body, 'best_of', v => v === 1, 'bmrt returns one choice per request')
  refuse(body, 'logit_bias', v => typeof v === 'object' && Object.keys(v as object).length === 0, 'per-token biases are not implemented')
  refuse(body, 'logprobs', v => v === false || v === 0, 'log probabilities are not returned')
  refuse(body, 'tools', v => Array.isArray(v) && v.length === 0, 'tool calling is not implemented')
  refuse(body, 'echo', v => v === false, 'the prompt is not echoed')
  refuse(body, 'suffix', v => v === '', 'insertion is not implemented')

  const maxTokens = optionalInteger(body, 'max_completion_tokens', 1) ?? optionalInteger(body, 'max_tokens', 1) ?? defaultMaxTokens
  const seed = optionalInteger(body, 'seed', Number.MIN_SAFE_INTEGER)
  let stop: string[] = []
  const rawStop = body.stop
  if (typeof rawStop === 'string') stop = [rawStop]
  else if (Array.isArray(rawStop) && rawStop.length <= 4 && rawStop.every(s => typeof s === 'string')) stop = rawStop
  else if (rawStop !== undefined && rawStop !== null) throw badRequest('stop must be a string or an array of up to 4 strings', 'stop')
  return {
    maxTokens,
    temperature: optionalNumber(body, 'temperature', 0, 2, 1),
    topP: optionalNumber(body, 'top_p', Number.MIN_VALUE, 1, 1),
    seed,
    stop: stop.filter(s => s.length > 0),
    presencePenalty: optionalNumber(body, 'presence_penalty', -2, 2, 0),
    frequencyPenalty: optionalNumber(body, 'frequency_penalty', -2, 2, 0)
  }
}

/** `prompt` of /v1/completions: a string, or one string or token-id array inside an array. */
export function parsePrompt (body: Body): string | number[] {
  let prompt = body.prompt
  if (Array.isArray(prompt) && prompt.length === 1 && (typeof prompt[0] === 'string' || Array.isArray(prompt[0]))) prompt = prompt[0]
  if (typeof prompt === 'string') {
    if (prompt.length === 0) throw badRequest('prompt is empty', 'prompt')
    return prompt
  }
  if (Array.isArray(prompt) && prompt.length > 0 && prompt.every(id => Number.isSafeInteger(id) && id >= 0)) return prompt as number[]
  if (Array.isArray(prompt) && prompt.length > 1) throw badRequest('prompt: bmrt takes one prompt per request', 'prompt')
  throw badRequest('prompt must be a non-empty string or an array of token ids', 'prompt')
}

/** `messages` of /v1/chat/completions, with content parts joined and "developer" read as "system". */
export function parseMessages (body: Body): ChatMessage[] {
  const messages = body.messages
  if (!Array.isArray(messages) || messages.length === 0) throw badRequest('messages must be a non-empty array', 'messages')
  return messages.map((m, i) => {
    const param = `messages[${i}]`
    if (m === null || typeof m !== 'object') throw badRequest(`${param} must be an object with role and content`, param)
    const { role, content } = m as { role?: unknown, content?: unknown }
    const roles = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant' } as const
    if (typeof role !== 'string' || !Object.hasOwn(roles, role)) throw badRequest(`${param}.role must be system, developer, user or assistant, got ${quote(role)}`, `${param}.role`)
    let text: string
    if (typeof content === 'string') text = content
    else if (Array.isArray(content) && content.every(p => p?.type === 'text' && typeof p.text === 'string')) text = content.map(p => p.text).join('')
    else throw badRequest(`${param}.content must be a string or an array of text parts`, `${param}.content`)
    return { role: roles[role as keyof typeof roles], content: text }
  })
}

/** `model`: OpenAI requires it; bmrt serves one model, so a request without one gets that one. */
export function parseModel (body: Body, fallback: string): string {
  if (body.model === undefined || body.model === null || body.model === '') return fallback
  if (typeof body.model !== 'string') throw badRequest('model must be a string: the id from GET /v1/models', 'model')
  return body.model
}
