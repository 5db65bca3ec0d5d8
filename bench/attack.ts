// All the session attacks of issue 20 at once against a loopback swarm of the bundled model, while
// 2 honest clients generate. Two bmrt-node processes serve a chain (blocks 0:2 and 2:5, each
// --attn-cache-tokens 4096, bmrt-node's default for this model); an in-process node is the swarm's
// entry. First a quiet phase: the 2 clients (DistributedModels of their own) generate the reference
// prompt greedily, again and again, and each output is checked against the reference tokens
// (src/testing/expected.ts, models/stories260K/EXPECTED.md). Then the attack phase, the same
// clients generating while, all at once:
//   - refusing sybils (row 1): identities announcing "0:5, inferenceRps 1e6" that refuse each session;
//   - stalling sybils (row 2): the same, accepting each session and never answering;
//   - fake advertisers (row 4): identities providing the block group with no span record;
//   - cache hogs (row 3): identities asking for sessions longer than the context (refused), then
//     holding sessions of the whole context (512) idle, opening them again when the server ends them;
//   - prefill loopers (row 5): identities looping 256-token prefills on 4 sessions each per server;
//   - a replayer (row 6): an identity that keeps putting each server's record as first read (after
//     a server's refresh, an older one) back into the DHT.
// Prints per phase and client the generations, whether all equal the reference, the median tokens/s
// and the attack/quiet ratio, then what each attacker did. Exits 1 if any output differs or any
// generation fails. The seed orders the attackers' start and their pauses (printed; replayable).
// Bounded: every loop has a count and a deadline; everything listens on 127.0.0.1; the attackers run
// in this process (their CPU is shared with the clients', as the servers' is with both).
// Run: npm run build && npm run bench:attack [-- --seed N --seconds 60]
//
// Measured here (2 cores, native backend; docs/performance.md, "Under attack"):
//   npm run bench:attack -- --seed 20   (60 s: 20 s quiet, 40 s under attack; 80.5 s in all)
//   phase   client  generations  equal to reference  failed  tokens/s (median)  slowest (s)  failovers  attack/quiet
//   quiet   c0              106           yes (106)       0              281.4          0.4          0
//   quiet   c1              106           yes (106)       0              284.0          0.4          0
//   attack  c0                7             yes (7)       0               10.4         12.0          0          0.04
//   attack  c1                7             yes (7)       0               10.7         12.5          2          0.04
//   attackers: 4 refusing sybils: 1 session refused; 2 stalling sybils: 1 session left unanswered;
//   8 fake advertisers; 2 cache hogs: 4 sessions of 8192 refused (too long), 14 of 512 opened and
//   held idle, 4 of them ended by the server, 6 refused (cache full); 2 prefill loopers: 3535
//   prefills of 256 tokens on 88 sessions, 72 refused (CACHE_FULL); 1 replayer: 10 puts.
//   CPU in the 40.5 s of attack: this process (clients and attackers) 23.5 s, the servers 24.8 and
//   26.0 s: the 2 cores are saturated, a quarter of them by the attackers' side of the prefill loops.

import '../src/util/polyfill.js'
import type { ChildProcess } from 'node:child_process'
import { setMaxListeners } from 'node:events'
import { readFileSync } from 'node:fs'
import { benchArgs } from './bench-args.js'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { collect } from '../src/inference/generate.js'
import { seededRandom } from '../src/inference/sampling.js'
import { createNode, joinSwarm, type BmrtNode } from '../src/p2p/node.js'
import { blockGroupCid, recordKey } from '../src/p2p/registry.js'
import { DistributedModel } from '../src/petals/client/distributed-model.js'
import { ErrorCode, Request, Response } from '../src/petals/protocol/wire.js'
import { EXPECTED } from '../src/testing/expected.js'
import { BUNDLED_MODEL, startNode, waitFor } from '../src/testing/processes.js'
import { hiddenTensor, openRequest, RawPeer } from '../src/testing/raw-peer.js'
import { Sybil } from '../src/testing/sybil.js'

const HELP = `npm run bench:attack -- [options]
A loopback swarm of the bundled model (2 bmrt-node processes, blocks 0:2 and 2:5); 2 honest clients
generate the reference prompt, first quietly, then under all the session attacks of issue 20 at once.
  --seed N       orders the attackers and their pauses (default: random; printed)
  --seconds S    both phases together (default 60: a third quiet, the rest under attack)`

const args = benchArgs('bench:attack', { seed: { type: 'string' }, seconds: { type: 'string', default: '60' } }, HELP)
const SECONDS = Number(args.seconds)
const SEED = args.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(args.seed)
if (!(SECONDS >= 3) || !Number.isInteger(SEED) || SEED < 0) {
  console.error(`bench:attack: --seconds must be a number >= 3 and --seed an integer >= 0\n\n${HELP}`)
  process.exit(2)
}
const random = seededRandom(SEED)

const MODEL = 'stories-attack'
const CONTEXT = 512
const CACHE_TOKENS = 4096
const SPANS = [[0, 2], [2, 5]] as const
const { prompt, promptIds, ids: REFERENCE } = EXPECTED[0]
const NEW_TOKENS = REFERENCE.length
/** attackers */
const REFUSING_SYBILS = 4
const STALLING_SYBILS = 2
const ADVERTISERS = 8
const HOGS = 2
const HOG_SESSIONS = 2 // per hog and server
const LOOPERS = 2
const LOOPER_SESSIONS = 4 // per looper and server
const PREFILL_TOKENS = 256
const REPLAY_PERIOD_MS = 5000
const MAX_REPLAYS = 100 // rounds
/** bounds: generations per client and phase, opens per hog session, prefills per looper session */
const MAX_GENERATIONS = 2000
const MAX_HOG_OPENS = 200
const MAX_PREFILLS = 20_000
/** a generation under way when its phase ends may finish within this */
const GRACE_MS = 120_000

const log = (line: string): void => console.log(line)
const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))
const median = (xs: number[]): number => {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
/** CPU seconds a process has used (utime + stime from /proc; Linux), 0 when it cannot be read. */
const cpuSeconds = (pid: number | undefined): number => {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100 // clock ticks: 100 a second on Linux
  } catch {
    return 0
  }
}
const ownCpuSeconds = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6 }
const shuffled = <T>(xs: T[]): T[] => {
  const out = [...xs]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const swap = out[i]
    out[i] = out[j]
    out[j] = swap
  }
  return out
}

// A stream the server resets surfaces in js-libp2p as an exception from an event dispatch; count it, go on.
let streamResets = 0
process.on('uncaughtException', err => {
  if (err.name === 'StreamResetError') { streamResets++; return }
  console.error(`bench:attack: ${err.stack ?? String(err)}`)
  process.exit(1)
})
const servers: ChildProcess[] = []
process.on('exit', () => { for (const s of servers) s.kill('SIGKILL') })

interface PhaseResult { generations: number, equal: number, wrong: string[], failed: string[], rates: number[], failovers: number, slowest: number }

log(`bench:attack: seed ${SEED}, ${SECONDS} s (replay: npm run bench:attack -- --seed ${SEED} --seconds ${SECONDS})`)
const started = performance.now()
const entry = await createNode({ role: 'server' })
const initialPeers = entry.getMultiaddrs().map(String)
const peers: Array<{ stop: () => Promise<void> | void }> = []
let stopping = false
const stopAttack = new AbortController()
setMaxListeners(1000, stopAttack.signal) // each attack session's read listens to it
/** The session attacks start looping once every attacker is set up and the clients see the sybils. */
let go = (): void => {}
const going = new Promise<void>(resolve => { go = resolve })
const attackLoops: Array<Promise<void>> = []
let exitCode = 0
try {
  const serverAddrs: Multiaddr[] = []
  const serverIds: string[] = []
  for (const [start, end] of SPANS) {
    const server = await startNode(['--model', BUNDLED_MODEL, '--model-name', MODEL, '--blocks', `${start}:${end}`, '--initial-peers', initialPeers[0],
      '--host-addrs', '/ip4/127.0.0.1/tcp/0', '--throughput', '1', '--threads', '1', '--attn-cache-tokens', String(CACHE_TOKENS)],
    { onSpawn: child => servers.push(child) })
    const line = server.output.find(l => l.includes('share as --initial-peers: '))!
    serverAddrs.push(multiaddr(line.split('share as --initial-peers: ')[1].trim()))
    serverIds.push(server.peerId)
  }

  const failovers = [0, 0]
  let current: 'quiet' | 'attack' = 'quiet'
  const clients = await Promise.all([0, 1].map(async i => await DistributedModel.load(BUNDLED_MODEL, {
    initialPeers,
    modelName: MODEL,
    onRoute: (_route, reason) => { if (reason !== 'open') { failovers[i]++; if (current === 'attack' && failovers[i] <= 12) log(`  c${i} failover: ${reason.slice(0, 160)}`) } }
  })))
  peers.push(...clients.map(c => ({ stop: async () => await c.close() })))
  log(`swarm: entry ${initialPeers[0]}; bmrt-node ${SPANS.map(([s, e]) => `${s}:${e}`).join(' and ')} (--attn-cache-tokens ${CACHE_TOKENS}); ready in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  log(`honest clients c0, c1: "${prompt}" + ${NEW_TOKENS} tokens, greedy, checked against the reference`)

  /** Both clients generate until `ms` have passed (a generation under way finishes). */
  const runPhase = async (ms: number): Promise<PhaseResult[]> => {
    const end = performance.now() + ms
    const hard = AbortSignal.timeout(ms + GRACE_MS)
    const before = [...failovers]
    return await Promise.all(clients.map(async (client, i) => {
      const r: PhaseResult = { generations: 0, equal: 0, wrong: [], failed: [], rates: [], failovers: 0, slowest: 0 }
      do {
        const t0 = performance.now()
        r.generations++
        try {
          const out = await collect(client.generate(promptIds, { maxNewTokens: NEW_TOKENS, signal: hard }))
          const seconds = (performance.now() - t0) / 1000
          r.slowest = Math.max(r.slowest, seconds)
          if (out.finishReason === 'aborted') {
            r.failed.push(`cut off ${GRACE_MS / 1000} s after the phase's end`)
          } else if (out.ids.length === REFERENCE.length && out.ids.every((id, k) => id === REFERENCE[k])) {
            r.equal++
            r.rates.push(out.ids.length / seconds)
          } else {
            r.wrong.push(`got [${out.ids.join(' ')}]`)
          }
        } catch (err) {
          r.failed.push((err as Error).message)
        }
      } while (performance.now() < end && r.generations < MAX_GENERATIONS && !hard.aborted)
      r.failovers = failovers[i] - before[i]
      return r
    }))
  }

  const quietMs = SECONDS * 1000 / 3
  log(`quiet phase: ${(quietMs / 1000).toFixed(0)} s`)
  const quiet = await runPhase(quietMs)

  // The attackers, started in the seed's order.
  const sybils: Sybil[] = []
  const advertisers: BmrtNode[] = []
  const hogs: RawPeer[] = []
  const loopers: RawPeer[] = []
  const hogCounts = { tooLongRefused: 0, opened: 0, ended: 0, refused: 0 }
  const looperCounts = { sessions: 0, prefills: 0, refused: 0, errors: 0, firstError: '', firstRefusal: '' }
  const replayCounts = { puts: 0, errors: 0 }
  const group = await blockGroupCid(MODEL, 0)
  const pause = async (minMs: number, maxMs: number): Promise<void> => await sleep(minMs + random() * (maxMs - minMs))

  const hogSlot = async (hog: RawPeer, server: Multiaddr, [start, end]: readonly [number, number]): Promise<void> => {
    await going
    for (let opens = 0; opens < MAX_HOG_OPENS && !stopping; opens++) {
      try {
        const { stream, frames } = await hog.dial(server)
        await frames.write(Request, openRequest(MODEL, { start, end, maxLength: CONTEXT }))
        hogCounts.opened++
        const answer = await frames.read(Response, { signal: stopAttack.signal }) // it sends nothing; the server may end it
        if (answer?.error?.code === ErrorCode.CACHE_FULL) { hogCounts.opened--; hogCounts.refused++ } else hogCounts.ended++
        stream.abort(new Error('hog done'))
      } catch {
        if (stopping) return
      }
      await pause(1000, 3000)
    }
  }
  const looperSession = async (looper: RawPeer, server: Multiaddr, [start, end]: readonly [number, number]): Promise<void> => {
    const hidden = hiddenTensor(PREFILL_TOKENS)
    let prefills = 0
    await going
    while (!stopping && prefills < MAX_PREFILLS) {
      try {
        const { stream, frames } = await looper.dial(server)
        await frames.write(Request, openRequest(MODEL, { start, end, maxLength: PREFILL_TOKENS }))
        looperCounts.sessions++
        while (!stopping && prefills < MAX_PREFILLS) {
          await frames.write(Request, { step: { position: 0, hidden } })
          const response = await frames.read(Response, { signal: stopAttack.signal })
          if (response?.hidden === undefined) {
            if (response?.error !== undefined) {
              looperCounts.refused++
              if (looperCounts.firstRefusal === '') looperCounts.firstRefusal = `${ErrorCode[response.error.code]}: ${response.error.message}`
            }
            break
          }
          prefills++
          looperCounts.prefills++
        }
        stream.abort(new Error('looper done'))
      } catch (err) {
        if (stopping) return
        looperCounts.errors++
        if (looperCounts.firstError === '') looperCounts.firstError = (err as Error).message
      }
      await pause(200, 1000)
    }
  }

  const attackStarted = performance.now()
  const starters: Array<[string, () => Promise<void>]> = [
    ['refusing sybils', async () => { for (let i = 0; i < REFUSING_SYBILS; i++) sybils.push(await Sybil.start(MODEL, 'refuse', initialPeers)) }],
    ['stalling sybils', async () => { for (let i = 0; i < STALLING_SYBILS; i++) sybils.push(await Sybil.start(MODEL, 'stall', initialPeers)) }],
    ['fake advertisers', async () => {
      for (let i = 0; i < ADVERTISERS; i++) { // one at a time: libp2p takes 5 new connections a second per host
        const node = await createNode({ role: 'server', bootstrap: [...initialPeers, ...serverAddrs.map(String)] })
        advertisers.push(node)
        await joinSwarm(node)
        await node.contentRouting.provide(group)
      }
    }],
    ['cache hogs', async () => {
      for (let h = 0; h < HOGS; h++) {
        const hog = await RawPeer.start()
        hogs.push(hog)
        for (const [s, server] of serverAddrs.entries()) {
          // First what row 3 asked for: a session longer than the model's context.
          const { stream, frames } = await hog.dial(server)
          await frames.write(Request, openRequest(MODEL, { start: SPANS[s][0], end: SPANS[s][1], maxLength: 8192 }))
          if ((await frames.read(Response, { signal: AbortSignal.timeout(30_000) }))?.error?.code === ErrorCode.TOO_LONG) hogCounts.tooLongRefused++
          stream.abort(new Error('hog done'))
          for (let k = 0; k < HOG_SESSIONS; k++) attackLoops.push(hogSlot(hog, server, SPANS[s]))
        }
      }
    }],
    ['a replayer', async () => {
      const replayer = await createNode({ role: 'client', bootstrap: initialPeers })
      advertisers.push(replayer)
      await joinSwarm(replayer)
      const keys = serverIds.map(id => recordKey(MODEL, id))
      const old = await Promise.all(keys.map(async key => await replayer.contentRouting.get(key, { signal: AbortSignal.timeout(30_000) })))
      attackLoops.push((async () => {
        await going
        for (let round = 0; round < MAX_REPLAYS && !stopping; round++) {
          for (const [k, key] of keys.entries()) {
            try {
              await replayer.contentRouting.put(key, old[k], { signal: stopAttack.signal })
              replayCounts.puts++
            } catch {
              if (stopping) return
              replayCounts.errors++
            }
          }
          await pause(REPLAY_PERIOD_MS, REPLAY_PERIOD_MS)
        }
      })())
    }],
    ['prefill loopers', async () => {
      for (let l = 0; l < LOOPERS; l++) {
        const looper = await RawPeer.start()
        loopers.push(looper)
        for (const [s, server] of serverAddrs.entries()) {
          for (let k = 0; k < LOOPER_SESSIONS; k++) attackLoops.push(looperSession(looper, server, SPANS[s]))
        }
      }
    }]
  ]
  const order = shuffled(starters)
  log(`attack phase: ${order.map(([name]) => name).join(', ')} (set up in the seed's order; the session attacks loop from the phase's start)`)
  try {
    for (const [, start] of order) await start()
  } finally {
    peers.push(...sybils.map(s => ({ stop: async () => await s.node.stop() })), ...advertisers, ...hogs, ...loopers)
  }
  // The clients learn of the sybils (as they would at their next refresh), so the attack reaches them.
  for (const client of clients) {
    await waitFor('the clients to see every sybil', async () => {
      await client.manager.update()
      return sybils.every(s => client.manager.servers.some(known => known.peerId === s.peerId))
    }, 60_000)
  }
  log(`  attackers up in ${((performance.now() - attackStarted) / 1000).toFixed(1)} s; both clients see the ${sybils.length} sybils`)
  current = 'attack'
  go()
  const cpuBefore = { own: ownCpuSeconds(), servers: servers.map(s => cpuSeconds(s.pid)), wall: performance.now() }
  const attack = await runPhase(SECONDS * 1000 - quietMs)
  const cpu = { own: ownCpuSeconds() - cpuBefore.own, servers: servers.map((s, i) => cpuSeconds(s.pid) - cpuBefore.servers[i]), wall: (performance.now() - cpuBefore.wall) / 1000 }
  stopping = true
  stopAttack.abort()
  await Promise.allSettled(attackLoops)

  // The report.
  const rate = (r: PhaseResult): string => r.rates.length === 0 ? '-' : median(r.rates).toFixed(1)
  log('')
  log('phase   client  generations  equal to reference  failed  tokens/s (median)  slowest (s)  failovers  attack/quiet')
  for (const [name, results] of [['quiet', quiet], ['attack', attack]] as const) {
    results.forEach((r, i) => {
      const ratio = name === 'attack' && quiet[i].rates.length > 0 && r.rates.length > 0 ? (median(r.rates) / median(quiet[i].rates)).toFixed(2) : ''
      const equal = r.wrong.length === 0 && r.failed.length === 0 ? 'yes' : 'NO'
      log(`${name.padEnd(8)}c${i}      ${String(r.generations).padStart(11)}  ${`${equal} (${r.equal})`.padStart(18)}  ${String(r.failed.length).padStart(6)}  ${rate(r).padStart(17)}  ${r.slowest.toFixed(1).padStart(11)}  ${String(r.failovers).padStart(9)}  ${ratio.padStart(12)}`)
    })
  }
  const refused = sybils.slice(0, REFUSING_SYBILS).reduce((n, s) => n + s.sessions, 0)
  const stalled = sybils.slice(REFUSING_SYBILS).reduce((n, s) => n + s.sessions, 0)
  log('')
  log('attackers:')
  log(`  ${REFUSING_SYBILS} refusing sybils: ${refused} sessions refused`)
  log(`  ${STALLING_SYBILS} stalling sybils: ${stalled} sessions left unanswered`)
  log(`  ${ADVERTISERS} fake advertisers of block group 0, no span record`)
  log(`  ${HOGS} cache hogs x ${HOG_SESSIONS} sessions x ${SPANS.length} servers: ${hogCounts.tooLongRefused} sessions of 8192 refused (too long); ${hogCounts.opened} of ${CONTEXT} opened and held idle, ${hogCounts.ended} of them ended by the server, ${hogCounts.refused} refused (cache full)`)
  log(`  ${LOOPERS} prefill loopers x ${LOOPER_SESSIONS} sessions x ${SPANS.length} servers: ${looperCounts.prefills} prefills of ${PREFILL_TOKENS} tokens on ${looperCounts.sessions} sessions; ${looperCounts.refused} refused${looperCounts.refused > 0 ? ` (first: ${looperCounts.firstRefusal.slice(0, 120)})` : ''}, ${looperCounts.errors} failed${looperCounts.errors > 0 ? ` (first: ${looperCounts.firstError.slice(0, 120)})` : ''}`)
  log(`  1 replayer: ${replayCounts.puts} puts of the servers' first-read records, ${replayCounts.errors} failed`)
  log(`  streams reset by a server: ${streamResets}`)
  log(`CPU during the attack phase (${cpu.wall.toFixed(1)} s): this process (the clients and the attackers) ${cpu.own.toFixed(1)} s, the servers ${cpu.servers.map(c => c.toFixed(1)).join(' and ')} s`)
  log(`total ${((performance.now() - started) / 1000).toFixed(1)} s`)
  for (const [name, results] of [['quiet', quiet], ['attack', attack]] as const) {
    results.forEach((r, i) => {
      for (const w of r.wrong) log(`WRONG OUTPUT (${name}, c${i}): ${w}`)
      for (const f of r.failed) log(`GENERATION FAILED (${name}, c${i}): ${f}`)
      if (r.wrong.length > 0 || r.failed.length > 0 || r.equal === 0) exitCode = 1
    })
  }
} catch (err) {
  console.error(`bench:attack: ${(err as Error).stack ?? String(err)}`)
  exitCode = 1
} finally {
  stopping = true
  stopAttack.abort()
  go()
  await Promise.allSettled(attackLoops)
  await Promise.allSettled(peers.map(async p => await p.stop()))
  for (const s of servers) s.kill()
  await entry.stop()
}
process.exit(exitCode)
