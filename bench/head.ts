// The client's head per token (final norm + lm_head, the part of a swarm generation that runs on the
// client): the JS head against the native head on the CPU's cores and, where the addon has CUDA
// and a GPU is there, on the GPU, for a vocabulary and hidden size (default Llama-2-70B's 32000 x
// 8192), on dummy weights, in one run. Prints the median ms per token of each and the ratio to the
// JS head; --json FILE writes the figures.
//   npm run bench:head [-- --vocab 32000 --hidden 8192 --runs 20 --json FILE]

import '../src/util/polyfill.js'
import { writeFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { parseArgs } from 'node:util'
import type { ModelHead } from '../src/inference/backend.js'
import { parseConfig } from '../src/inference/config.js'
import { DummyWeights } from '../src/inference/dummy-weights.js'
import { loadHead } from '../src/inference/load-span.js'
import { describeHead } from '../src/inference/model.js'
import { loadAddon } from '../src/inference/native-backend.js'
import { median } from '../src/util/stats.js'

const { values: o } = parseArgs({
  options: {
    vocab: { type: 'string', default: '32000' },
    hidden: { type: 'string', default: '8192' },
    runs: { type: 'string', default: '20' },
    json: { type: 'string' },
    'skip-js': { type: 'boolean', default: false }
  }
})
const vocab = Number(o.vocab)
const hidden = Number(o.hidden)
const runs = Number(o.runs)
const config = parseConfig({
  model_type: 'llama', hidden_size: hidden, intermediate_size: 4 * hidden, num_hidden_layers: 1, num_attention_heads: hidden / 128,
  vocab_size: vocab, torch_dtype: 'bfloat16'
}, 'bench:head')

/** Median ms per token of the head's logits, after two warm-ups. */
async function time (head: ModelHead): Promise<number> {
  const row = new Float32Array(hidden).map((_, i) => Math.sin(i))
  const samples: number[] = []
  for (let r = 0; r < runs + 2; r++) {
    const started = performance.now()
    await head.logits(row)
    if (r >= 2) samples.push(performance.now() - started)
  }
  return median(samples)
}

const cases: Array<{ name: string, load: () => Promise<ModelHead> }> = []
if (o['skip-js'] !== true) cases.push({ name: 'js (f32)', load: async () => await loadHead(new DummyWeights(), config, { backend: 'js' }) })
cases.push({ name: `native cpu bf16, ${availableParallelism()} threads`, load: async () => await loadHead(new DummyWeights(), config, { backend: 'native', format: 'bf16' }) })
if ((loadAddon()?.cudaDevices?.() ?? []).length > 0) {
  cases.push({ name: 'native cuda bf16', load: async () => await loadHead(new DummyWeights(), config, { backend: 'native', format: 'bf16', device: 'cuda' }) })
}

console.log(`client head, vocab ${vocab} x hidden ${hidden} (lm_head ${(vocab * hidden * 2 / 1e9).toFixed(2)} GB in bf16), dummy weights, median of ${runs}`)
const results: Array<{ name: string, ms: number, loadSeconds: number, head: string }> = []
for (const c of cases) {
  const started = performance.now()
  const head = await c.load()
  const loadSeconds = (performance.now() - started) / 1000
  try {
    results.push({ name: c.name, ms: await time(head), loadSeconds, head: describeHead(head) })
  } finally {
    head.close()
  }
}
const base = results[0].ms
for (const r of results) {
  console.log(`  ${r.name.padEnd(32)} ${r.ms.toFixed(2).padStart(9)} ms per token  ${(base / r.ms).toFixed(1).padStart(7)}x ${results[0].name}  (made in ${r.loadSeconds.toFixed(1)} s: ${r.head})`)
}
if (o.json !== undefined) await writeFile(o.json, JSON.stringify({ vocab, hidden, runs, results }, null, 2))
