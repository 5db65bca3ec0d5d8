// Prints local generation speed on the native and the JS backends, measured in one run: the
// bundled model, and a random Llama-2-70B-layout model at tiny width (80 blocks, 64 heads, 8 KV
// heads). Medians of 5 runs, and the native/js ratio.
// Run: npm run bench:generate

import '../src/util/polyfill.js'
import { median } from '../src/util/stats.js'
import { join } from 'node:path'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { LocalModel } from '../src/inference/model.js'
import { collect, generate } from '../src/inference/generate.js'
import { makeTestModel } from '../src/inference/test-model.js'
import { loadAddon } from '../src/inference/native-backend.js'
import type { BackendName } from '../src/inference/backend.js'

const RUNS = 5

async function measure (label: string, dir: string, newTokens: number, backend: BackendName): Promise<number> {
  const model = await LocalModel.load(dir, { backend })
  const prompt = model.tokenizer.encode('Once upon a time')
  await collect(generate(model, prompt, { maxNewTokens: 8, ignoreEos: true })) // warm-up
  const speeds: number[] = []
  const prefills: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const r = await collect(generate(model, prompt, { maxNewTokens: newTokens, ignoreEos: true }))
    speeds.push(r.tokensPerSecond)
    prefills.push(r.prefillSeconds * 1000)
  }
  const blocks = model.config.numLayers
  const perBlockMs = 1000 / median(speeds) / blocks
  console.log(`${label}, ${backend}: ${median(speeds).toFixed(1)} tokens/s decode (${perBlockMs.toFixed(3)} ms per block per token), prefill of ${prompt.length} tokens ${median(prefills).toFixed(1)} ms  [median of ${RUNS}, ${newTokens} new tokens]`)
  model.close()
  return median(speeds)
}

async function compare (label: string, dir: string, newTokens: number): Promise<void> {
  const js = await measure(label, dir, newTokens, 'js')
  if (loadAddon() === null) return
  const native = await measure(label, dir, newTokens, 'native')
  console.log(`${label}: native / js = ${(native / js).toFixed(1)}x`)
}

const bundled = fileURLToPath(new URL('../../models/stories260K', import.meta.url))
await compare('stories260K (5 blocks, hidden 64)', bundled, 100)

const scratch = await mkdtemp(join(tmpdir(), 'bmrt-bench-'))
try {
  const dir = join(scratch, 'llama70b-tiny')
  await makeTestModel(dir, { layers: 80, hidden: 128, intermediate: 352, heads: 64, kvHeads: 8, headDim: 2, vocab: 512, tokenizerFrom: bundled })
  await compare('Llama-2-70B layout, tiny width (80 blocks, hidden 128, 64 heads, 8 KV heads)', dir, 30)
} finally {
  await rm(scratch, { recursive: true, force: true })
}
