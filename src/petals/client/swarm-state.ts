// What a swarm serves, read from the DHT: for each model, how many online servers hold each block,
// and each server's span, state and announced details (health.petals.dev's view, as data).

import type { DType } from '../../inference/dtype.js'
import type { Registry, SpanRecord } from '../../p2p/registry.js'
import { parseServerInfo } from '../protocol/server-info.js'

export interface ServerView {
  peerId: string
  start: number
  end: number
  state: SpanRecord['state']
  throughput: number | null
  publicName: string | null
  cacheTokensLeft: number | null
  version: string | null
  dtype: DType | null
  /** reachable only through a relay */
  usingRelay: boolean | null
  /** when the announcement lapses unless the server refreshes it (ms since the epoch) */
  expiresAt: number
}

export interface ModelView {
  name: string
  blocks: number
  /** online servers per block */
  coverage: number[]
  /** true when every block has an online server */
  complete: boolean
  servers: ServerView[]
}

/** Reads the state of every announced model (or only `model`). */
export async function swarmState (registry: Registry, model?: string): Promise<ModelView[]> {
  let models = await registry.listModels()
  if (model !== undefined) models = models.filter(m => m.name === model)
  return await Promise.all(models.map(async ({ name, blocks }) => {
    const records = await registry.findSpans(name, blocks, ['joining', 'online', 'offline'])
    const coverage = Array.from({ length: blocks }, (_, b) => records.filter(r => r.state === 'online' && r.start <= b && b < r.end).length)
    const servers = records
      .map((r): ServerView => {
        const info = parseServerInfo(r.info)
        return {
          peerId: r.peerId,
          start: r.start,
          end: r.end,
          state: r.state,
          throughput: info.throughput ?? null,
          publicName: info.publicName ?? null,
          cacheTokensLeft: info.cacheTokensLeft ?? null,
          version: info.version ?? null,
          dtype: info.dtype ?? null,
          usingRelay: info.usingRelay ?? null,
          expiresAt: r.expiresAt
        }
      })
      .sort((a, b) => a.start - b.start || a.peerId.localeCompare(b.peerId))
    return { name, blocks, coverage, complete: coverage.every(c => c > 0), servers }
  }))
}

/** The state as a table a person reads in a terminal. */
export function formatSwarmState (models: readonly ModelView[]): string {
  if (models.length === 0) return 'no models are announced in this swarm\n'
  const lines: string[] = []
  for (const m of models) {
    const missing = m.coverage.flatMap((c, b) => (c === 0 ? [b] : []))
    lines.push(`${m.name}: ${m.blocks} blocks, ${m.servers.length} servers, ${m.complete ? 'every block served' : `no server for blocks ${missing.join(', ')}`}`)
    lines.push(`  coverage (online servers per block): ${m.coverage.join(' ')}`)
    lines.push('  span      state    throughput  cache left  name              peer')
    for (const s of m.servers) {
      lines.push(`  ${`${s.start}:${s.end}`.padEnd(9)} ${s.state.padEnd(8)} ${(s.throughput?.toFixed(1) ?? '-').padStart(10)}  ${String(s.cacheTokensLeft ?? '-').padStart(10)}  ${(s.publicName ?? '-').slice(0, 16).padEnd(16)}  ${s.peerId}`)
    }
  }
  return `${lines.join('\n')}\n`
}
