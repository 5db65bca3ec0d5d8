// Servers that failed, banned from routes for a doubling time (Petals' hivemind Blacklist), and the
// wait before each retry (Petals' get_retry_delay).

import { missingBlocks, type ServerSpan } from './routing.js'

/** A failed server's first ban (Petals' ban_timeout). */
export const DEFAULT_BAN_TIMEOUT_MS = 15_000
/**
 * The first ban of a server that failed before it ever answered this client: long, because
 * identities cost nothing, and a swarm of them that refuse or stall every session (issue 20) would
 * otherwise be back in every route 15 s later. Longer than a record lives (180 s), so a refuser is
 * tried once per record it signs, at most once per 10 min.
 */
export const DEFAULT_UNPROVEN_BAN_MS = 10 * 60_000
/** The longest ban, however often a server failed. */
export const DEFAULT_MAX_BAN_MS = 15 * 60_000
/** The longest wait before a retry (Petals' max_retry_delay). */
export const MAX_RETRY_DELAY_MS = 60_000

export interface BanListOptions {
  /**
   * the first ban of a server that failed; each further failure in a row doubles it
   * @default DEFAULT_BAN_TIMEOUT_MS (15 s)
   */
  banTimeoutMs?: number
  /**
   * the first ban of a server that never answered this client
   * @default DEFAULT_UNPROVEN_BAN_MS (10 min)
   */
  unprovenBanMs?: number
  /**
   * the longest ban
   * @default DEFAULT_MAX_BAN_MS (15 min)
   */
  maxBanMs?: number
  /**
   * the clock (tests pass their own)
   * @default Date.now
   */
  now?: () => number
}

/**
 * Servers that failed requests, banned from routes for banTimeout × 2^(consecutive failures − 1)
 * (Petals: 15 s, doubling, via hivemind's Blacklist), capped at maxBanMs. A server that never
 * answered this client is banned for unprovenBanMs at its first failure (not in Petals; see
 * PATCHES.md, "Bans of servers that never answered").
 */
export class BanList {
  private readonly banTimeoutMs: number
  private readonly unprovenBanMs: number
  private readonly maxBanMs: number
  private readonly now: () => number
  private readonly peers = new Map<string, { failures: number, until: number }>()
  /** servers that answered at least once */
  private readonly proven = new Set<string>()
  /** servers found computing wrong, and until when: never taken back (filter) */
  private readonly convicted = new Map<string, number>()

  constructor (options: BanListOptions = {}) {
    this.banTimeoutMs = options.banTimeoutMs ?? DEFAULT_BAN_TIMEOUT_MS
    this.unprovenBanMs = options.unprovenBanMs ?? DEFAULT_UNPROVEN_BAN_MS
    this.maxBanMs = options.maxBanMs ?? DEFAULT_MAX_BAN_MS
    this.now = options.now ?? Date.now
  }

  /** Records a failure and bans the peer; returns the ban's length in ms. */
  fail (peerId: string): number {
    const failures = (this.peers.get(peerId)?.failures ?? 0) + 1
    const first = this.proven.has(peerId) ? this.banTimeoutMs : Math.max(this.banTimeoutMs, this.unprovenBanMs)
    const banMs = Math.min(first * 2 ** (failures - 1), Math.max(this.maxBanMs, first))
    this.peers.set(peerId, { failures, until: Math.max(this.bannedUntil(peerId), this.now() + banMs) }) // never shortens a ban
    return banMs
  }

  /**
   * Bans a server found computing wrong (spot-check.ts, evidence-exchange.ts) for `ms`, or longer
   * if it already is. Unlike a failed server, it is not taken back where a block would have no
   * server (filter): its answers would be as wrong there, so the client waits for another instead.
   */
  convict (peerId: string, ms: number): void {
    const failures = (this.peers.get(peerId)?.failures ?? 0) + 1
    const until = Math.max(this.bannedUntil(peerId), this.now() + ms)
    this.peers.set(peerId, { failures, until })
    this.convicted.set(peerId, until)
  }

  /** Whether the peer was found computing wrong and its ban still runs. */
  isConvicted (peerId: string): boolean {
    return (this.convicted.get(peerId) ?? 0) > this.now()
  }

  /**
   * Clears the peer's failure streak, so its next failure bans it for banTimeout again. A ban in
   * force runs out on its own, as in Petals: one success while banned does not prove it healthy.
   */
  succeed (peerId: string): void {
    this.proven.add(peerId)
    const entry = this.peers.get(peerId)
    if (entry === undefined) return
    if (entry.until > this.now()) entry.failures = 0
    else this.peers.delete(peerId)
  }

  isBanned (peerId: string): boolean {
    const entry = this.peers.get(peerId)
    return entry !== undefined && entry.until > this.now()
  }

  /**
   * The spans minus banned peers', except where a block of [start, end) would have no server
   * (Petals: "if we blacklisted all servers, the error may actually be client-caused", so the
   * blacklist is ignored for that block). There the banned server whose ban ends first is taken
   * back, the one that failed least recently or least often; Petals takes every one back, and a
   * dead server whose record has not expired yet could then be chosen again and again. A convicted
   * server is never taken back: the block stays missing (in the chaos bench with hostile servers,
   * taking one back, where honest servers had moved away, delivered its wrong tokens unchecked).
   */
  filter (spans: readonly ServerSpan[], start: number, end: number): ServerSpan[] {
    const holds = (span: ServerSpan, block: number): boolean => span.start <= block && block < span.end
    const kept = spans.filter(s => !this.isBanned(s.peerId))
    for (const block of missingBlocks(kept, start, end)) {
      if (kept.some(s => holds(s, block))) continue // taken back for an earlier block
      const [first] = spans.filter(s => holds(s, block) && !this.isConvicted(s.peerId)).sort((a, b) => this.bannedUntil(a.peerId) - this.bannedUntil(b.peerId))
      if (first !== undefined) kept.push(first)
    }
    return spans.filter(s => kept.includes(s))
  }

  private bannedUntil (peerId: string): number {
    return this.peers.get(peerId)?.until ?? 0
  }
}

/** Wait before retry `attempt` (0-based), as Petals' get_retry_delay: 0, then 1 s doubling to 60 s. */
export function retryDelayMs (attempt: number): number {
  if (!(attempt > 0)) return 0
  return Math.min(1000 * 2 ** (attempt - 1), MAX_RETRY_DELAY_MS)
}
