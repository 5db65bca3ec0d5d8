// End-to-end speed through a loopback swarm, against the same model run locally, in one run:
// decode tokens/s and prefill throughput (i) locally, (ii) through 2 hops and (iii) through 4 hops,
// for the bundled model, a model with a 16 KiB hidden state (4096 fp32 values) and almost no
// compute, and a random TinyLlama-shaped 8-block model (hidden 2048, 32 heads, 4 KV heads, bf16).
// The per-hop overhead is what a decode step costs beyond the local run, per hop; the time the
// servers' forward calls took (as they measure it, addon work plus its thread hand-offs) is shown
// beside it. Servers run in this process (compute on the addon's threads) and the client reaches
// them over loopback TCP; runs are interleaved so that the machine's drifts touch all alike.
// With --verify: what spot checks cost (issue 21). Every span of 2 hops is held by two servers, so
// a check has a second server to go to, and two clients of the same swarm run with --verify-rate 0
// and 0.05 in turns (15 runs each): the ratio of their decode tokens/s.
// Run: npm run bench:e2e [-- stories|16 kib|tinyllama] [-- --verify]

import '../src/util/polyfill.js'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadConfig } from '../src/inference/config.js'
import { collect, generate } from '../src/inference/generate.js'
import { LocalModel, type LanguageModel } from '../src/inference/model.js'
import { loadAddon } from '../src/inference/native-backend.js'
import { makeTestModel } from '../src/inference/test-model.js'
import { createNode } from '../src/p2p/node.js'
import { DistributedModel } from '../src/petals/client/distributed-model.js'
import { DEFAULT_VERIFY_RATE } from '../src/petals/client/spot-check.js'
import { BlockServer } from '../src/petals/server/server.js'
import { median } from '../src/util/stats.js'

/** --verify: the cost of spot checks instead of the cost of hops */
const VERIFY = process.argv.includes('--verify')
const RUNS = VERIFY ? 15 : 5
/** The verify rate --verify compares with no checks: the default (DEFAULT_VERIFY_RATE). */
const CHECKED_RATE = DEFAULT_VERIFY_RATE
/** `npm run bench:e2e -- tinyllama` runs only the models whose label contains the word */
const only = process.argv.slice(2).find(a => !a.startsWith('--'))?.toLowerCase()
const backend = loadAddon() !== null ? 'native' : 'js'

interface Run { stepMs: number, computeMs: number, prefill: number }

/** A model to measure, and how to read the time its blocks spent computing. */
interface Subject { name: string, model: LanguageModel, computeSeconds: () => number, close: () => Promise<void> | void }

/** One greedy generation: decode ms per token, block compute ms per decode token, prefill tokens/s. */
async function run (subject: Subject, prompt: number[], newTokens: number): Promise<Run> {
  const generation = generate(subject.model, prompt, { maxNewTokens: newTokens, ignoreEos: true })
  await generation.next() // the prompt is in; decoding starts
  const before = subject.computeSeconds()
  const r = await collect(generation)
  const decodeSteps = r.ids.length - 1
  return {
    stepMs: 1000 * r.decodeSeconds / decodeSteps,
    computeMs: 1000 * (subject.computeSeconds() - before) / decodeSteps,
    prefill: prompt.length / r.prefillSeconds
  }
}

/** The local model, with its blocks' forward timed. */
async function local (dir: string): Promise<Subject> {
  const model = await LocalModel.load(dir, { backend })
  let seconds = 0
  const forward = model.blocks.forward.bind(model.blocks)
  model.blocks.forward = async (...args) => {
    const started = performance.now()
    try { return await forward(...args) } finally { seconds += (performance.now() - started) / 1000 }
  }
  return { name: 'local', model, computeSeconds: () => seconds, close: () => model.close() }
}

/**
 * The model served by `hops` servers (each span by `replicas` of them; in this process, over
 * loopback TCP) and one client per verify rate in `rates`: a subject each, the last one's close
 * stopping the swarm.
 */
async function swarm (dir: string, hops: number, replicas = 1, rates = [0]): Promise<Subject[]> {
  const entry = await createNode({ role: 'server' })
  const initialPeers = entry.getMultiaddrs().map(String)
  const blocks = (await loadConfig(dir)).numLayers
  const servers: BlockServer[] = []
  const modelName = `bench-${hops}`
  for (let h = 0; h < hops; h++) {
    const span = { start: Math.floor(h * blocks / hops), end: Math.floor((h + 1) * blocks / hops) }
    for (let r = 0; r < replicas; r++) {
      servers.push(await BlockServer.start({ modelDir: dir, modelName, blocks: span, initialPeers, throughput: 1, updatePeriodMs: 600_000, load: { backend } }))
    }
  }
  const computeSeconds = (): number => servers.reduce((sum, s) => sum + s.computeSeconds, 0)
  const subjects: Subject[] = []
  for (const verifyRate of rates) {
    const model = await DistributedModel.load(dir, { initialPeers, modelName, verifyRate })
    subjects.push({ name: VERIFY ? `rate ${verifyRate}` : `${hops} hops`, model, computeSeconds, close: async () => { await model.close() } })
  }
  const last = subjects[subjects.length - 1]
  const closeLast = last.close
  last.close = async () => {
    await closeLast()
    await Promise.all(servers.map(async s => await s.stop()))
    await entry.stop()
  }
  return subjects
}

async function bench (label: string, dir: string, opts: { promptTokens: number, newTokens: number }): Promise<void> {
  if (only !== undefined && !label.toLowerCase().includes(only)) return
  if (VERIFY) { await verifyCost(label, dir, opts); return }
  const subjects = [await local(dir)]
  const blocks = subjects[0].model.config.numLayers
  for (const hops of [2, 4].filter(h => h <= blocks)) subjects.push(...await swarm(dir, hops))
  const vocab = subjects[0].model.config.vocabSize
  const prompt = Array.from({ length: opts.promptTokens }, (_, i) => 1 + (i * 7) % (vocab - 1))
  const runs = new Map<Subject, Run[]>(subjects.map(s => [s, []]))
  try {
    for (const s of subjects) await run(s, prompt, 4) // warm-up: routes, streams, JIT
    // Interleaved, so that the machine's drifts touch every subject alike.
    for (let i = 0; i < RUNS; i++) for (const s of subjects) runs.get(s)!.push(await run(s, prompt, opts.newTokens))
  } finally {
    for (const s of subjects) await s.close()
  }
  const H = subjects[0].model.config.hiddenSize
  console.log(`${label}: ${backend} backend, prompt ${opts.promptTokens} tokens, ${opts.newTokens} new tokens, medians of ${RUNS} interleaved runs`)
  const baseStep = median(runs.get(subjects[0])!.map(r => r.stepMs))
  for (const s of subjects) {
    const r = runs.get(s)!
    const step = median(r.map(x => x.stepMs))
    const hops = s === subjects[0] ? 0 : Number(s.name.split(' ')[0])
    const perHop = hops === 0 ? '' : `, overhead ${((step - baseStep) / hops).toFixed(2)} ms per hop`
    console.log(`  ${s.name.padEnd(7)} ${(1000 / step).toFixed(1).padStart(8)} tokens/s decode = ${(100 * baseStep / step).toFixed(1).padStart(5)}% of local` +
      ` (${step.toFixed(2)} ms/token${perHop}; servers' forward calls ${median(r.map(x => x.computeMs)).toFixed(2)} ms), prefill ${median(r.map(x => x.prefill)).toFixed(0)} tokens/s`)
  }
  console.log(`  (overhead per hop = (swarm ms/token - local ms/token) / hops; hidden state ${H} values in ${subjects[0].model.config.dtype ?? 'f32'} on the wire)`)
}

/** --verify: two clients of one 2-hop swarm whose spans each have two servers, at verify rates 0 and CHECKED_RATE. */
async function verifyCost (label: string, dir: string, opts: { promptTokens: number, newTokens: number }): Promise<void> {
  const subjects = await swarm(dir, 2, 2, [0, CHECKED_RATE])
  const vocab = subjects[0].model.config.vocabSize
  const prompt = Array.from({ length: opts.promptTokens }, (_, i) => 1 + (i * 7) % (vocab - 1))
  const runs = new Map<Subject, Run[]>(subjects.map(s => [s, []]))
  try {
    for (const s of subjects) await run(s, prompt, 4)
    for (let i = 0; i < RUNS; i++) for (const s of subjects) runs.get(s)!.push(await run(s, prompt, opts.newTokens))
  } finally {
    for (const s of subjects) await s.close()
  }
  const [plain, checked] = subjects.map(s => median(runs.get(s)!.map(r => r.stepMs)))
  console.log(`${label}: ${backend} backend, 2 hops with 2 servers each, prompt ${opts.promptTokens} tokens, ${opts.newTokens} new tokens, medians of ${RUNS} interleaved runs`)
  console.log(`  verify rate 0: ${(1000 / plain).toFixed(1)} tokens/s decode; ${CHECKED_RATE}: ${(1000 / checked).toFixed(1)} tokens/s (${(plain / checked).toFixed(2)}x of rate 0)`)
}

const bundled = fileURLToPath(new URL('../../models/stories260K', import.meta.url))
await bench('stories260K (5 blocks, hidden 64)', bundled, { promptTokens: 5, newTokens: 100 })

const scratch = await mkdtemp(join(tmpdir(), 'bmrt-bench-'))
try {
  const wide = join(scratch, 'wide')
  // 16 KiB of fp32 hidden state per token, and blocks as cheap as that width allows.
  await makeTestModel(wide, { layers: 4, hidden: 4096, intermediate: 16, heads: 1, kvHeads: 1, headDim: 16, vocab: 64, tokenizerFrom: bundled })
  await bench('16 KiB hidden state (4 blocks, hidden 4096 fp32, head dim 16, almost no compute)', wide, { promptTokens: 8, newTokens: 50 })
  const tiny = join(scratch, 'tinyllama8')
  await makeTestModel(tiny, { layers: 8, hidden: 2048, intermediate: 5632, heads: 32, kvHeads: 4, vocab: 512, dtype: 'bf16', tokenizerFrom: bundled })
  await bench('TinyLlama shape, 8 blocks (hidden 2048, intermediate 5632, 32 heads, 4 KV heads, bf16; vocab 512 so that the client lm_head does not hide the blocks)', tiny, { promptTokens: 128, newTokens: 30 })
} finally {
  await rm(scratch, { recursive: true, force: true })
}
