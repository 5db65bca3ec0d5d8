// The job board: asynchronous generations submitted over HTTP, run a few at a time in order of
// their submitter's verified credits (creditRank: jobs submitted with a contributor's API key),
// then their own priority, then first come, first served; each one's chain of servers and output
// visible while it runs, and every server's contribution (tokens × blocks it processed) totalled
// for a leaderboard.

import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto'
import { collect } from '../inference/generate.js'
import type { ServedBlocks } from '../inference/model.js'
import { clip } from '../util/text.js'
import { shortPeerId } from '../p2p/identity.js'
import type { ApiModel } from './api-model.js'
import { parseModel, parseSampling, type SamplingRequest } from './generation-request.js'
import { ApiError, badRequest } from './http-util.js'
import { addContributions, DEFAULT_KEPT_JOBS, isEnded, type Contribution, type JobRecord, type JobStore } from './job-store.js'

export { DEFAULT_KEPT_JOBS }

/** Jobs that may wait; more are refused with 429. */
export const DEFAULT_MAX_QUEUED_JOBS = 64
/** Jobs generating at once. */
export const DEFAULT_JOB_CONCURRENCY = 2

export interface JobBoardOptions {
  /**
   * jobs waiting at most; more are refused with 429
   * @default DEFAULT_MAX_QUEUED_JOBS (64)
   */
  maxQueued?: number
  /**
   * jobs generating at once
   * @default DEFAULT_JOB_CONCURRENCY (2)
   */
  concurrency?: number
  /**
   * ended jobs kept (in memory and in the file); older ones leave only their contributions
   * @default DEFAULT_KEPT_JOBS (1000)
   */
  kept?: number
  /**
   * a contributor's verified block·tokens (the credit ledger's), which rank the jobs submitted
   * with its API key (creditRank)
   * @default none: every job has credit rank 0
   */
  creditsOf?: (peerId: string) => number
  log?: (line: string) => void
}

/**
 * A job's place in the queue from its contributor's verified work: the number of decimal digits of
 * its block·tokens, 0 for none (and for a job without a contributor). Jobs run by this rank first,
 * then by their own `priority`, which anyone may set: so priority cannot buy a place ahead of
 * contributors, and among contributors within a factor of ten of each other the submitter's own
 * priority and the order of arrival still count (Petals' open request #6, points for priority).
 */
export function creditRank (blockTokens: number): number {
  return blockTokens >= 1 ? Math.floor(Math.log10(blockTokens)) + 1 : 0
}

/** Whether job `a` runs before job `b`: by credit rank, then priority (ties keep submission order). */
function runsBefore (a: Pick<JobRecord, 'credit_rank' | 'priority'>, b: Pick<JobRecord, 'credit_rank' | 'priority'>): boolean {
  return a.credit_rank !== b.credit_rank ? a.credit_rank > b.credit_rank : a.priority > b.priority
}

/**
 * A job as the API shows it: the record plus its place in the queue and its speed, without its
 * owner. To anyone but its owner, `prompt` and `output` are null and `owned` is false.
 */
export type JobView = Omit<JobRecord, 'served_by' | 'owner' | 'prompt' | 'output'> & {
  prompt: string | null
  output: string | null
  owned: boolean
  served_by: Array<JobRecord['served_by'][number] & { short_peer_id: string }>
  queue_position: number | null
  duration_s: number | null
  tokens_per_second: number | null
}

/** The header that names a job's owner: the token a submission returned, or the client's own. */
export const OWNER_HEADER = 'x-job-owner'
/** Owner tokens shorter than this are refused: they would be guessable. */
const MIN_OWNER_TOKEN_CHARS = 16

/** The owner token a request sent, checked; undefined when it sent none. */
export function ownerToken (header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined
  const token = Array.isArray(header) ? header[0] : header
  if (token.length < MIN_OWNER_TOKEN_CHARS || token.length > 256) throw badRequest(`the ${OWNER_HEADER} header must be ${MIN_OWNER_TOKEN_CHARS} to 256 characters`, OWNER_HEADER, 'invalid_owner_token')
  return token
}

function ownerHash (token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

const DEFAULT_JOB_MAX_TOKENS = 64
const MAX_PROMPT_CHARS = 100_000

export class JobBoard {
  private readonly jobs = new Map<string, JobRecord>()
  /** waiting jobs, in the order they will start */
  private readonly queue: JobRecord[] = []
  private readonly running = new Map<string, AbortController>()
  private readonly runs = new Set<Promise<void>>()
  private closing = false
  readonly maxQueued: number
  readonly concurrency: number
  readonly kept: number

  constructor (private readonly model: ApiModel, private readonly store: JobStore, private readonly options: JobBoardOptions = {}) {
    this.maxQueued = options.maxQueued ?? DEFAULT_MAX_QUEUED_JOBS
    this.concurrency = options.concurrency ?? DEFAULT_JOB_CONCURRENCY
    this.kept = options.kept ?? store.keep
    for (const job of store.jobs) {
      this.jobs.set(job.id, job)
      if (job.status === 'queued') this.enqueue(job)
    }
    if (this.queue.length > 0) options.log?.(`jobs: ${this.queue.length} unfinished from before the restart are queued again`)
    this.pump()
  }

  /**
   * Validates a submission and queues it, ranked by the credits of `contributor` (a peer id, when the
   * request came with its API key). When the queue is full, a job that runs before the last queued
   * one takes its place (that one ends as cancelled, saying why); others get 429.
   */
  async submit (body: Record<string, unknown>, owner?: string, contributor?: string): Promise<JobView & { owner_token: string }> {
    if (typeof body.prompt !== 'string' || body.prompt.length === 0) throw badRequest('prompt must be a non-empty string', 'prompt')
    if (body.prompt.length > MAX_PROMPT_CHARS) throw badRequest(`prompt exceeds ${MAX_PROMPT_CHARS} characters`, 'prompt')
    this.model.check(parseModel(body, this.model.id))
    const priority = body.priority ?? 0
    if (!Number.isSafeInteger(priority) || Math.abs(priority as number) > 1000) throw badRequest('priority must be an integer from -1000 to 1000 (higher runs first)', 'priority')
    const sampling = parseSampling(body, DEFAULT_JOB_MAX_TOKENS)
    const promptTokens = this.model.promptIds(body.prompt).length
    const maxTokens = this.model.completionTokens(promptTokens, sampling.maxTokens)
    const rank = { credit_rank: contributor !== undefined ? creditRank(this.options.creditsOf?.(contributor) ?? 0) : 0, priority: priority as number }
    let displaced: JobRecord | undefined
    if (this.queue.length >= this.maxQueued && runsBefore(rank, this.queue[this.queue.length - 1])) {
      displaced = this.queue.pop() // the last to run, the newest of its rank
    } else if (this.queue.length >= this.maxQueued) {
      throw new ApiError(429, `the job queue is full (${this.queue.length} of ${this.maxQueued} waiting); try again when some have finished`, { code: 'queue_full', headers: { 'retry-after': '10' } })
    }
    const job: JobRecord = {
      id: `job-${randomUUID()}`,
      model: this.model.id,
      status: 'queued',
      priority: priority as number,
      credit_rank: rank.credit_rank,
      prompt: body.prompt,
      params: { max_tokens: maxTokens, temperature: sampling.temperature, top_p: sampling.topP, seed: sampling.seed ?? null, stop: sampling.stop },
      output: '',
      finish_reason: null,
      error: null,
      served_by: [],
      contributions: [],
      prompt_tokens: promptTokens,
      completion_tokens: 0,
      created_at: Date.now() / 1000,
      started_at: null,
      finished_at: null,
      owner: null
    }
    const token = owner ?? randomBytes(24).toString('base64url')
    job.owner = ownerHash(token)
    this.jobs.set(job.id, job)
    this.enqueue(job) // before any await, so that the queue never holds more than maxQueued
    if (displaced !== undefined) {
      const by = job.credit_rank > displaced.credit_rank ? `a contributor's job (credit rank ${job.credit_rank})` : `a job of priority ${job.priority}`
      await this.finish(displaced, { status: 'cancelled', error: `displaced from the full queue by ${by}` })
    }
    await this.store.save(job)
    this.pump()
    return { ...this.view(job, token), owner_token: token }
  }

  /** The job; 403 unless `owner` is its owner's token. */
  get (id: string, owner?: string): JobView {
    return this.view(this.owned(id, owner), owner)
  }

  /** The newest jobs first; the prompt and output only of those `owner` owns. */
  list (limit = 100, owner?: string): JobView[] {
    return [...this.jobs.values()].sort((a, b) => b.created_at - a.created_at).slice(0, limit).map(job => this.view(job, owner))
  }

  /** Cancels a queued or running job; 403 unless `owner` is its owner's token, 409 if it has ended. */
  async cancel (id: string, owner?: string): Promise<JobView> {
    const job = this.owned(id, owner)
    if (isEnded(job.status)) throw new ApiError(409, `job ${clip(id)} has already ended (${job.status})`, { code: 'job_ended' })
    const index = this.queue.indexOf(job)
    if (index !== -1) {
      this.queue.splice(index, 1)
      await this.finish(job, { status: 'cancelled' })
    } else {
      this.running.get(id)?.abort() // the run sees it after the current token and ends as cancelled
    }
    return this.view(job, owner)
  }

  stats (): { queued: number, running: number, max_queued: number, concurrency: number } {
    return { queued: this.queue.length, running: this.running.size, max_queued: this.maxQueued, concurrency: this.concurrency }
  }

  /** Every server's totals over all jobs, most block-tokens first. */
  contributors (): Contribution[] {
    const perJob = [...this.jobs.values()].map(j => j.contributions)
    return addContributions(this.store.carried, ...perJob).sort((a, b) => b.block_tokens - a.block_tokens)
  }

  counts (): Record<string, number> {
    const counts: Record<string, number> = { queued: 0, running: 0, done: 0, failed: 0, cancelled: 0 }
    for (const job of this.jobs.values()) counts[job.status]++
    return counts
  }

  /** Stops running jobs without ending them: the next start queues them again. */
  async close (): Promise<void> {
    this.closing = true
    for (const controller of this.running.values()) controller.abort()
    await Promise.all(this.runs)
    await this.store.close()
  }

  private find (id: string): JobRecord {
    const job = this.jobs.get(id)
    if (job === undefined) throw new ApiError(404, `no job ${clip(id)}`, { code: 'job_not_found' })
    return job
  }

  private owned (id: string, owner: string | undefined): JobRecord {
    const job = this.find(id)
    if (!isOwner(job, owner)) {
      throw new ApiError(403, `job ${clip(id)} belongs to another client: send the ${OWNER_HEADER} token its submission returned`, { code: 'not_job_owner' })
    }
    return job
  }

  private enqueue (job: JobRecord): void {
    // Higher credit rank, then higher priority first; equals in submission order.
    let at = this.queue.findIndex(q => runsBefore(job, q))
    if (at === -1) at = this.queue.length
    this.queue.splice(at, 0, job)
  }

  private pump (): void {
    while (!this.closing && this.running.size < this.concurrency && this.queue.length > 0) {
      const job = this.queue.shift()!
      const controller = new AbortController()
      this.running.set(job.id, controller)
      const run = this.run(job, controller.signal).finally(() => {
        this.running.delete(job.id)
        this.runs.delete(run)
        this.pump()
      })
      this.runs.add(run)
    }
  }

  private async run (job: JobRecord, signal: AbortSignal): Promise<void> {
    Object.assign(job, { status: 'running', started_at: Date.now() / 1000 })
    const meter = new ContributionMeter()
    try {
      const ids = this.model.promptIds(job.prompt)
      const sampling: SamplingRequest = {
        maxTokens: job.params.max_tokens,
        temperature: job.params.temperature,
        topP: job.params.top_p,
        seed: job.params.seed ?? undefined,
        stop: job.params.stop,
        presencePenalty: 0,
        frequencyPenalty: 0
      }
      const generation = this.model.generate(ids, sampling, {
        signal,
        onRoute: route => {
          job.served_by = route.map(hop => ({ peer_id: hop.peerId, start: hop.start, end: hop.end }))
          meter.route(route)
        }
      })
      const result = await collect(generation, token => {
        if (token.id !== null) {
          meter.fed(job.completion_tokens === 0 ? ids.length : 1) // the prompt, then each token before this one
          job.completion_tokens++
        }
        job.output += token.text
      })
      if (this.closing) return // not ended: it runs again after the restart
      job.contributions = meter.close()
      const finish = result.finishReason
      await this.finish(job, finish === 'aborted' ? { status: 'cancelled' } : { status: 'done', finish_reason: finish === 'length' ? 'length' : 'stop' })
    } catch (err) {
      if (this.closing) return
      job.contributions = meter.close()
      await this.finish(job, signal.aborted ? { status: 'cancelled' } : { status: 'failed', error: (err as Error).message })
    }
  }

  private async finish (job: JobRecord, end: Pick<JobRecord, 'status'> & Partial<JobRecord>): Promise<void> {
    Object.assign(job, end, { finished_at: Date.now() / 1000 })
    this.options.log?.(`job ${job.id} ${job.status}${job.error !== null ? `: ${job.error}` : ''} (${job.completion_tokens} tokens)`)
    this.forgetOldEnded()
    await this.store.save(job)
    await this.store.compactIfLong([...this.jobs.values()])
  }

  /** Rewrites the file whole if it has grown past its threshold (after the credit ledger's writes too). */
  async compactIfLong (): Promise<void> {
    await this.store.compactIfLong([...this.jobs.values()])
  }

  /** Keeps the newest `kept` ended jobs; older ones leave only their contributions, carried by the store. */
  private forgetOldEnded (): void {
    let ended = 0
    for (const job of this.jobs.values()) if (isEnded(job.status)) ended++
    for (const job of this.jobs.values()) { // in creation order: the oldest first
      if (ended <= this.kept) break
      if (!isEnded(job.status)) continue
      this.jobs.delete(job.id)
      this.store.carry(job.contributions)
      ended--
    }
  }

  private view (job: JobRecord, owner: string | undefined): JobView {
    const position = this.queue.indexOf(job)
    const end = job.finished_at ?? (job.status === 'running' ? Date.now() / 1000 : null)
    const duration = job.started_at !== null && end !== null ? end - job.started_at : null
    const { owner: _hash, ...record } = job
    const owned = isOwner(job, owner)
    return {
      ...record,
      prompt: owned ? job.prompt : null,
      output: owned ? job.output : null,
      owned,
      queue_position: position === -1 ? null : position + 1,
      duration_s: duration,
      tokens_per_second: duration !== null && duration > 0 && job.completion_tokens > 0 ? job.completion_tokens / duration : null,
      served_by: job.served_by.map(hop => ({ ...hop, short_peer_id: shortPeerId(hop.peer_id) }))
    }
  }
}

/**
 * Tokens each server processed for one job. While a chain is in use every hop processes each token
 * fed; a hop that joins after a failover first replays everything fed so far.
 */
class ContributionMeter {
  private totals = new Map<string, Contribution>()
  private current: readonly ServedBlocks[] = []
  private tokens = 0
  private since = 0

  route (route: readonly ServedBlocks[]): void {
    this.settle()
    const before = new Set(this.current.map(key))
    this.current = route
    for (const hop of route) if (!before.has(key(hop))) this.add(hop, this.tokens) // replay
    this.since = this.tokens
  }

  fed (tokens: number): void {
    this.tokens += tokens
  }

  close (): Contribution[] {
    this.settle()
    this.current = []
    return [...this.totals.values()]
  }

  private settle (): void {
    for (const hop of this.current) this.add(hop, this.tokens - this.since)
    this.since = this.tokens
  }

  private add (hop: ServedBlocks, tokens: number): void {
    const total = this.totals.get(hop.peerId) ?? { peer_id: hop.peerId, jobs: 1, tokens: 0, block_tokens: 0 }
    total.tokens += tokens
    total.block_tokens += tokens * (hop.end - hop.start)
    this.totals.set(hop.peerId, total)
  }
}

function key (hop: ServedBlocks): string {
  return `${hop.peerId}/${hop.start}/${hop.end}`
}

/** Whether `token` owns the job (a job from before owners is anyone's). */
function isOwner (job: JobRecord, token: string | undefined): boolean {
  if (job.owner === null) return true
  if (token === undefined) return false
  return timingSafeEqual(Buffer.from(ownerHash(token), 'hex'), Buffer.from(job.owner, 'hex'))
}
