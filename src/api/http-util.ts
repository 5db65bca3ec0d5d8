// The small pieces every endpoint shares: errors in OpenAI's envelope, JSON bodies read with a
// size limit, and server-sent events shaped as OpenAI streams them.

import type { IncomingMessage, ServerResponse } from 'node:http'
import { clip } from '../util/text.js'

/** An error a client caused or should hear about, sent as {"error":{message,type,param,code}}. */
export class ApiError extends Error {
  constructor (
    readonly status: number,
    message: string,
    readonly options: { type?: string, code?: string | null, param?: string | null, headers?: Record<string, string> } = {}
  ) {
    super(message)
    this.name = 'ApiError'
  }

  get type (): string {
    return this.options.type ?? (this.status >= 500 ? 'server_error' : 'invalid_request_error')
  }

  body (): { error: { message: string, type: string, param: string | null, code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.options.param ?? null, code: this.options.code ?? null } }
  }
}

export function badRequest (message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(400, message, { param, code })
}

/** A value from a request, for an error message: its JSON, cut short (a request is not ours to echo in full). */
export function quote (value: unknown): string {
  let text: string
  try {
    text = JSON.stringify(value) ?? String(value)
  } catch {
    text = '(a value nested too deeply to show)' // JSON.stringify overflows the stack at about 10,000 levels
  }
  return clip(text)
}

/** Any thrown value as an ApiError: unknown ones become a 500 that names the failure. */
export function toApiError (err: unknown): ApiError {
  if (err instanceof ApiError) return err
  return new ApiError(500, `internal error: ${(err as Error)?.message ?? String(err)}`)
}

export function sendJson (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers })
  res.end(text)
}

export function sendError (res: ServerResponse, err: unknown): void {
  const error = toApiError(err)
  if (res.headersSent) { res.end(); return }
  sendJson(res, error.status, error.body(), error.options.headers)
}

/** The request body parsed as a JSON object; 413 past `limitBytes`, 400 when it is not JSON. */
export async function readJsonBody (req: IncomingMessage, limitBytes = 1 << 20): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = []
  let size = 0
  try {
    for await (const chunk of req) {
      size += (chunk as Buffer).length
      if (size > limitBytes) throw new ApiError(413, `request body exceeds ${limitBytes} bytes`)
      chunks.push(chunk as Buffer)
    }
  } catch (err) {
    if (err instanceof ApiError) throw err
    // Node's 'aborted': the client closed the connection before the body was complete.
    throw badRequest(`the request body ended after ${size} bytes, before its declared length (${(err as Error).message})`)
  }
  let body: unknown
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch (err) {
    throw badRequest(`the request body is not valid JSON: ${(err as Error).message}`)
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw badRequest('the request body must be a JSON object')
  return body as Record<string, unknown>
}

/** A `text/event-stream` response: one `data: <json>` event per call, `[DONE]` at the end. */
export class EventStream {
  constructor (private readonly res: ServerResponse) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    res.flushHeaders()
  }

  get closed (): boolean {
    return this.res.destroyed || this.res.writableEnded
  }

  send (data: unknown): void {
    if (!this.closed) this.res.write(`data: ${JSON.stringify(data)}\n\n`)
  }

  /** A comment line: compliant parsers ignore it, proxies see traffic during a slow prefill. */
  ping (): void {
    if (!this.closed) this.res.write(': ping\n\n')
  }

  end (): void {
    if (!this.closed) this.res.end('data: [DONE]\n\n')
  }

  /** An error after the stream began: OpenAI's clients throw on a data event with an `error` key. */
  fail (err: unknown): void {
    if (this.closed) return
    this.res.end(`data: ${JSON.stringify(toApiError(err).body())}\n\n`)
  }
}
