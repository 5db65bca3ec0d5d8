// The gateway's memory across restarts: an append-only file of JSON lines, one per change of a
// job (the last line of an id wins), and the credit ledger's lines (credits.ts): work receipted by
// servers, and work disproven. Opening it compacts it: the newest `keep` ended jobs stay, older
// ones fold into a contributions line, the ledger into one line of totals, and jobs that had not
// ended come back to be run again. While the gateway runs the file is compacted again (from the board's jobs) once it has
// more than 2 × keep + 256 lines. Every line is checked against a schema: a torn last line (a
// crash mid-write) or one that is not a whole job is skipped and compacted away, never fatal. A
// lock file beside it (`<file>.lock`, holding the owner's pid) keeps a second gateway from
// sharing the file.

import { appendFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { z } from 'zod'

export type JobStatus = 'queued' | 'running' | 'done' | 'failed' | 'cancelled'

/** What one server did for the board: tokens it processed, and tokens × blocks. */
export interface Contribution {
  peer_id: string
  jobs: number
  tokens: number
  block_tokens: number
}

/** What one server earned: its signed receipts that held up, the tokens they cover, and tokens × blocks. */
export interface Credit {
  peer_id: string
  receipts: number
  tokens: number
  block_tokens: number
}

/** A job as stored and as the API shows it (snake_case, as the JSON API speaks). */
export interface JobRecord {
  id: string
  model: string
  status: JobStatus
  priority: number
  /** its contributor's credit rank when it was submitted (creditRank; 0: none) */
  credit_rank: number
  prompt: string
  params: { max_tokens: number, temperature: number, top_p: number, seed: number | null, stop: string[] }
  output: string
  finish_reason: 'stop' | 'length' | null
  error: string | null
  served_by: Array<{ peer_id: string, start: number, end: number }>
  contributions: Contribution[]
  prompt_tokens: number
  completion_tokens: number
  /** unix seconds */
  created_at: number
  started_at: number | null
  finished_at: number | null
  /** SHA-256 (hex) of the submitter's owner token; null for jobs from before owners (anyone may act on them) */
  owner: string | null
}

export function isEnded (status: JobStatus): boolean {
  return status === 'done' || status === 'failed' || status === 'cancelled'
}

/** Where jobs live unless told otherwise: the user's data directory. */
export function defaultJobsFile (): string {
  const base = process.env.XDG_DATA_HOME ?? (process.platform === 'win32' ? process.env.LOCALAPPDATA : undefined) ?? join(homedir(), '.local', 'share')
  return join(base, 'bmrt', 'jobs.jsonl')
}

type Line = { type: 'job', job: JobRecord } | { type: 'contributions', contributions: Contribution[] }
  | { type: 'credits', credits: Credit[] } | { type: 'disproven', credits: Credit[] }

const count = z.number().int().nonnegative()
const seconds = z.number().nonnegative()
const contributionSchema = z.object({ peer_id: z.string(), jobs: count, tokens: count, block_tokens: count })
const creditSchema = z.object({ peer_id: z.string(), receipts: count, tokens: count, block_tokens: count })
const jobSchema = z.object({
  id: z.string().min(1),
  model: z.string(),
  status: z.enum(['queued', 'running', 'done', 'failed', 'cancelled']),
  priority: z.number().int(),
  credit_rank: count.default(0), // absent in jobs from before credit ranks
  prompt: z.string(),
  params: z.object({ max_tokens: count, temperature: z.number(), top_p: z.number(), seed: z.number().nullable(), stop: z.array(z.string()) }),
  output: z.string(),
  finish_reason: z.enum(['stop', 'length']).nullable(),
  error: z.string().nullable(),
  served_by: z.array(z.object({ peer_id: z.string(), start: count, end: count })),
  contributions: z.array(contributionSchema),
  prompt_tokens: count,
  completion_tokens: count,
  created_at: seconds,
  started_at: seconds.nullable(),
  finished_at: seconds.nullable(),
  owner: z.string().nullable().default(null)
}) satisfies z.ZodType<JobRecord>
/** One line of the file, as it must be to be loaded. */
const lineSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('job'), job: jobSchema }),
  z.object({ type: z.literal('contributions'), contributions: z.array(contributionSchema) }),
  z.object({ type: z.literal('credits'), credits: z.array(creditSchema) }),
  z.object({ type: z.literal('disproven'), credits: z.array(creditSchema) })
])

/** Ended jobs the board keeps (in memory and in the file) when not told otherwise. */
export const DEFAULT_KEPT_JOBS = 1000
/** Lines appended past 2 × keep before the file is compacted while running. */
const COMPACTION_SLACK_LINES = 256

export class JobStore {
  /** contributions of jobs compacted away */
  private carriedContributions: Contribution[]
  /** the ledger's totals: credited minus disproven */
  private creditTotals: Credit[]
  private writing: Promise<void> = Promise.resolve()
  /** lines in the file since it was last written whole */
  private lines: number

  private constructor (readonly path: string, readonly jobs: JobRecord[], carried: Contribution[], credits: Credit[], readonly skippedLines: number, readonly keep: number) {
    this.carriedContributions = carried
    this.creditTotals = credits
    this.lines = jobs.length + (carried.length > 0 ? 1 : 0) + (credits.length > 0 ? 1 : 0) // as wholeFile writes them
  }

  /** the credit ledger's totals per server: credited minus disproven */
  get credits (): readonly Credit[] {
    return this.creditTotals
  }

  /** Appends credits earned (or, `disproven`, taken back), and adds them to the totals. */
  async addCredits (credits: readonly Credit[], disproven = false): Promise<void> {
    if (credits.length === 0) return
    this.creditTotals = addCredits(this.creditTotals, credits, disproven ? -1 : 1)
    const line = `${JSON.stringify({ type: disproven ? 'disproven' : 'credits', credits: [...credits] } satisfies Line)}\n`
    this.lines++
    await this.queue(async () => await appendFile(this.path, line))
  }

  /** contributions of jobs compacted away */
  get carried (): readonly Contribution[] {
    return this.carriedContributions
  }

  /** Lines in the file now (those written whole plus those appended since), once writes settle. */
  get lineCount (): number {
    return this.lines
  }

  /** Lines past which the file is compacted while running: 2 × keep + 256. */
  get compactionThreshold (): number {
    return 2 * this.keep + COMPACTION_SLACK_LINES
  }

  /**
   * Reads and compacts the file at `path` (created if missing), keeping the newest `keep` ended jobs.
   * @param keep ended jobs kept; @default DEFAULT_KEPT_JOBS (1000)
   */
  static async open (path: string, keep = DEFAULT_KEPT_JOBS): Promise<JobStore> {
    await mkdir(dirname(path), { recursive: true })
    await lock(path)
    try {
      return await JobStore.load(path, keep)
    } catch (err) {
      await unlock(path)
      throw err
    }
  }

  private static async load (path: string, keep: number): Promise<JobStore> {
    let text = ''
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    const latest = new Map<string, JobRecord>()
    let carried: Contribution[] = []
    let credits: Credit[] = []
    let skipped = 0
    for (const raw of text.split('\n')) {
      if (raw.trim() === '') continue
      const line = parseLine(raw)
      if (line === null) skipped++
      else if (line.type === 'contributions') carried = addContributions(carried, line.contributions)
      else if (line.type === 'credits') credits = addCredits(credits, line.credits, 1)
      else if (line.type === 'disproven') credits = addCredits(credits, line.credits, -1)
      else latest.set(line.job.id, line.job)
    }
    const jobs = [...latest.values()].sort((a, b) => a.created_at - b.created_at)
    const ended = jobs.filter(j => isEnded(j.status))
    const dropped = ended.slice(0, Math.max(0, ended.length - keep))
    for (const job of dropped) carried = addContributions(carried, job.contributions)
    const kept = jobs.filter(j => !dropped.includes(j))
    // A job that was queued or running when the gateway stopped waits in the queue again.
    for (const job of kept) {
      if (!isEnded(job.status)) Object.assign(job, { status: 'queued', output: '', started_at: null, served_by: [], contributions: [], completion_tokens: 0 })
    }
    await writeWhole(path, wholeFile(kept, carried, credits))
    return new JobStore(path, kept, carried, credits, skipped, keep)
  }

  /** Appends the job's current state. Writes happen one after another, in call order. */
  async save (job: JobRecord): Promise<void> {
    const line = `${JSON.stringify({ type: 'job', job } satisfies Line)}\n`
    this.lines++
    await this.queue(async () => await appendFile(this.path, line))
  }

  /** Folds the contributions of jobs the board forgets into the carried totals (written at the next compaction). */
  carry (contributions: readonly Contribution[]): void {
    this.carriedContributions = addContributions(this.carriedContributions, contributions)
  }

  /**
   * Writes the file whole from `jobs` (every job the board still holds) and the carried totals, if
   * it has grown past the compaction threshold; in order with the saves.
   */
  async compactIfLong (jobs: readonly JobRecord[]): Promise<void> {
    if (this.lines <= this.compactionThreshold) return
    const text = wholeFile(jobs, this.carriedContributions, this.creditTotals) // the state as of now, not as of the write
    this.lines = jobs.length + (this.carriedContributions.length > 0 ? 1 : 0) + (this.creditTotals.length > 0 ? 1 : 0)
    await this.queue(async () => await writeWhole(this.path, text))
  }

  private async queue (write: () => Promise<void>): Promise<void> {
    const next = this.writing.catch(() => {}).then(write)
    this.writing = next
    await next
  }

  /** Resolves when every save so far is on disk. */
  async flush (): Promise<void> {
    await this.writing.catch(() => {})
  }

  /** Flushes and lets another gateway open the file. */
  async close (): Promise<void> {
    await this.flush()
    await unlock(this.path)
  }
}

/** Takes `<path>.lock`, or says which live process holds it; a dead holder's lock is taken over. */
async function lock (path: string): Promise<void> {
  const lockPath = `${path}.lock`
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(lockPath, String(process.pid), { flag: 'wx' })
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err
    }
    const holder = Number(await readFile(lockPath, 'utf8').catch(() => ''))
    if (Number.isSafeInteger(holder) && holder > 0 && isAlive(holder)) {
      throw new Error(`${path} is in use by another gateway (process ${holder}); give this one its own --jobs-file`)
    }
    await rm(lockPath, { force: true }) // left by a process that is gone
  }
}

async function unlock (path: string): Promise<void> {
  await rm(`${path}.lock`, { force: true })
}

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' // alive, owned by someone else
  }
}

/** The file's text for these jobs, carried contributions and credit totals. */
function wholeFile (jobs: readonly JobRecord[], carried: readonly Contribution[], credits: readonly Credit[]): string {
  const lines: Line[] = [
    ...(carried.length > 0 ? [{ type: 'contributions' as const, contributions: [...carried] }] : []),
    ...(credits.length > 0 ? [{ type: 'credits' as const, credits: [...credits] }] : []),
    ...jobs.map(job => ({ type: 'job' as const, job }))
  ]
  return lines.map(l => `${JSON.stringify(l)}\n`).join('')
}

async function writeWhole (path: string, text: string): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`
  await writeFile(temporary, text)
  await rename(temporary, path) // atomic: a crash leaves the old file or the new one, never half of one
}

/** A line that is whole and fits the schema, else null (the job view relies on every field). */
function parseLine (raw: string): Line | null {
  let json: unknown
  try {
    json = JSON.parse(raw)
  } catch {
    return null
  }
  const parsed = lineSchema.safeParse(json)
  return parsed.success ? parsed.data : null
}

/** Sums contributions per server. */
export function addContributions (...lists: ReadonlyArray<readonly Contribution[]>): Contribution[] {
  const totals = new Map<string, Contribution>()
  for (const list of lists) {
    for (const c of list) {
      const total = totals.get(c.peer_id) ?? { peer_id: c.peer_id, jobs: 0, tokens: 0, block_tokens: 0 }
      total.jobs += c.jobs
      total.tokens += c.tokens
      total.block_tokens += c.block_tokens
      totals.set(c.peer_id, total)
    }
  }
  return [...totals.values()]
}

/** Adds (sign 1) or takes away (sign -1) credits per server; a total never goes below 0. */
export function addCredits (totals: readonly Credit[], credits: readonly Credit[], sign: 1 | -1): Credit[] {
  const byPeer = new Map(totals.map(c => [c.peer_id, { ...c }]))
  for (const c of credits) {
    const total = byPeer.get(c.peer_id) ?? { peer_id: c.peer_id, receipts: 0, tokens: 0, block_tokens: 0 }
    total.receipts = Math.max(0, total.receipts + sign * c.receipts)
    total.tokens = Math.max(0, total.tokens + sign * c.tokens)
    total.block_tokens = Math.max(0, total.block_tokens + sign * c.block_tokens)
    byPeer.set(c.peer_id, total)
  }
  return [...byPeer.values()]
}
