// One chaos run, shared by bench/chaos.ts and test/chaos.test.ts. A random model of Llama-2-70B's
// layout at a tiny width (64 heads, 8 KV heads, hidden 128; 80 blocks unless told otherwise) is
// served by bmrt-node processes that choose their spans with --num-blocks; clients generate greedy
// continuations all along and check them against references computed here; every interval a
// seeded schedule kills a server (SIGKILL), hangs one (SIGSTOP, resumed later) or starts a killed
// one again. When the chaos is over, every server is resumed or started again, the clients finish
// the generation under way, and the run waits for the swarm to settle: every server's record in
// the DHT with its span, every block covered, no session left open on any server.
//
// Everything listens on 127.0.0.1. Every process the run started is killed when it ends, however
// it ends (fleet.ts's killEveryNode covers an exit that skips the finally).

import { rmSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { loadAddon } from '../../inference/native-backend.js'
import { seededRandom } from '../../inference/sampling.js'
import { makeTestModel } from '../../inference/test-model.js'
import { createNode, joinSwarm, type BmrtNode } from '../../p2p/node.js'
import { DEFAULT_UPDATE_PERIOD_MS, Registry, TTL_UPDATE_PERIODS } from '../../p2p/registry.js'
import { DEFAULT_BALANCE_CHECK_PERIOD_MS } from '../../petals/server/server.js'
import { shortPeerId } from '../../p2p/identity.js'
import { probeServer } from '../../petals/client/probe.js'
import { swarmState } from '../../petals/client/swarm-state.js'
import { BUNDLED_MODEL, waitFor } from '../processes.js'
import { ChaosClient } from './clients.js'
import { FleetNode, makeFleet } from './fleet.js'
import { Recorder, type DhtSample } from './record.js'
import { referencePrompts } from './reference.js'
import { buildReport, type ChaosReport } from './report.js'
import { coverage, nextAction, type Action, type NodeView } from './schedule.js'

export const MODEL_NAME = 'chaos70b'

export interface ChaosOptions {
  /** block servers (default 14) */
  nodes?: number
  /** clients generating at the same time (default 4) */
  clients?: number
  /** seeds the chaos schedule (default: a random seed, reported) */
  seed?: number
  /** how long the chaos lasts (default 10 minutes), unless `actions` is given */
  durationMs?: number
  /** end the chaos after this many intervals instead (each does one action when one is possible) */
  actions?: number
  /** between chaos actions (default 5 s) */
  intervalMs?: number
  /**
   * servers that compute wrong (hostile-node.ts; the first adds noise and claims ten times its
   * speed, the second skips its layers, a third answers zeros); never killed or hung (default 0)
   */
  hostile?: number
  /**
   * the share of steps clients spot-check (default: 1 with hostile servers, else the SDK's 0.05);
   * at 1 the schedule leaves two honest servers on a block where it can (a check needs a second)
   */
  verifyRate?: number
  /** blocks of the model (default 80, Llama-2-70B's) */
  layers?: number
  /** honest servers per block the fleet aims at: each serves ceil(replication x layers / honest nodes) blocks (default 3) */
  replication?: number
  /** tokens each generation produces (default 32) */
  newTokens?: number
  /** distinct prompts, taken in turn by the clients (default 8) */
  prompts?: number
  /**
   * bmrt-node --update-period, seconds (default 60, bmrt's); records expire after 3 periods. Every
   * refresh is DHT traffic, and JS libp2p spends milliseconds of CPU per request: 14 idle servers
   * take about 40 s of CPU a minute between them at 60 s (PATCHES.md, the registry's provider keys).
   */
  updatePeriodS?: number
  /** bmrt-node --mean-balance-check-period, seconds (default 60, Petals'); each check reads every server's record */
  balanceCheckPeriodS?: number
  /** client timeouts: opening a server session (default 5 s, the SDK's) and one step (default 5 s) */
  connectTimeoutMs?: number
  stepTimeoutMs?: number
  /** the timeline's bucket (default 10 s) */
  bucketMs?: number
  /** how often the DHT is sampled during the chaos (default 30 s; each sample looks up every block) */
  sampleMs?: number
  /** how long the swarm may take to settle after the chaos, and clients to finish (default 60 s) */
  settleTimeoutMs?: number
  /** progress and events, one line each */
  log?: (line: string) => void
}

export async function runChaos (options: ChaosOptions = {}): Promise<ChaosReport> {
  const o = {
    nodes: 14, clients: 4, hostile: 0, seed: Math.floor(Math.random() * 2 ** 31), durationMs: 10 * 60_000, intervalMs: 5000, layers: 80,
    replication: 3, newTokens: 32, prompts: 8, updatePeriodS: DEFAULT_UPDATE_PERIOD_MS / 1000, balanceCheckPeriodS: DEFAULT_BALANCE_CHECK_PERIOD_MS / 1000, connectTimeoutMs: 5000, stepTimeoutMs: 5000, bucketMs: 10_000, sampleMs: 30_000,
    settleTimeoutMs: 60_000, ...definedOnly(options)
  }
  const log = options.log ?? (() => {})
  const verifyRate = options.verifyRate ?? (o.hostile > 0 ? 1 : undefined)
  if (o.hostile >= o.nodes) throw new RangeError(`${o.hostile} hostile servers of ${o.nodes} leave none honest`)
  const backend = loadAddon() !== null ? 'native' : 'js'
  // The honest servers alone hold each block `replication` times: hostile ones come on top.
  const blocksPerNode = Math.min(o.layers, Math.ceil(o.replication * o.layers / (o.nodes - o.hostile)))
  const expirationS = TTL_UPDATE_PERIODS * o.updatePeriodS
  const recorder = new Recorder(log)
  const scratch = await mkdtemp(join(tmpdir(), 'bmrt-chaos-'))
  const removeScratch = (): void => rmSync(scratch, { recursive: true, force: true })
  process.once('exit', removeScratch) // also when the process exits without reaching the finally
  const modelDir = join(scratch, MODEL_NAME)
  let bootstrap: FleetNode | null = null
  let fleet: FleetNode[] = []
  const clients: ChaosClient[] = []
  let observer: BmrtNode | null = null
  try {
    log(`seed ${o.seed}; ${o.nodes} servers x ${blocksPerNode} blocks of a ${o.layers}-block model (64 heads, 8 KV heads, hidden 128, ${backend} backend), ` +
      `${o.hostile > 0 ? `${o.hostile} of them hostile, ` : ''}${o.clients} clients x ${o.newTokens} new tokens${verifyRate !== undefined ? `, verify rate ${verifyRate}` : ''}; ${o.actions !== undefined ? `${o.actions} chaos actions` : `${o.durationMs / 60_000} min of chaos`}, one every ${o.intervalMs / 1000} s`)
    await makeTestModel(modelDir, { layers: o.layers, hidden: 128, intermediate: 352, heads: 64, kvHeads: 8, headDim: 2, vocab: 512, tokenizerFrom: BUNDLED_MODEL })
    const { prompts, rejected } = await referencePrompts(modelDir, { backend, count: o.prompts, newTokens: o.newTokens })
    log(`reference: ${prompts.length} prompts computed here (${rejected} passed over for near-ties)`)

    const period = ['--update-period', String(o.updatePeriodS), '--expiration', String(expirationS)]
    bootstrap = new FleetNode('bootstrap', ['--relay-only', '--new-swarm', '--host-addrs', '/ip4/127.0.0.1/tcp/0', ...period])
    await bootstrap.start()
    const bootstrapAddr = /share as --initial-peers: (\S+)/.exec(bootstrap.output.join('\n'))![1]

    const downSince = new Map<FleetNode, number>()
    let watching = false
    fleet = makeFleet(o.nodes, { modelDir, modelName: MODEL_NAME, bootstrap: bootstrapAddr, numBlocks: blocksPerNode, scratch, backend, updatePeriodS: o.updatePeriodS, expirationS, balanceCheckPeriodS: o.balanceCheckPeriodS, hostile: o.hostile }, (node, event) => {
      if (!watching) return
      if (node.state === 'online') downSince.delete(node)
      if (event !== undefined) recorder.say(`${node.name} ${event}`)
      recorder.coverage(coverage(fleet.map(view), o.layers).every(c => c > 0))
    })
    const names = (text: string): string => [bootstrap!, ...fleet].reduce((t, n) => n.peerId === '' ? t : t.replaceAll(n.peerId, n.name).replaceAll(shortPeerId(n.peerId), n.name), text)
    const started = performance.now()
    for (const node of fleet) {
      await node.start()
      log(`${node.name} online: blocks ${node.span?.start}:${node.span?.end} (${((performance.now() - started) / 1000).toFixed(1)} s)${node.attack !== null ? `, HOSTILE: ${node.attack.join(' ')}` : ''}`)
    }

    observer = await createNode({ role: 'client', bootstrap: [bootstrapAddr] })
    await joinSwarm(observer)
    const registry = new Registry(observer)
    for (let i = 0; i < o.clients; i++) {
      const client = new ChaosClient(i, recorder, { initialPeers: [bootstrapAddr], modelName: MODEL_NAME, connectTimeoutMs: o.connectTimeoutMs, stepTimeoutMs: o.stepTimeoutMs, verifyRate, names })
      clients.push(client)
      await client.connect(modelDir)
    }

    // The chaos, the clients and the DHT samples run side by side from here.
    recorder.begin()
    watching = true
    const benchRssAtStart = process.memoryUsage.rss()
    let stopping = false
    const cutOff = new AbortController()
    const generating = clients.map(async (c, i) => await c.run(prompts, { first: i, newTokens: o.newTokens, stopping: () => stopping, signal: cutOff.signal }))
    const chaosOver = new AbortController()
    const sample = async (): Promise<DhtSample> => await sampleDht(registry, fleet, downSince, recorder, o.layers)
    const sampling = (async () => {
      while (!chaosOver.signal.aborted) {
        const next = (Math.floor(recorder.now() / o.sampleMs) + 1) * o.sampleMs
        try { await sleep(next - recorder.now(), undefined, { signal: chaosOver.signal }) } catch { break }
        await sample().then(s => recorder.samples.push(s), err => recorder.say(`DHT sample failed: ${(err as Error).message}`))
      }
    })()

    const random = seededRandom(o.seed)
    const resumes = new Set<NodeJS.Timeout>()
    const restarts: Array<Promise<void>> = []
    const act = (action: Action): void => {
      const node = fleet[action.node]
      const what = `${node.name} (blocks ${node.span?.start}:${node.span?.end}${clients.some(c => c.route.some(h => h.peerId === node.peerId)) ? ', on a route' : ''})`
      if (action.kind === 'kill') {
        recorder.action('kill', `kill ${what}`)
        downSince.set(node, recorder.now())
        node.kill()
      } else if (action.kind === 'stop') {
        recorder.action('stop', `hang ${what} for ${(action.forMs / 1000).toFixed(1)} s`)
        downSince.set(node, recorder.now())
        node.stop()
        const timer = setTimeout(() => { resumes.delete(timer); node.resume(); recorder.say(`resume ${node.name}`) }, action.forMs)
        resumes.add(timer)
      } else {
        recorder.action('restart', `start ${node.name} again`)
        restarts.push(node.start().catch(err => recorder.say(`${node.name} could not start: ${(err as Error).message}`)))
      }
    }
    for (let tick = 0; o.actions !== undefined ? tick < o.actions : recorder.now() < o.durationMs; tick++) {
      await sleep(o.intervalMs)
      const views = fleet.map(n => ({ ...view(n), busy: clients.some(c => c.route.some(h => h.peerId === n.peerId)) }))
      const action = nextAction(views, o.layers, random, o.intervalMs, verifyRate !== undefined && verifyRate >= 1 ? 2 : 1)
      if (action === null) recorder.action('none', 'no action possible: every online server is the last of some block')
      else act(action)
    }

    // Back to a whole swarm: resume the hung, start the dead (one by one, so each chooses its
    // span knowing the others'), let the clients finish, and wait for the swarm to settle.
    chaosOver.abort()
    recorder.say('chaos over: resuming and restarting every server')
    resumes.forEach(t => clearTimeout(t))
    fleet.forEach(n => n.resume())
    await Promise.all(restarts)
    for (const node of fleet.filter(n => n.state === 'dead')) {
      await node.start().catch(err => recorder.say(`${node.name} could not start: ${(err as Error).message}`))
    }
    stopping = true
    const grace = setTimeout(() => cutOff.abort(), o.settleTimeoutMs)
    await Promise.all(generating)
    clearTimeout(grace)
    const clientsDoneMs = recorder.now()
    const bannedAtEnd = new Map(fleet.filter(n => n.attack !== null).map(n => [n.peerId, clients.filter(c => c.hasBanned(n.peerId)).length]))
    await sampling
    recorder.say('clients done; waiting for the swarm to settle')
    const settled = await settle(async () => await settleProblems(observer!, fleet, sample), o.settleTimeoutMs)
    watching = false
    recorder.say(settled.problems.length === 0 ? `settled in ${(settled.ms / 1000).toFixed(1)} s` : `did not settle within ${o.settleTimeoutMs / 1000} s: ${settled.problems.join('; ')}`)
    for (const node of [bootstrap, ...fleet]) node.rssAtEnd = node.rss()

    return buildReport({
      settings: { seed: o.seed, nodes: o.nodes, clients: o.clients, layers: o.layers, blocksPerNode, intervalMs: o.intervalMs, newTokens: o.newTokens, prompts: prompts.length, promptsRejected: rejected, updatePeriodS: o.updatePeriodS, expirationS, balanceCheckPeriodS: o.balanceCheckPeriodS, connectTimeoutMs: o.connectTimeoutMs, stepTimeoutMs: o.stepTimeoutMs, backend, bucketMs: o.bucketMs, hostile: o.hostile, verifyRate: verifyRate ?? null },
      recorder,
      clientsDoneMs,
      settled,
      bootstrap,
      fleet,
      bannedAtEnd,
      benchRss: { start: benchRssAtStart, end: process.memoryUsage.rss() }
    })
  } finally {
    await Promise.all(clients.map(async c => await c.close().catch(() => {})))
    await observer?.stop()
    for (const node of [...fleet, bootstrap]) node?.kill()
    process.off('exit', removeScratch)
    removeScratch()
  }
}

/** What the schedule knows of a server, but whether it is on a route. */
function view (node: FleetNode): Omit<NodeView, 'busy'> {
  return { state: node.state, span: node.span, hostile: node.attack !== null }
}

/** The DHT as a client sees it now, against the servers that are online. */
async function sampleDht (registry: Registry, fleet: readonly FleetNode[], downSince: ReadonlyMap<FleetNode, number>, recorder: Recorder, layers: number): Promise<DhtSample> {
  const atMs = recorder.now()
  const expected = new Map(fleet.flatMap(n => (n.state === 'online' && n.span !== null ? [[n.peerId, n.span] as const] : [])))
  const model = (await swarmState(registry, MODEL_NAME)).find(m => m.name === MODEL_NAME)
  const online = model?.servers.filter(s => s.state === 'online') ?? []
  let matched = 0
  let stale = 0
  let wrongSpan = 0
  let oldestStaleMs = 0
  for (const record of online) {
    const span = expected.get(record.peerId)
    if (span === undefined) {
      stale++
      const node = fleet.find(n => n.peerId === record.peerId)
      const since = node === undefined ? undefined : downSince.get(node)
      if (since !== undefined) oldestStaleMs = Math.max(oldestStaleMs, atMs - since)
    } else if (span.start === record.start && span.end === record.end) {
      matched++
    } else {
      wrongSpan++
    }
  }
  return {
    atMs,
    tookMs: recorder.now() - atMs,
    expected: expected.size,
    seen: online.length,
    matched,
    stale,
    wrongSpan,
    missing: [...expected.keys()].filter(peer => !online.some(r => r.peerId === peer)).length,
    uncoveredBlocks: model?.coverage.filter(c => c === 0).length ?? layers,
    oldestStaleMs
  }
}

/**
 * What keeps the swarm from being settled: a server not online, a record missing, stale or with
 * the wrong span, a block without a record, a session still open on a server. Empty when settled.
 */
async function settleProblems (observer: BmrtNode, fleet: readonly FleetNode[], sample: () => Promise<DhtSample>): Promise<string[]> {
  const problems = fleet.filter(n => n.state !== 'online').map(n => `${n.name} is ${n.state}`)
  let s: DhtSample
  try {
    s = await sample()
  } catch (err) {
    return [...problems, `the DHT lookup failed: ${(err as Error).message}`]
  }
  if (s.missing > 0) problems.push(`${s.missing} online servers have no record in the DHT`)
  if (s.stale > 0) problems.push(`${s.stale} records of servers that are not online`)
  if (s.wrongSpan > 0) problems.push(`${s.wrongSpan} records with an old span`)
  if (s.uncoveredBlocks > 0) problems.push(`${s.uncoveredBlocks} blocks have no online record`)
  await Promise.all(fleet.filter(n => n.state === 'online').map(async n => {
    try {
      n.sessionsAtEnd = (await probeServer(observer, n.peerId, MODEL_NAME)).info.sessions
      if (n.sessionsAtEnd > 0) problems.push(`${n.name} has ${n.sessionsAtEnd} sessions open`)
    } catch (err) {
      n.sessionsAtEnd = null
      problems.push(`${n.name} does not answer /bmrt/info: ${(err as Error).message}`)
    }
  }))
  return problems
}

/** Waits until `problems()` finds none, up to `timeoutMs`; returns the last problems found. */
async function settle (problems: () => Promise<string[]>, timeoutMs: number): Promise<{ ms: number, problems: string[] }> {
  const started = performance.now()
  let last = ['not checked']
  await waitFor('the swarm to settle', async () => (last = await problems()).length === 0, timeoutMs).catch(() => {})
  return { ms: performance.now() - started, problems: last }
}

/** `options` without the keys whose value is undefined (so that spreading them keeps defaults). */
function definedOnly<T extends object> (options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>
}
