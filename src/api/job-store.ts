// The job board's memory across restarts: an append-only file of JSON lines, one per change of a
// job (the last line of an id wins). Opening it compacts it: the newest `keep` ended jobs stay,
// older ones fold into a contributions line, and jobs that had not ended come back to be run
// again. A torn last line (a crash mid-write) is skipped, never fatal. A lock file beside it
// (`<file>.lock`, holding the owner's pid) keeps a second gateway from sharing the file.

import { appendFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'

export type JobStatus = 'queued' | 'running' | 'done' | 'failed' | 'cancelled'

/** What one server did for the board: tokens it processed, and tokens × blocks. */
export interface Contribution {
  peer_id: string
  jobs: number
  tokens: number
  block_tokens: number
}

/** A job as stored and as the API shows it (snake_case, as the JSON API speaks). */
export interface JobRecord {
  id: string
  model: string
  status: JobStatus
  priority: number
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

export class JobStore {
  /** contributions of jobs compacted away */
  readonly carried: Contribution[]
  private writing: Promise<void> = Promise.resolve()

  private constructor (readonly path: string, readonly jobs: JobRecord[], carried: Contribution[], readonly skippedLines: number) {
    this.carried = carried
  }

  /** Reads and compacts the file at `path` (created if missing), keeping the newest `keep` ended jobs. */
  static async open (path: string, keep = 1000): Promise<JobStore> {
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
    let skipped = 0
    for (const raw of text.split('\n')) {
      if (raw.trim() === '') continue
      const line = parseLine(raw)
      if (line === null) skipped++
      else if (line.type === 'contributions') carried = addContributions(carried, line.contributions)
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
    const lines: Line[] = [...(carried.length > 0 ? [{ type: 'contributions' as const, contributions: carried }] : []), ...kept.map(job => ({ type: 'job' as const, job }))]
    const temporary = `${path}.${process.pid}.tmp`
    await writeFile(temporary, lines.map(l => `${JSON.stringify(l)}\n`).join(''))
    await rename(temporary, path) // atomic: a crash leaves the old file or the new one, never half of one
    return new JobStore(path, kept, carried, skipped)
  }

  /** Appends the job's current state. Writes happen one after another, in call order. */
  async save (job: JobRecord): Promise<void> {
    const line = `${JSON.stringify({ type: 'job', job } satisfies Line)}\n`
    const write = this.writing.catch(() => {}).then(async () => await appendFile(this.path, line))
    this.writing = write
    await write
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

function parseLine (raw: string): Line | null {
  try {
    const line = JSON.parse(raw)
    if (line?.type === 'contributions' && Array.isArray(line.contributions)) return line
    if (line?.type === 'job' && typeof line.job?.id === 'string' && typeof line.job.created_at === 'number') return line
  } catch {}
  return null
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
