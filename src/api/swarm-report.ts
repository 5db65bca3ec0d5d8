// The swarm as the monitor shows it (health.petals.dev's /api/v1/state, in bmrt's words): every
// announced model's servers from the DHT, each one probed directly, because a record outlives a
// server that crashed by up to its expiry. A server that answers no probe is `unreachable`; one
// that announced `offline`, or whose record has gone, stays listed as `offline` for a while.
// Snapshots are taken at most once per period, however many pages poll.

import type { BmrtNode } from '../p2p/node.js'
import { Registry } from '../p2p/registry.js'
import { probeServer } from '../petals/client/probe.js'
import { shortPeerId } from '../p2p/identity.js'
import { swarmState, type ServerView } from '../petals/client/swarm-state.js'

export type ServerState = 'online' | 'joining' | 'offline' | 'unreachable'

export interface ServerRow {
  peer_id: string
  short_peer_id: string
  public_name: string | null
  state: ServerState
  start: number
  end: number
  throughput: number | null
  cache_tokens_left: number | null
  version: string | null
  dtype: string | null
  backend: string | null
  /** reachable only through a relay */
  using_relay: boolean | null
  sessions: number | null
  rtt_ms: number | null
  error: string | null
}

export interface ModelReport {
  name: string
  num_blocks: number
  state: 'healthy' | 'broken'
  coverage: number[]
  min_replication: number
  servers: ServerRow[]
}

export interface SwarmReport {
  updated_at: number
  update_period: number
  models: ModelReport[]
}

/** How long the monitor reuses a snapshot of the swarm. */
export const DEFAULT_MONITOR_PERIOD_MS = 5000
/** A probe that takes longer marks the server unreachable. */
export const DEFAULT_PROBE_TIMEOUT_MS = 3000
/** How long a server that left stays listed as offline. */
export const DEFAULT_FORGET_AFTER_MS = 10 * 60_000

export interface SwarmMonitorOptions {
  /**
   * a snapshot is reused for this long
   * @default DEFAULT_MONITOR_PERIOD_MS (5 s)
   */
  periodMs?: number
  /**
   * a probe that takes longer marks the server unreachable
   * @default DEFAULT_PROBE_TIMEOUT_MS (3 s)
   */
  probeTimeoutMs?: number
  /**
   * how long a server that left stays listed as offline
   * @default DEFAULT_FORGET_AFTER_MS (10 min)
   */
  forgetAfterMs?: number
}

export class SwarmMonitor {
  private readonly registry: Registry
  private snapshot: SwarmReport | null = null
  private taking: Promise<SwarmReport> | null = null
  /** rows of servers seen before, by model and peer, with when they were last seen */
  private readonly seen = new Map<string, { row: ServerRow, at: number }>()

  constructor (private readonly node: BmrtNode, private readonly options: SwarmMonitorOptions = {}) {
    this.registry = new Registry(node)
  }

  get periodMs (): number {
    return this.options.periodMs ?? DEFAULT_MONITOR_PERIOD_MS
  }

  /** The last snapshot taken, however old (null before the first). */
  get latest (): SwarmReport | null {
    return this.snapshot
  }

  /** The latest snapshot, taken now if the last one is older than the period. */
  async report (): Promise<SwarmReport> {
    if (this.snapshot !== null && Date.now() - this.snapshot.updated_at * 1000 < this.periodMs) return this.snapshot
    this.taking ??= this.take().finally(() => { this.taking = null })
    return await this.taking
  }

  private async take (): Promise<SwarmReport> {
    const models = await swarmState(this.registry)
    const now = Date.now()
    const reports = await Promise.all(models.map(async model => {
      const rows = await Promise.all(model.servers.map(async server => await this.probe(model.name, server)))
      for (const row of rows) this.seen.set(`${model.name}/${row.peer_id}`, { row, at: now })
      // Servers seen before whose record is gone: they left or expired.
      for (const [key, { row, at }] of this.seen) {
        if (!key.startsWith(`${model.name}/`) || rows.some(r => r.peer_id === row.peer_id)) continue
        if (now - at > (this.options.forgetAfterMs ?? DEFAULT_FORGET_AFTER_MS)) this.seen.delete(key)
        else rows.push({ ...row, state: 'offline', sessions: null, rtt_ms: null, error: null })
      }
      rows.sort((a, b) => a.start - b.start || a.peer_id.localeCompare(b.peer_id))
      const coverage = Array.from({ length: model.blocks }, (_, b) => rows.filter(r => r.state === 'online' && r.start <= b && b < r.end).length)
      const minReplication = Math.min(...coverage)
      return { name: model.name, num_blocks: model.blocks, state: minReplication > 0 ? 'healthy' : 'broken', coverage, min_replication: minReplication, servers: rows } satisfies ModelReport
    }))
    this.snapshot = { updated_at: now / 1000, update_period: this.periodMs / 1000, models: reports }
    return this.snapshot
  }

  private async probe (model: string, server: ServerView): Promise<ServerRow> {
    const row: ServerRow = {
      peer_id: server.peerId,
      short_peer_id: shortPeerId(server.peerId),
      public_name: server.publicName,
      state: server.state,
      start: server.start,
      end: server.end,
      throughput: server.throughput,
      cache_tokens_left: server.cacheTokensLeft,
      version: server.version,
      dtype: server.dtype,
      backend: null,
      using_relay: server.usingRelay,
      sessions: null,
      rtt_ms: null,
      error: null
    }
    if (server.state === 'offline') return row
    try {
      const { info, rttMs } = await probeServer(this.node, server.peerId, model, this.options.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS)
      return { ...row, backend: info.backend, sessions: info.sessions, rtt_ms: rttMs, cache_tokens_left: info.cacheTokensLeft ?? row.cache_tokens_left }
    } catch (err) {
      return { ...row, state: 'unreachable', error: (err as Error).message }
    }
  }
}
