// The session bookkeeping a backend keeps on the JS side (the JS reference, and the torch backend
// whose worker only executes): session ids, the per-block cache budget in Petals' units, and the
// checks a step or a batch must pass before any session changes. The native addon keeps the same
// rules in C++ (addon/src/core/span.cc), in the same words.

import { sessionBlocks, type BlockRange, type SpanStep } from './backend.js'
import { CacheFullError } from './errors.js'

/** What the table knows of every session; backends extend it with their caches. */
export interface TableSession {
  maxLength: number
  /** tokens in its cache */
  length: number
  /** absolute blocks it runs, [start, end) */
  start: number
  end: number
  /** a step is running */
  busy: boolean
}

/** One checked step of a batch. */
export interface CheckedStep<S> {
  id: number
  session: S
  hidden: Float32Array
  /** new tokens */
  n: number
  /** where they go */
  start: number
}

/** Throws unless `maxCacheTokens` (tokens per block, 0: no limit) is a non-negative integer. */
export function checkCacheTokens (maxCacheTokens: number): number {
  if (!Number.isSafeInteger(maxCacheTokens) || maxCacheTokens < 0) throw new Error(`maxCacheTokens must be a non-negative integer, got ${maxCacheTokens}`)
  return maxCacheTokens
}

export class SessionTable<S extends TableSession> {
  private readonly sessions = new Map<number, S>()
  private nextId = 1
  /** block-tokens the open sessions reserve (maxLength × blocks, summed) */
  private reserved = 0

  /**
   * @param span the blocks the backend holds
   * @param maxCacheTokens tokens per block all sessions may reserve together (0: no limit)
   */
  constructor (private readonly span: BlockRange, private readonly hiddenSize: number, private readonly maxCacheTokens: number) {}

  get size (): number {
    return this.sessions.size
  }

  /**
   * Charges a session of `maxLength` tokens over `blocks` (default: the span) to the budget and
   * registers what `make` builds for it; throws a CacheFullError when it does not fit.
   */
  open (maxLength: number, blocks: BlockRange | undefined, make: (session: TableSession, id: number) => S): number {
    if (!Number.isSafeInteger(maxLength) || maxLength <= 0) throw new Error(`session max length must be a positive integer, got ${maxLength}`)
    const { start, end } = sessionBlocks(this.span, blocks)
    const count = end - start
    // Petals' accounting (the same words as the addon's): maxCacheTokens per block, and a session
    // pays for the blocks it uses.
    const blocksHeld = this.span.end - this.span.start
    const budget = this.maxCacheTokens * blocksHeld
    if (this.maxCacheTokens > 0 && this.reserved + maxLength * count > budget) {
      throw new CacheFullError(`attention cache full: ${this.reserved} of ${budget} tokens reserved (${this.maxCacheTokens} per block x ` +
        `${blocksHeld} blocks); a session of ${maxLength} tokens over ${count} blocks needs ${maxLength * count}`)
    }
    const id = this.nextId++
    this.sessions.set(id, make({ maxLength, length: 0, start, end, busy: false }, id))
    this.reserved += maxLength * count
    return id
  }

  get (id: number): S {
    const s = this.sessions.get(id)
    if (s === undefined) throw new Error(`unknown or closed session ${id}`)
    return s
  }

  has (id: number): boolean {
    return this.sessions.has(id)
  }

  /** Frees a session's share of the budget; returns it, or undefined when it was not open. */
  close (id: number): S | undefined {
    const s = this.sessions.get(id)
    if (s === undefined) return undefined
    this.reserved -= s.maxLength * (s.end - s.start)
    this.sessions.delete(id)
    return s
  }

  clear (): void {
    this.sessions.clear()
    this.reserved = 0
  }

  /** BlockSpan.cacheUsage: reserved in tokens of a whole-span session, limit per block. */
  usage (): { sessions: number, reserved: number, limit: number } {
    return { sessions: this.sessions.size, reserved: this.reserved / (this.span.end - this.span.start), limit: this.maxCacheTokens }
  }

  /**
   * Checks a batch without touching any session: every step (its session, shape, position, length,
   * finite values), no session twice, the same blocks for all, none already running a step.
   */
  checkBatch (steps: SpanStep[]): Array<CheckedStep<S>> {
    if (steps.length === 0) throw new Error('a forward needs at least one step')
    const checked = steps.map(step => this.check(step))
    const first = checked[0].session
    checked.forEach(({ id, session }, i) => {
      if (checked.findIndex(c => c.id === id) !== i) throw new Error(`session ${id} appears twice in one batch`)
      if (session.start !== first.start || session.end !== first.end) {
        throw new Error(`all sessions in one batch must run the same blocks: session ${id} runs ${session.start}:${session.end}, ` +
          `session ${checked[0].id} runs ${first.start}:${first.end}`)
      }
      if (session.busy) throw new Error(`session ${id} is already running a step`)
    })
    return checked
  }

  /** Runs `work` with the batch's sessions marked busy. */
  async running<T> (checked: Array<CheckedStep<S>>, work: () => Promise<T>): Promise<T> {
    for (const { session } of checked) session.busy = true
    try {
      return await work()
    } finally {
      for (const { session } of checked) session.busy = false
    }
  }

  private check ({ session: id, hidden, position }: SpanStep): CheckedStep<S> {
    const session = this.get(id)
    const h = this.hiddenSize
    if (hidden.length === 0 || hidden.length % h !== 0) {
      throw new Error(`hidden states must be [tokens, ${h}] floats, got ${hidden.length} values`)
    }
    const n = hidden.length / h
    const start = position ?? session.length
    if (!Number.isInteger(start) || start < 0 || start > session.length) {
      throw new Error(`position ${start} is outside the session's ${session.length} cached tokens`)
    }
    if (start + n > session.maxLength) {
      throw new Error(`session holds at most ${session.maxLength} tokens; ${start} cached + ${n} new would exceed it`)
    }
    if (!hidden.every(Number.isFinite)) throw new Error('hidden states contain NaN or infinite values')
    return { id, session, hidden, n, start }
  }
}
