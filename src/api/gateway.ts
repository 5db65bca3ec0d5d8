// The HTTP gateway: one server for the OpenAI API, the swarm's state, the job board, Prometheus
// metrics and the web pages. It drives a model whose blocks run on the swarm (or anywhere: any
// LanguageModel works), so any node or a lone client can serve it.
//
//   const gateway = await Gateway.start({ model: new ApiModel(distributedModel, 'stories260K'), node: distributedModel.node })
//   console.log(`open ${gateway.url}`)

import { createHash, timingSafeEqual } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { isIP, type AddressInfo, type Socket } from 'node:net'
import { createRequire } from 'node:module'
import { dirname, extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { BmrtNode } from '../p2p/node.js'
import { clip } from '../util/text.js'
import { OptionError } from '../util/errors.js'
import { shortPeerId } from '../p2p/identity.js'
import { VERSION } from '../petals/protocol/version.js'
import type { WorkListener } from '../petals/client/distributed-model.js'
import type { ApiModel } from './api-model.js'
import { CreditLedger } from './credits.js'
import { ApiError, badRequest, readJsonBody, sendError, sendJson } from './http-util.js'
import { DEFAULT_KEPT_JOBS, defaultJobsFile, JobStore } from './job-store.js'
import { JobBoard, OWNER_HEADER, ownerToken } from './jobs.js'
import { GatewayMetrics } from './metrics.js'
import { createCompletion, listModels } from './openai.js'
import { SwarmMonitor, type SwarmMonitorOptions } from './swarm-report.js'

/** The gateway's port when none is given. */
export const DEFAULT_GATEWAY_PORT = 8080
/** The interface the gateway listens on when none is given: only this machine. */
export const DEFAULT_GATEWAY_HOST = '127.0.0.1'
/** Connections one IP address may hold open at once; more are closed as they arrive. */
export const DEFAULT_MAX_CONNECTIONS_PER_IP = 64
/** How long a client may take to send a whole request (headers and body), in ms. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000

export interface GatewayOptions {
  model: ApiModel
  /** the libp2p node the monitor reads the DHT and probes servers through */
  node: BmrtNode
  /**
   * interface to listen on
   * @default DEFAULT_GATEWAY_HOST ('127.0.0.1': only this machine)
   */
  host?: string
  /**
   * port; 0 picks a free one
   * @default DEFAULT_GATEWAY_PORT (8080)
   */
  port?: number
  /** if set, every endpoint but the pages needs `Authorization: Bearer <key>` (or a contributor's key) */
  apiKey?: string
  /**
   * API keys bound to contributors' peer ids (key → peer id, parseContributorKeys): a request
   * with one is let in as with `apiKey`, and a job it submits is queued by the contributor's
   * verified credits (creditRank). Without `apiKey`, the API stays open to requests without one.
   * @default none
   */
  contributorKeys?: ReadonlyMap<string, string>
  /**
   * other origins (`https://app.example:8443`) whose web pages may call the API; the gateway's own
   * pages always may. A request with any other `Origin` is refused (403), preflights included.
   * @default [] (only the gateway's own pages)
   */
  allowOrigins?: string[]
  /**
   * host names the gateway answers to besides IP addresses and `localhost` (it is reached by a
   * name: `gateway.example`); a request whose `Host` is another name is refused (403), which
   * stops DNS rebinding
   * @default [] (IP addresses and localhost only)
   */
  allowHosts?: string[]
  /**
   * connections one IP address may hold open at once; more are closed as they arrive
   * @default DEFAULT_MAX_CONNECTIONS_PER_IP (64)
   */
  maxConnectionsPerIp?: number
  /**
   * how long a client may take to send a whole request, headers and body, in ms
   * @default DEFAULT_REQUEST_TIMEOUT_MS (30 000)
   */
  requestTimeoutMs?: number
  /**
   * the job board's file, which holds the credit ledger too
   * @default defaultJobsFile() (jobs.jsonl in the user's data directory)
   */
  jobsFile?: string
  /**
   * where the servers' work for this gateway is reported (the DistributedModel behind `model`): its
   * receipts earn the servers credits on the leaderboard
   * @default none: no credits are earned
   */
  work?: WorkSource
  /**
   * jobs waiting at most
   * @default DEFAULT_MAX_QUEUED_JOBS (64)
   */
  maxQueuedJobs?: number
  /**
   * jobs generating at once
   * @default DEFAULT_JOB_CONCURRENCY (2)
   */
  jobConcurrency?: number
  /**
   * ended jobs the board keeps, in memory and in its file
   * @default DEFAULT_KEPT_JOBS (1000)
   */
  keptJobs?: number
  monitor?: SwarmMonitorOptions
  log?: (line: string) => void
}

/** What reports the servers' work (a DistributedModel). */
export interface WorkSource {
  watchWork: (listener: WorkListener) => () => void
}

type Handler = (req: IncomingMessage, res: ServerResponse, id: string) => Promise<string | undefined> | string | undefined

interface Route {
  method: string
  /** the route's name, also its metrics label; `:id` matches one path segment */
  path: string
  /** needs the API key (when one is set) */
  auth: boolean
  /** logged one line per request */
  logged: boolean
  handler: Handler
}

const WEB_DIR = fileURLToPath(new URL('../../../web/', import.meta.url))
const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png'
}

/**
 * The pages run only their own scripts: no inline code, nothing from elsewhere, no framing. Model
 * output is rendered as text on top of this; the policy is the second line of defence.
 */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff'
}

export class Gateway {
  private readonly routes: Route[]

  private constructor (
    private readonly server: Server,
    private readonly options: GatewayOptions,
    readonly jobs: JobBoard,
    readonly monitor: SwarmMonitor,
    private readonly metrics: GatewayMetrics,
    private readonly files: Map<string, { body: Buffer, type: string }>,
    readonly credits: CreditLedger,
    private readonly unwatch: () => void
  ) {
    const { model } = options
    const page = (name: string): Handler => (_req, res) => { this.sendFile(res, name, PAGE_HEADERS) }
    // The pages load their assets by relative URLs, which a trailing slash would break.
    const owner = (req: IncomingMessage): string | undefined => ownerToken(req.headers[OWNER_HEADER])
    const redirect = (to: string): Handler => (_req, res) => { res.writeHead(308, { location: to }).end() }
    this.routes = [
      { method: 'GET', path: '/', auth: false, logged: false, handler: page('index.html') },
      { method: 'GET', path: '/swarm', auth: false, logged: false, handler: page('swarm.html') },
      { method: 'GET', path: '/swarm/', auth: false, logged: false, handler: redirect('/swarm') },
      { method: 'GET', path: '/jobs', auth: false, logged: false, handler: page('jobs.html') },
      { method: 'GET', path: '/jobs/', auth: false, logged: false, handler: redirect('/jobs') },
      { method: 'GET', path: '/v1/models', auth: true, logged: false, handler: (_req, res) => { listModels(res, model) } },
      { method: 'POST', path: '/v1/completions', auth: true, logged: true, handler: async (req, res) => await createCompletion(req, res, model, 'text') },
      { method: 'POST', path: '/v1/chat/completions', auth: true, logged: true, handler: async (req, res) => await createCompletion(req, res, model, 'chat') },
      { method: 'GET', path: '/api/v1/state', auth: true, logged: false, handler: async (_req, res) => { sendJson(res, 200, await this.state()) } },
      { method: 'GET', path: '/metrics', auth: true, logged: false, handler: async (_req, res) => { this.sendText(res, await metrics.text(), metrics.contentType) } },
      { method: 'GET', path: '/api/v1/jobs', auth: true, logged: false, handler: (req, res) => { sendJson(res, 200, { jobs: jobs.list(100, owner(req)), queue: jobs.stats(), contributors: this.contributors() }) } },
      {
        method: 'POST', path: '/api/v1/jobs', auth: true, logged: true,
        handler: async (req, res) => {
          const job = await jobs.submit(await readJsonBody(req), owner(req), this.contributorOf(req))
          sendJson(res, 202, job)
          return `${job.id} queued at ${job.queue_position ?? '-'}`
        }
      },
      { method: 'GET', path: '/api/v1/jobs/:id', auth: true, logged: false, handler: (req, res, id) => { sendJson(res, 200, jobs.get(id, owner(req))) } },
      { method: 'DELETE', path: '/api/v1/jobs/:id', auth: true, logged: true, handler: async (req, res, id) => { sendJson(res, 200, await jobs.cancel(id, owner(req))) } }
    ]
    server.on('request', (req, res) => { this.handle(req, res).catch(err => sendError(res, err)) })
  }

  static async start (options: GatewayOptions): Promise<Gateway> {
    checkGatewayOptions(options)
    const store = await JobStore.open(options.jobsFile ?? defaultJobsFile(), options.keptJobs)
    if (store.skippedLines > 0) options.log?.(`jobs: skipped ${store.skippedLines} unreadable line(s) in ${store.path} (torn, or not a whole job)`)
    const jobs = new JobBoard(options.model, store, {
      maxQueued: options.maxQueuedJobs,
      concurrency: options.jobConcurrency,
      creditsOf: peerId => credits.credits.find(c => c.peer_id === peerId)?.block_tokens ?? 0,
      log: options.log
    })
    const credits = new CreditLedger(store, { onWritten: async () => await jobs.compactIfLong(), log: options.log })
    const unwatch = options.work?.watchWork(credits) ?? (() => {})
    const monitor = new SwarmMonitor(options.node, options.monitor)
    const metrics = new GatewayMetrics(monitor, jobs, options.model)
    const requestTimeout = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS
    const server = createServer({ requestTimeout, headersTimeout: requestTimeout, connectionsCheckingInterval: Math.min(requestTimeout, 1000) })
    limitConnectionsPerIp(server, options.maxConnectionsPerIp ?? DEFAULT_MAX_CONNECTIONS_PER_IP)
    const gateway = new Gateway(server, options, jobs, monitor, metrics, await loadWebFiles(), credits, unwatch)
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(options.port ?? DEFAULT_GATEWAY_PORT, options.host ?? DEFAULT_GATEWAY_HOST, () => { server.off('error', reject); resolve() })
      })
    } catch (err) {
      unwatch()
      await credits.close()
      await jobs.close()
      const e = err as NodeJS.ErrnoException
      throw new Error(e.code === 'EADDRINUSE' ? `port ${options.port ?? DEFAULT_GATEWAY_PORT} is in use: choose another with --http-port` : e.message)
    }
    return gateway
  }

  /** http://host:port/ */
  get url (): string {
    const { address, port } = this.server.address() as AddressInfo
    const host = address.includes(':') ? `[${address}]` : address
    return `http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${port}/`
  }

  /** Stops taking requests, ends open streams and stops jobs (they run again after a restart). */
  async close (): Promise<void> {
    const closed = new Promise<void>(resolve => this.server.close(() => resolve()))
    this.server.closeAllConnections()
    this.unwatch()
    await this.credits.close()
    await this.jobs.close()
    await closed
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now()
    let pathname = req.url ?? '/'
    let match: ReturnType<Gateway['match']> = null
    let note: string | undefined
    try {
      // A page of another site, or one that reaches this gateway through a DNS name it rebound to
      // our address, may not drive it: only the gateway's own pages and --allow-origin's may.
      this.checkHost(req)
      this.checkOrigin(req, res)
      if (req.method === 'OPTIONS') { res.writeHead(204).end(); return }
      pathname = requestPath(req.url)
      match = this.match(req.method ?? 'GET', pathname)
      if (match === null) throw new ApiError(404, `no such endpoint: ${req.method ?? ''} ${clip(pathname)}`, { code: 'not_found' })
      if (match.route === null) throw new ApiError(405, `${clip(pathname)} does not take ${req.method ?? ''}; it takes ${match.allowed.join(', ')}`, { code: 'method_not_allowed' })
      if (match.route.auth) this.authorize(req)
      note = await match.route.handler(req, res, match.id) ?? undefined
    } catch (err) {
      sendError(res, err)
      note = (err as Error).message
    }
    const path = match?.route?.path ?? 'unmatched'
    this.metrics.countRequest(path, res.statusCode)
    if (match?.route?.logged === true || res.statusCode >= 400) {
      this.options.log?.(`${req.method ?? ''} ${clip(pathname)} ${res.statusCode} ${(performance.now() - started).toFixed(0)} ms${note !== undefined ? ` · ${note}` : ''}`)
    }
  }

  private match (method: string, pathname: string): { route: Route | null, id: string, allowed: string[] } | null {
    const allowed: string[] = []
    for (const route of this.routes) {
      const id = matchPath(route.path, pathname)
      if (id === null) continue
      if (route.method === method || (method === 'HEAD' && route.method === 'GET')) return { route, id, allowed }
      allowed.push(route.method)
    }
    if (allowed.length > 0) return { route: null, id: '', allowed }
    // Everything else the pages load: their scripts, styles and the two vendored libraries.
    const file = this.files.get(pathname.slice(1))
    if (file !== undefined && (method === 'GET' || method === 'HEAD')) {
      return { route: { method, path: '/static', auth: false, logged: false, handler: (_req, res) => { this.sendFile(res, pathname.slice(1)) } }, id: '', allowed }
    }
    return null
  }

  /** 403 unless `Host` is an IP address, localhost or an --allow-host name. */
  private checkHost (req: IncomingMessage): void {
    const host = req.headers.host
    if (host === undefined) return // HTTP/1.0 without a name: nothing to rebind
    const name = hostName(host)
    if (isIP(name) !== 0 || name === 'localhost' || name.endsWith('.localhost') || (this.options.allowHosts ?? []).some(h => h.toLowerCase() === name)) return
    throw new ApiError(403, `this gateway does not answer to the host name ${clip(name)}; start it with --allow-host ${clip(name)} if it should`, { code: 'host_not_allowed' })
  }

  /**
   * 403 for a request from a page of an origin other than the gateway's own and --allow-origin's;
   * an allowed other origin gets its CORS headers (its own origin, never `*`).
   */
  private checkOrigin (req: IncomingMessage, res: ServerResponse): void {
    const origin = req.headers.origin
    if (origin === undefined) return // not sent by a browser's cross-origin request
    const own = req.headers.host !== undefined && [`http://${req.headers.host}`, `https://${req.headers.host}`].includes(origin.toLowerCase())
    if (own) return
    if (!(this.options.allowOrigins ?? []).some(o => normalOrigin(o) === origin.toLowerCase())) {
      throw new ApiError(403, `pages of ${clip(origin)} may not use this gateway; start it with --allow-origin ${clip(origin)} if they should`, { code: 'origin_not_allowed' })
    }
    res.setHeader('access-control-allow-origin', origin)
    res.setHeader('vary', 'origin')
    res.setHeader('access-control-allow-headers', `authorization, content-type, ${OWNER_HEADER}`)
    res.setHeader('access-control-expose-headers', 'retry-after')
    res.setHeader('access-control-allow-methods', 'GET, POST, DELETE, OPTIONS')
  }

  private authorize (req: IncomingMessage): void {
    const key = this.options.apiKey
    if (key === undefined || this.contributorOf(req) !== undefined) return
    const given = bearerToken(req)
    if (!sameSecret(given, key)) {
      throw new ApiError(401, given === '' ? 'this gateway needs an API key: send Authorization: Bearer <key>' : 'incorrect API key', { type: 'invalid_request_error', code: 'invalid_api_key' })
    }
  }

  /** The contributor (peer id) whose API key the request carries, if any. */
  private contributorOf (req: IncomingMessage): string | undefined {
    const keys = this.options.contributorKeys
    if (keys === undefined || keys.size === 0) return undefined
    const given = bearerToken(req)
    let found: string | undefined
    for (const [key, peerId] of keys) if (sameSecret(given, key)) found = peerId // every key compared: no timing tells how many matched
    return found
  }

  private async state (): Promise<object> {
    const report = await this.monitor.report()
    return {
      ...report,
      gateway: { peer_id: this.options.node.peerId.toString(), version: VERSION, model: this.options.model.id },
      contributors: this.contributors(report)
    }
  }

  /**
   * The leaderboard: each server's verified credits (the ledger's), the jobs it served on the
   * board, and its public name where the monitor knows it; the most block-tokens first.
   */
  private contributors (report = this.monitor.latest): object[] {
    const servers = report?.models.flatMap(m => m.servers) ?? []
    const jobs = new Map(this.jobs.contributors().map(c => [c.peer_id, c.jobs]))
    const credits = new Map(this.credits.credits.map(c => [c.peer_id, c]))
    return [...new Set([...credits.keys(), ...jobs.keys()])].map(peerId => ({
      peer_id: peerId,
      jobs: jobs.get(peerId) ?? 0,
      receipts: credits.get(peerId)?.receipts ?? 0,
      tokens: credits.get(peerId)?.tokens ?? 0,
      block_tokens: credits.get(peerId)?.block_tokens ?? 0,
      short_peer_id: shortPeerId(peerId),
      public_name: servers.find(s => s.peer_id === peerId)?.public_name ?? null
    })).sort((a, b) => b.block_tokens - a.block_tokens || b.jobs - a.jobs)
  }

  private sendFile (res: ServerResponse, name: string, headers: Record<string, string> = {}): void {
    const file = this.files.get(name)
    if (file === undefined) throw new ApiError(404, `${name} is missing from this installation`)
    res.writeHead(200, { 'content-type': file.type, 'content-length': file.body.length, 'cache-control': 'no-cache', ...headers })
    res.end(file.body)
  }

  private sendText (res: ServerResponse, text: string, type: string): void {
    res.writeHead(200, { 'content-type': type })
    res.end(text)
  }
}

/** The host name of a `Host` header: lower case, without the port, an IPv6 address without brackets. */
function hostName (host: string): string {
  const name = host.toLowerCase()
  const v6 = /^\[([^\]]*)\](?::\d*)?$/.exec(name)
  if (v6 !== null) return v6[1]
  return name.replace(/:\d*$/, '').replace(/\.$/, '')
}

/** `https://App.example:443/` as a browser sends it in `Origin`: `https://app.example`. */
function normalOrigin (origin: string): string {
  try {
    return new URL(origin).origin.toLowerCase()
  } catch {
    return origin.toLowerCase()
  }
}

/** The `Authorization: Bearer` token of a request ('' when none). */
function bearerToken (req: IncomingMessage): string {
  return /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? ''
}

/** Whether two secrets are equal, in a time that does not depend on where they differ. */
function sameSecret (given: string, key: string): boolean {
  const digest = (s: string): Buffer => createHash('sha256').update(s).digest()
  return timingSafeEqual(digest(given), digest(key))
}

/** Throws an OptionError for options that cannot work; Gateway.start calls it, a caller may call it before loading a model. */
export function checkGatewayOptions (options: Pick<GatewayOptions, 'allowOrigins' | 'maxConnectionsPerIp' | 'keptJobs' | 'requestTimeoutMs'>): void {
  for (const origin of options.allowOrigins ?? []) {
    let parsed: URL | undefined
    try { parsed = new URL(origin) } catch {}
    if (parsed === undefined || parsed.origin === 'null' || parsed.origin !== origin.replace(/\/$/, '').toLowerCase()) {
      throw new OptionError(['allowOrigins'], name => `${name('allowOrigins')} takes origins such as https://app.example:8443 (scheme, host and port, no path, never *), got ${clip(origin)}`)
    }
  }
  const perIp = options.maxConnectionsPerIp ?? DEFAULT_MAX_CONNECTIONS_PER_IP
  if (!Number.isSafeInteger(perIp) || perIp < 1) throw new OptionError(['maxConnectionsPerIp'], name => `${name('maxConnectionsPerIp')} must be an integer >= 1, got ${perIp}`)
  const kept = options.keptJobs ?? DEFAULT_KEPT_JOBS
  if (!Number.isSafeInteger(kept) || kept < 1) throw new OptionError(['keptJobs'], name => `${name('keptJobs')} must be an integer >= 1, got ${kept}`)
  const timeout = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS
  if (!Number.isFinite(timeout) || timeout <= 0) throw new OptionError(['requestTimeoutMs'], name => `${name('requestTimeoutMs')} must be a positive number of ms, got ${timeout}`)
}

/**
 * Closes a new connection from an address that already holds `max` open, so that one address
 * cannot use up the process's file descriptors (Node's `maxConnections` counts all addresses).
 */
function limitConnectionsPerIp (server: Server, max: number): void {
  const open = new Map<string, number>()
  server.on('connection', (socket: Socket) => {
    const ip = socket.remoteAddress ?? ''
    const count = open.get(ip) ?? 0
    if (count >= max) { socket.destroy(); return }
    open.set(ip, count + 1)
    socket.once('close', () => {
      const left = (open.get(ip) ?? 1) - 1
      if (left === 0) open.delete(ip)
      else open.set(ip, left)
    })
  })
}

/** The path of a request's target (a path, or a whole URL); 400 when it has none. */
function requestPath (target = '/'): string {
  try {
    // A path is taken as one even when it starts with '//', which URL would read as a host.
    return new URL(target.startsWith('/') ? `http://gateway${target}` : target).pathname
  } catch {
    throw badRequest(`the request target ${clip(target)} is not a URL path`)
  }
}

/** The `:id` segment's value ('' when the pattern has none) if `pathname` fits `pattern`, else null. */
function matchPath (pattern: string, pathname: string): string | null {
  const want = pattern.split('/')
  const got = pathname.split('/')
  if (want.length !== got.length) return null
  let id = ''
  for (let i = 0; i < want.length; i++) {
    if (want[i] === ':id' && got[i] !== '') id = decodePathSegment(got[i])
    else if (want[i] !== got[i]) return null
  }
  return id
}

function decodePathSegment (segment: string): string {
  try {
    return decodeURIComponent(segment)
  } catch {
    throw badRequest(`the path segment ${clip(segment)} has a malformed %-escape`)
  }
}

/** web/'s files plus marked and DOMPurify's browser builds, read once (they are small). */
async function loadWebFiles (): Promise<Map<string, { body: Buffer, type: string }>> {
  const files = new Map<string, { body: Buffer, type: string }>()
  const require = createRequire(import.meta.url)
  const sources: Array<[string, string]> = [
    ['vendor/marked.js', join(dirname(require.resolve('marked/package.json')), 'lib', 'marked.umd.js')],
    ['vendor/purify.js', require.resolve('dompurify/dist/purify.min.js')]
  ]
  for (const name of await readdir(WEB_DIR)) {
    if (CONTENT_TYPES[extname(name)] !== undefined) sources.push([name, join(WEB_DIR, name)])
  }
  for (const [name, path] of sources) files.set(name, { body: await readFile(path), type: CONTENT_TYPES[extname(name)] })
  return files
}
