// The summary of a chaos run, as data (the test asserts on it, --json prints it) and as text.

import { median, percentile } from '../../util/stats.js'
import type { FleetNode } from './fleet.js'
import type { GenerationRecord, Recorder } from './record.js'

export interface ChaosSettings {
  seed: number
  nodes: number
  clients: number
  layers: number
  blocksPerNode: number
  intervalMs: number
  newTokens: number
  prompts: number
  /** prompts passed over for near-ties in their reference */
  promptsRejected: number
  updatePeriodS: number
  expirationS: number
  balanceCheckPeriodS: number
  connectTimeoutMs: number
  stepTimeoutMs: number
  backend: string
  bucketMs: number
  /** hostile servers among `nodes` */
  hostile: number
  /** the share of steps the clients spot-checked (null: the SDK's default) */
  verifyRate: number | null
}

/** A hostile server: how it attacked, and which clients found it out, how and when. */
export interface HostileReport {
  name: string
  peerId: string
  attack: string
  /** clients whose own spot check convicted it, with the first time (s) */
  bySpotCheck: Array<{ client: number, atS: number }>
  /** clients that banned it on evidence another client published, with the first time (s) */
  byEvidence: Array<{ client: number, atS: number }>
  /** clients that had it banned when the clients were done */
  bannedAtEnd: number
}

export interface NodeReport {
  name: string
  peerId: string
  starts: number
  moves: number
  crashes: string[]
  /** state and span at the end */
  state: string
  span: string | null
  rssStartMiB: number | null
  rssEndMiB: number | null
  sessionsAtEnd: number | null
}

export interface Bucket {
  fromS: number
  tokens: number
  tokensPerSecond: number
  /** generations that ended in the bucket: equal to the reference, and all others */
  equal: number
  notEqual: number
  failovers: number
  actions: number
  /** from the DHT sample taken in the bucket, if any */
  dht: { online: number, seen: number, stale: number, missing: number } | null
}

export interface ChaosReport {
  settings: ChaosSettings
  generations: { total: number, equal: number, wrong: number, failed: number, cutOff: number, notEqual: GenerationRecord[] }
  tokens: { total: number, seconds: number, perSecond: number }
  failovers: number
  /** generations held up by failures: last token before to first token after */
  stalls: { count: number, medianS: number, p90S: number, maxS: number, detectMedianS: number }
  /** client waits for servers (no route yet, or backing off before retrying) */
  waits: number
  actions: { kill: number, stop: number, restart: number, none: number, moves: number, crashes: number }
  /** periods in which some block had no online server, by the servers' own output */
  uncovered: { periods: number, seconds: number }
  dht: { samples: number, expected: number, seen: number, matched: number, stale: number, wrongSpan: number, missing: number, oldestStaleS: number, lookupMedianS: number }
  timeline: Bucket[]
  settled: { ok: boolean, seconds: number, problems: string[] }
  nodes: NodeReport[]
  hostile: HostileReport[]
  /** the clients' spot checks by outcome */
  checks: Record<string, number>
  bench: { rssStartMiB: number, rssEndMiB: number }
}

const MiB = 2 ** 20
const toMiB = (bytes: number | null): number | null => (bytes === null ? null : Math.round(bytes / MiB))

export function buildReport (run: {
  settings: ChaosSettings
  recorder: Recorder
  clientsDoneMs: number
  settled: { ms: number, problems: string[] }
  bootstrap: FleetNode
  fleet: readonly FleetNode[]
  /** for each hostile server (peer id), how many clients had it banned when they were done */
  bannedAtEnd: ReadonlyMap<string, number>
  benchRss: { start: number, end: number }
}): ChaosReport {
  const { recorder: r, settings } = run
  const count = (kind: string): number => r.actions.filter(a => a.kind === kind).length
  const generations = r.generations
  const outcomes = (o: GenerationRecord['outcome']): number => generations.filter(g => g.outcome === o).length
  const stallS = r.stalls.map(s => s.ms / 1000)
  const samples = r.samples
  const sum = (pick: (s: typeof samples[number]) => number): number => samples.reduce((n, s) => n + pick(s), 0)
  const bucketMs = settings.bucketMs
  const timeline: Bucket[] = []
  for (let from = 0; from < run.clientsDoneMs; from += bucketMs) {
    const within = (ms: number): boolean => ms >= from && ms < from + bucketMs
    const ended = generations.filter(g => within(g.endMs))
    const sample = samples.find(s => within(s.atMs))
    const tokens = r.tokenTimes.filter(within).length
    timeline.push({
      fromS: from / 1000,
      tokens,
      tokensPerSecond: tokens / (Math.min(bucketMs, run.clientsDoneMs - from) / 1000),
      equal: ended.filter(g => g.outcome === 'equal').length,
      notEqual: ended.filter(g => g.outcome !== 'equal').length,
      failovers: r.failoverTimes.filter(within).length,
      actions: r.actions.filter(a => within(a.atMs) && a.kind !== 'none').length,
      dht: sample === undefined ? null : { online: sample.expected, seen: sample.seen, stale: sample.stale, missing: sample.missing }
    })
  }
  const node = (n: FleetNode): NodeReport => ({
    name: n.name,
    peerId: n.peerId,
    starts: n.starts,
    moves: n.moves,
    crashes: n.crashes,
    state: n.state,
    span: n.span === null ? null : `${n.span.start}:${n.span.end}`,
    rssStartMiB: toMiB(n.rssAtStart),
    rssEndMiB: toMiB(n.rssAtEnd),
    sessionsAtEnd: n.sessionsAtEnd
  })
  return {
    settings,
    generations: {
      total: generations.length,
      equal: outcomes('equal'),
      wrong: outcomes('wrong'),
      failed: outcomes('failed'),
      cutOff: outcomes('cut off'),
      notEqual: generations.filter(g => g.outcome !== 'equal')
    },
    tokens: { total: r.tokenTimes.length, seconds: run.clientsDoneMs / 1000, perSecond: r.tokenTimes.length / (run.clientsDoneMs / 1000) },
    failovers: r.failoverTimes.length,
    stalls: {
      count: stallS.length,
      medianS: stallS.length > 0 ? median(stallS) : 0,
      p90S: stallS.length > 0 ? percentile(stallS, 0.9) : 0,
      maxS: stallS.length > 0 ? Math.max(...stallS) : 0,
      detectMedianS: stallS.length > 0 ? median(r.stalls.map(s => s.detectMs / 1000)) : 0
    },
    waits: r.waits,
    actions: {
      kill: count('kill'),
      stop: count('stop'),
      restart: count('restart'),
      none: count('none'),
      moves: run.fleet.reduce((n, f) => n + f.moves, 0),
      crashes: run.fleet.reduce((n, f) => n + f.crashes.length, 0)
    },
    uncovered: { periods: r.uncovered.length, seconds: r.uncovered.reduce((s, p) => s + ((p.toMs ?? r.now()) - p.fromMs), 0) / 1000 },
    dht: {
      samples: samples.length,
      expected: sum(s => s.expected),
      seen: sum(s => s.seen),
      matched: sum(s => s.matched),
      stale: sum(s => s.stale),
      wrongSpan: sum(s => s.wrongSpan),
      missing: sum(s => s.missing),
      oldestStaleS: Math.max(0, ...samples.map(s => s.oldestStaleMs)) / 1000,
      lookupMedianS: samples.length > 0 ? median(samples.map(s => s.tookMs)) / 1000 : 0
    },
    timeline,
    settled: { ok: run.settled.problems.length === 0, seconds: run.settled.ms / 1000, problems: run.settled.problems },
    nodes: [node(run.bootstrap), ...run.fleet.map(node)],
    hostile: run.fleet.filter(n => n.attack !== null).map(n => {
      const first = (by: 'spot check' | 'evidence'): Array<{ client: number, atS: number }> => {
        const found = new Map<number, number>()
        for (const c of r.convictions) if (c.peerId === n.peerId && c.by === by && !found.has(c.client)) found.set(c.client, c.atMs / 1000)
        return [...found].map(([client, atS]) => ({ client, atS }))
      }
      return { name: n.name, peerId: n.peerId, attack: n.attack!.join(' '), bySpotCheck: first('spot check'), byEvidence: first('evidence'), bannedAtEnd: run.bannedAtEnd.get(n.peerId) ?? 0 }
    }),
    checks: { ...r.checks },
    bench: { rssStartMiB: toMiB(run.benchRss.start)!, rssEndMiB: toMiB(run.benchRss.end)! }
  }
}

/** The report as a person reads it in a terminal. */
export function formatReport (report: ChaosReport): string {
  const { settings: s, generations: g, stalls, actions: a, dht } = report
  const lines: string[] = []
  const pct = (n: number, of: number): string => (of === 0 ? '-' : `${(100 * n / of).toFixed(1)}%`)
  lines.push(`timeline (${s.bucketMs / 1000} s buckets; online = servers online when the DHT was sampled; DHT = online records seen, of them stale, and online servers without one)`)
  lines.push('      t  tokens/s  generations ok/not  failovers  actions  online  DHT seen (stale, missing)')
  for (const b of report.timeline) {
    const d = b.dht === null ? '' : `${String(b.dht.online).padStart(6)}  ${String(b.dht.seen).padStart(8)} (${b.dht.stale}, ${b.dht.missing})`
    lines.push(`${`${b.fromS.toFixed(0)} s`.padStart(7)}  ${b.tokensPerSecond.toFixed(1).padStart(8)}  ${`${b.equal}/${b.notEqual}`.padStart(18)}  ${String(b.failovers).padStart(9)}  ${String(b.actions).padStart(7)}  ${d}`)
  }
  lines.push('')
  lines.push(`generations: ${g.total} (${g.equal} equal to the reference, ${g.wrong} wrong, ${g.failed} failed, ${g.cutOff} cut off at the end)`)
  for (const bad of g.notEqual) lines.push(`  c${bad.client} prompt ${bad.prompt} at ${(bad.startMs / 1000).toFixed(1)} s: ${bad.outcome}: ${bad.detail ?? ''}`)
  lines.push(`greedy outputs equal to the reference: ${g.equal} of ${g.total - g.cutOff} finished (${pct(g.equal, g.total - g.cutOff)})`)
  lines.push(`tokens: ${report.tokens.total} in ${report.tokens.seconds.toFixed(0)} s, ${report.tokens.perSecond.toFixed(1)} tokens/s (${s.clients} clients together)`)
  lines.push(`failovers: ${report.failovers}; generations held up by failures: ${stalls.count}; client waits for servers: ${report.waits}`)
  if (stalls.count > 0) {
    lines.push(`time to re-route (last token before a failure -> first token after): median ${stalls.medianS.toFixed(2)} s, p90 ${stalls.p90S.toFixed(2)} s, max ${stalls.maxS.toFixed(2)} s; of which detecting the failure: median ${stalls.detectMedianS.toFixed(2)} s`)
  }
  lines.push(`chaos: ${a.kill} kills (SIGKILL), ${a.stop} hangs (SIGSTOP, then SIGCONT), ${a.restart} restarts, ${a.none} intervals with no action possible; ${a.moves} moves by rebalancing; ${a.crashes} servers exited by themselves`)
  lines.push(`blocks without an online server: ${report.uncovered.periods === 0 ? 'never' : `${report.uncovered.periods} times, ${report.uncovered.seconds.toFixed(1)} s in all`}`)
  lines.push(`DHT records (${dht.samples} samples, lookup median ${dht.lookupMedianS.toFixed(2)} s): online records seen ${dht.seen} vs online servers ${dht.expected}; ` +
    `${dht.matched} matched, ${dht.stale} stale, ${dht.wrongSpan} with an old span, ${dht.missing} servers without a record; a dead or hung server's record outlived it by up to ${dht.oldestStaleS.toFixed(1)} s (records expire after ${s.expirationS} s)`)
  if (Object.keys(report.checks).length > 0) lines.push(`spot checks: ${Object.entries(report.checks).map(([outcome, n]) => `${n} ${outcome}`).join(', ')}`)
  for (const h of report.hostile) {
    const who = (found: HostileReport['bySpotCheck']): string => found.length === 0 ? 'none' : found.map(f => `c${f.client} at ${f.atS.toFixed(1)} s`).join(', ')
    lines.push(`hostile ${h.name} (${h.attack}): convicted by the spot checks of ${who(h.bySpotCheck)}; banned on published evidence by ${who(h.byEvidence)}; banned by ${h.bannedAtEnd} of ${s.clients} clients at the end`)
  }
  lines.push(`after the chaos: ${report.settled.ok ? `settled in ${report.settled.seconds.toFixed(1)} s (every server online with its record, every block covered, no session open)` : `NOT settled within ${report.settled.seconds.toFixed(0)} s: ${report.settled.problems.join('; ')}`}`)
  lines.push('')
  lines.push('memory (VmRSS, MiB, at its last start -> at the end) and sessions open at the end')
  lines.push('  node       starts  moves  span    rss start -> end  sessions')
  for (const n of report.nodes) {
    lines.push(`  ${(report.hostile.some(h => h.peerId === n.peerId) ? `${n.name}*` : n.name).padEnd(10)} ${String(n.starts).padStart(6)}  ${String(n.moves).padStart(5)}  ${(n.span ?? '-').padEnd(6)}  ${String(n.rssStartMiB ?? '-').padStart(9)} -> ${String(n.rssEndMiB ?? '-').padEnd(4)}  ${n.sessionsAtEnd ?? '-'}`)
    for (const crash of n.crashes) lines.push(`    crashed: ${crash.split('\n')[0]}`)
  }
  lines.push(`  bench (clients) ${String(report.bench.rssStartMiB).padStart(12)} -> ${report.bench.rssEndMiB}${report.hostile.length > 0 ? '   (* hostile)' : ''}`)
  return `${lines.join('\n')}\n`
}
