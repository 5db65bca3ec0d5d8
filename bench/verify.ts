// Spot checks (issue 21): what a signed receipt costs, how fast hostile servers are caught, and no
// false alarms among honest ones. First, what a receipt costs per step (sign on the server, check on
// the client, and the signature check a receipt gets when it becomes evidence), for one token of a
// TinyLlama-wide and a Llama-70B-wide step in bf16; --receipts-only stops there. Then a loopback
// swarm of the bundled model where four servers hold blocks 0:5, one per backend and format a swarm
// allows here (native f32, bf16 and int8, the JS backend), in this process. Detection: how many
// wrong steps a hostile server (src/testing/hostile-server.ts: noise of 0.1 x RMS, its input back,
// or zeros, claiming to be the fastest) gets through to fresh clients at --verify-rate 0.1 before
// it is caught and banned (--trials clients per kind; 0 skips it). No false alarms: a client checks
// every step (rate 1) until --checks checks have run, on the bundled model and then on a random
// Llama-shaped model with grouped-query attention (hidden 256, 4 blocks), with a torch server in
// each mix when --torch; the report counts the outcomes by pair of formats (the server that
// answered, the one that checked) with the largest distance seen against the pair's tolerance;
// each server in turn claims a decode speed far above the others' (claimSpeed), to fresh clients,
// so that every one answers. Exits 1 on any outcome but "agreed".
// What checks cost in tokens/s: npm run bench:e2e -- --verify (servers of equal speed).
// Run: npm run build && npm run bench:verify [-- --checks 5000 --trials 20 --torch]

import '../src/util/polyfill.js'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { collect } from '../src/inference/generate.js'
import type { LoadOptions } from '../src/inference/load-span.js'
import { makeTestModel, type TestModelSpec } from '../src/inference/test-model.js'
import { createNode } from '../src/p2p/node.js'
import { DistributedModel } from '../src/petals/client/distributed-model.js'
import type { SpotCheckResult } from '../src/petals/client/spot-check.js'
import { verifyTolerance } from '../src/petals/protocol/evidence.js'
import { checkReceipt, openReceipt, ReceiptSigner, sha256, type SignedReceipt } from '../src/petals/protocol/receipts.js'
import { WireDType } from '../src/petals/protocol/wire.js'
import type { RouteHop } from '../src/petals/client/routing.js'
import { BlockServer } from '../src/petals/server/server.js'
import { EXPECTED } from '../src/testing/expected.js'
import { claimSpeed, corrupt, type Corruption } from '../src/testing/hostile-server.js'
import { BUNDLED_MODEL, waitFor } from '../src/testing/processes.js'
import { median, percentile } from '../src/util/stats.js'
import { benchArgs } from './bench-args.js'

const HELP = `npm run bench:verify -- [options]
The cost of a signed receipt per step; then four honest servers of the bundled model (native f32,
bf16, int8; JS) on loopback, hostile servers among them caught by fresh clients at --verify-rate
0.1, and a client that checks every step until enough checks ran, on the bundled model and on a
random one.
  --checks N        checks of the no-false-alarm part, per model (default 5000)
  --trials N        clients per kind of hostile server in the detection part (default 20; 0: none)
  --torch           a torch server in each no-false-alarm mix (python with torch: $BMRT_PYTHON)
  --receipts-only   only the receipts' cost`

const args = benchArgs('bench:verify', {
  checks: { type: 'string', default: '5000' }, trials: { type: 'string', default: '20' }, torch: { type: 'boolean', default: false }, 'receipts-only': { type: 'boolean', default: false }
}, HELP)
const CHECKS = Number(args.checks)
const TRIALS = Number(args.trials)
if (!Number.isSafeInteger(CHECKS) || CHECKS < 1 || !Number.isSafeInteger(TRIALS) || TRIALS < 0) {
  console.error(`bench:verify: --checks must be a positive integer, --trials a whole number\n\n${HELP}`)
  process.exit(2)
}
/** The verify rate of the detection part. */
const DETECTION_RATE = 0.1
/** Generations a client of the detection part runs before it counts as not having caught the server. */
const DETECTION_GENERATIONS = 40
const MODEL = 'stories-verify'
type Mix = Array<{ name: string, load: LoadOptions }>
const MIX: Mix = [
  { name: 'native f32', load: { backend: 'native' } },
  { name: 'native bf16', load: { backend: 'native', format: 'bf16' } },
  { name: 'native int8', load: { backend: 'native', format: 'int8' } },
  { name: 'js f32', load: { backend: 'js' } }
]
/** The no-false-alarm mixes: the detection part's, with a torch server when --torch. */
const CHECKED_MIX: Mix = [...MIX, ...(args.torch === true ? [{ name: 'torch f32', load: { backend: 'torch' } as LoadOptions }] : [])]
/** The random model of the no-false-alarm part: Llama-shaped, grouped-query attention, the bundled tokenizer. */
const RANDOM_MODEL: TestModelSpec = { layers: 4, hidden: 256, intermediate: 688, heads: 8, kvHeads: 2, vocab: 512, tokenizerFrom: BUNDLED_MODEL }

/**
 * Microseconds per step, medians of 7 rounds of 1000 steps: the server hashing the step's input and
 * output and signing the receipt, the client checking it against what it sent and got, and the
 * signature check of openReceipt; with @libp2p/crypto's sign and verify of the same bytes beside.
 */
async function receiptCost (): Promise<void> {
  const key = await generateKeyPair('Ed25519')
  const signer = new ReceiptSigner(key)
  const peerId = peerIdFromPrivateKey(key).toString()
  const time = async (run: () => unknown): Promise<number> => {
    const rounds: number[] = []
    for (let r = 0; r < 7; r++) {
      const started = performance.now()
      for (let i = 0; i < 1000; i++) await run()
      rounds.push((performance.now() - started) / 1000 * 1000)
    }
    return median(rounds)
  }
  console.log('receipts, µs per one-token bf16 step (median of 7 x 1000):')
  console.log('hidden  server: hash + sign  client: check  signature check  total   @libp2p/crypto sign, verify')
  for (const hidden of [2048, 8192]) {
    const input = randomBytes(hidden * 2)
    const output = randomBytes(hidden * 2)
    const session = randomBytes(16)
    const asked = { model: MODEL, start: 0, end: 80, session, position: 100, tokens: 1, batch: 1, dtype: WireDType.BF16, input, output, format: 'bf16' as const }
    const make = (): SignedReceipt => signer.sign({ ...asked, inputSha256: sha256(input), outputSha256: sha256(output) })
    const signed = make()
    const sign = await time(make)
    const check = await time(() => checkReceipt(signed, asked))
    const open = await time(() => openReceipt(signed, peerId))
    const bytes = signed.receipt
    const libp2pSign = await time(async () => await key.sign(bytes))
    const signature = await key.sign(bytes)
    const libp2pVerify = await time(async () => await key.publicKey.verify(bytes, signature))
    console.log(`${String(hidden).padStart(6)}  ${sign.toFixed(1).padStart(19)}  ${check.toFixed(1).padStart(13)}  ${open.toFixed(1).padStart(15)}  ${(sign + check + open).toFixed(1).padStart(5)}   ${libp2pSign.toFixed(1)}, ${libp2pVerify.toFixed(1)}`)
  }
}

await receiptCost()
if (args['receipts-only'] === true) process.exit(0)

const entry = await createNode({ role: 'server' })
const initialPeers = entry.getMultiaddrs().map(String)
const clients: DistributedModel[] = []
const scratch = await mkdtemp(join(tmpdir(), 'bmrt-verify-'))
let exitCode = 0

/** Servers of blocks 0:`blocks` of the model in `modelDir`, one per entry of `mix`. */
async function startMix (modelDir: string, modelName: string, blocks: number, mix: Mix): Promise<BlockServer[]> {
  const started: BlockServer[] = []
  for (const { load } of mix) {
    started.push(await BlockServer.start({ modelDir, modelName, blocks: { start: 0, end: blocks }, initialPeers, listen: ['/ip4/127.0.0.1/tcp/0'], throughput: 1, updatePeriodMs: 600_000, load }))
  }
  return started
}

/**
 * No false alarms: a client of `modelName` checks every step until `CHECKS` checks ran. Each server
 * in turn claims a decode speed far above the others', so that routing takes it and every format
 * answers as well as checks. Prints the outcomes by pair; returns the checks run, and how many
 * were not "agreed" plus the servers banned.
 */
async function falseAlarms (modelDir: string, modelName: string, servers: BlockServer[], mix: Mix): Promise<{ checks: number, bad: number }> {
  const nameOf = new Map(servers.map((s, i) => [s.node.peerId.toString(), mix[i].name]))
  const formatOf = new Map(servers.map((s, i) => [s.node.peerId.toString(), mix[i].load.format ?? 'f32']))
  const pairs = new Map<string, { checks: number, other: number, worst: number, tolerance: number }>()
  let checks = 0
  const onSpotCheck = (result: SpotCheckResult, hop: RouteHop): void => {
    checks++
    const verifier = 'verifier' in result ? result.verifier : ''
    const key = `${nameOf.get(hop.peerId) ?? hop.peerId} checked by ${nameOf.get(verifier) ?? (verifier === '' ? 'nobody' : verifier)}`
    const pair = pairs.get(key) ?? { checks: 0, other: 0, worst: 0, tolerance: verifyTolerance(formatOf.get(hop.peerId), formatOf.get(verifier)) }
    pair.checks++
    if (result.outcome === 'agreed') pair.worst = Math.max(pair.worst, result.distance)
    else { pair.other++; console.log(`NOT AGREED: ${key}: ${JSON.stringify(result)}`) }
    pairs.set(key, pair)
  }
  console.log(`\nno false alarms on ${modelName} (${mix.map(m => m.name).join(', ')}): every step checked until ${CHECKS}`)
  const started = performance.now()
  const banned = new Set<string>()
  for (let g = 0; checks < CHECKS; g++) {
    if (g % 5 === 0) {
      const fastest = (g / 5) % servers.length
      await Promise.all(servers.map(async (s, i) => await claimSpeed(s, modelName, i === fastest ? 1e6 : 1)))
    }
    // A fresh client for each generation: one that had timed the servers would route by what it
    // measured (the fastest format), not by the claims, and the slower servers would never answer.
    const client = await DistributedModel.load(modelDir, { initialPeers, modelName, verifyRate: 1, onSpotCheck })
    try {
      await waitFor('the client to see every server', async () => { await client.manager.update(); return client.manager.servers.length === servers.length }, 30_000)
      const { promptIds: prompt } = EXPECTED[g % EXPECTED.length]
      await collect(client.generate(prompt, { maxNewTokens: 50, temperature: 1, seed: g }))
      for (const s of servers) if (client.manager.bans.isBanned(s.node.peerId.toString())) banned.add(s.node.peerId.toString())
    } finally {
      await client.close()
    }
    if (g % 20 === 19) console.log(`  ${checks} checks (${((performance.now() - started) / 1000).toFixed(0)} s)`)
  }
  console.log(`${checks} checks in ${((performance.now() - started) / 1000).toFixed(0)} s, every step of sampled generations:`)
  console.log('server that answered, and the one that checked     checks  not agreed  largest distance  tolerance')
  let bad = 0
  for (const [key, p] of [...pairs].sort()) {
    console.log(`${key.padEnd(50)} ${String(p.checks).padStart(7)} ${String(p.other).padStart(11)} ${p.worst.toExponential(2).padStart(17)} ${String(p.tolerance).padStart(10)}`)
    bad += p.other
  }
  console.log(`servers banned: ${banned.size}`)
  return { checks, bad: bad + banned.size }
}

let servers: BlockServer[] = []
try {
  servers = await startMix(BUNDLED_MODEL, MODEL, 5, MIX)

  // Detection: a hostile server that claims to be the fastest, and fresh clients at DETECTION_RATE.
  // Its honest peers are the four of the mix, so the check of a step may fall to an int8 server,
  // whose tolerance hides noise of 0.1 x RMS on this 64-wide model (spot-check.ts).
  if (TRIALS > 0) {
    console.log(`\ndetection at --verify-rate ${DETECTION_RATE}: wrong steps a hostile server got through to a fresh client before it was caught, ${TRIALS} clients per kind`)
    console.log('hostile server                 caught  wrong steps delivered: median  p90  max   checks until caught: median  max')
    const kinds: Array<[string, Corruption]> = [['noise of 0.1 x RMS', { noise: 0.1 }], ['skips its layers', 'skip layers'], ['answers zeros', 'zeros']]
    for (const [name, how] of kinds) {
      const hostile = await BlockServer.start({ modelDir: BUNDLED_MODEL, modelName: MODEL, blocks: { start: 0, end: 5 }, initialPeers, listen: ['/ip4/127.0.0.1/tcp/0'], throughput: 1, updatePeriodMs: 600_000, load: { backend: 'native' } })
      const hostileId = hostile.node.peerId.toString()
      try {
        const counts = corrupt(hostile, how)
        await Promise.all(servers.map(async s => await claimSpeed(s, MODEL, 1)))
        await claimSpeed(hostile, MODEL)
        const delivered: number[] = []
        const checkedSteps: number[] = []
        let caught = 0
        for (let t = 0; t < TRIALS; t++) {
          let checksRun = 0
          let caughtBy: number | null = null // the check that caught it: 1 = the first this client ran
          const onCheck = (result: SpotCheckResult): void => {
            checksRun++
            if (result.outcome === 'server wrong') caughtBy ??= checksRun
          }
          const client = await DistributedModel.load(BUNDLED_MODEL, { initialPeers, modelName: MODEL, verifyRate: DETECTION_RATE, onSpotCheck: onCheck })
          try {
            Object.assign(counts, { outputs: 0, wrong: 0, firstWrong: null })
            for (let g = 0; g < DETECTION_GENERATIONS && !client.manager.bans.isBanned(hostileId); g++) {
              await collect(client.generate(EXPECTED[g % EXPECTED.length].promptIds, { maxNewTokens: 50, temperature: 1, seed: t * 1000 + g }))
            }
            if (client.manager.bans.isBanned(hostileId)) {
              caught++
              delivered.push(counts.wrong - 1) // the step it was caught on was recomputed
              checkedSteps.push(caughtBy ?? 0)
            }
          } finally {
            await client.close()
          }
        }
        const stat = (xs: number[], p: number): string => xs.length === 0 ? '-' : String(percentile(xs, p))
        console.log(`${name.padEnd(30)} ${`${caught}/${TRIALS}`.padStart(6)}  ${stat(delivered, 0.5).padStart(29)} ${stat(delivered, 0.9).padStart(4)} ${(delivered.length === 0 ? '-' : String(Math.max(...delivered))).padStart(4)}   ${stat(checkedSteps, 0.5).padStart(27)} ${(checkedSteps.length === 0 ? '-' : String(Math.max(...checkedSteps))).padStart(4)}`)
      } finally {
        await hostile.stop()
      }
    }
  }

  // No false alarms, on the bundled model (the torch server joins the mix) and on a random one.
  if (CHECKED_MIX.length > MIX.length) servers.push(...await startMix(BUNDLED_MODEL, MODEL, 5, CHECKED_MIX.slice(MIX.length)))
  const bundled = await falseAlarms(BUNDLED_MODEL, MODEL, servers, CHECKED_MIX)
  await Promise.allSettled(servers.map(async s => await s.stop()))
  const randomDir = join(scratch, 'random-llama')
  await makeTestModel(randomDir, RANDOM_MODEL)
  servers = await startMix(randomDir, 'random-verify', RANDOM_MODEL.layers, CHECKED_MIX)
  const random = await falseAlarms(randomDir, 'random-verify', servers, CHECKED_MIX)
  console.log(`\nin all: ${bundled.checks + random.checks} checks over two models, ${bundled.bad + random.bad} not agreed or servers banned`)
  if (bundled.bad + random.bad > 0) exitCode = 1
} catch (err) {
  console.error(`bench:verify: ${(err as Error).stack ?? String(err)}`)
  exitCode = 1
} finally {
  await Promise.allSettled(clients.map(async c => await c.close()))
  await Promise.allSettled(servers.map(async s => await s.stop()))
  await entry.stop()
  await rm(scratch, { recursive: true, force: true })
}
process.exit(exitCode)
