// Per-layer speed of the native addon against this machine's own limits, all measured in one run:
// read bandwidth (STREAM-style), fp32 FMA peak and bf16 dot-product peak, then for a TinyLlama-1.1B
// layer and a Llama-2-7B layer (random weights, a span of 4 such layers) in every weight format:
// decode time (1 token, KV length 128) as a share of the bandwidth floor, and prefill-128 time as
// a share of the peak.
// Then the client's lm_head (the native head, bf16, on the same threads) on a TinyLlama-sized vocabulary.
// Run: npm run bench:blocks [-- --threads N --repeats N --shapes tinyllama,llama-2-7b --formats f32,bf16 --torch PYTHON|none --save FILE]
// With a Python that has torch, the torch backend (transformers' layers in a worker process) runs
// the same shapes in f32 and bf16 in the same run, for the native/torch ratio.
// --save FILE writes the native figures as JSON for `bmrt plan --figures FILE` (src/inference/block-figures.ts).
// (prints medians; this shared 2-core VM's memory bandwidth swings between about 40 and 75 GB/s)

import '../src/util/polyfill.js'
import { median } from '../src/util/stats.js'
import { parseArgs } from 'node:util'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadBlockSpan, loadHead } from '../src/inference/load-span.js'
import { makeTestModel } from '../src/inference/test-model.js'
import { WEIGHT_FORMATS, type WeightFormat } from '../src/inference/dtype.js'
import { loadAddon } from '../src/inference/native-backend.js'
import { ropeInverseFrequencies } from '../src/inference/rope.js'
import { parseConfig } from '../src/inference/config.js'
import { LAYER_TENSOR_SUFFIXES } from '../src/inference/llama-layout.js'
import { storedMatrixBytes } from '../src/inference/weight-bytes.js'
import { DummyWeights } from '../src/inference/dummy-weights.js'
import type { BlockFigures, LayerFigure } from '../src/inference/block-figures.js'

const { values: args } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    repeats: { type: 'string', default: '7' },
    shapes: { type: 'string', default: 'tinyllama,llama-2-7b' },
    formats: { type: 'string', default: WEIGHT_FORMATS.join(',') },
    // the PyTorch worker (the torch backend) on the same shapes; 'none' to skip
    torch: { type: 'string', default: process.env.BMRT_PYTHON ?? 'python3' },
    save: { type: 'string' }
  }
})
const threads = Number(args.threads)
const repeats = Number(args.repeats)
const CONTEXT = 128
// Layers per span: a real span runs many layers per step, so the step's fixed costs (the N-API
// call, waking the threads) are shared; per-layer figures are the span's time / LAYERS.
const LAYERS = 4
// The client's head: TinyLlama's (and Llama 2's) vocabulary and hidden size.
const CLIENT_VOCAB = 32000
const CLIENT_HIDDEN = 2048

const SHAPES: Record<string, { hidden: number, intermediate: number, heads: number, kvHeads: number }> = {
  tinyllama: { hidden: 2048, intermediate: 5632, heads: 32, kvHeads: 4 },
  'llama-2-7b': { hidden: 4096, intermediate: 11008, heads: 32, kvHeads: 32 }
}

const addon = loadAddon()
if (addon === null) {
  console.error('bench/blocks needs the native addon; run `npm install` and check that it built')
  process.exit(1)
}

const gb = (x: number): string => (x / 1e9).toFixed(1)

function randomValues (count: number, scale: number, seed: number): Float32Array {
  const out = new Float32Array(count)
  let state = seed >>> 0
  for (let i = 0; i < count; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    out[i] = ((state / 2 ** 32) * 2 - 1) * scale
  }
  return out
}

const nativeMs = new Map<string, { decodeMs: number, prefillMs: number }>()
const layerFigures: LayerFigure[] = []
const python = args.torch === 'none' || spawnSync(args.torch, ['-c', 'import torch'], { stdio: 'ignore' }).status !== 0 ? null : args.torch
if (python === null && args.torch !== 'none') console.log(`(no torch column: ${args.torch} cannot import torch; pass --torch PYTHON)`)

/**
 * Per-layer decode (1 token at KV length 128) and prefill-128 ms of the torch backend, on a random
 * checkpoint of the shape written to a scratch folder (the worker loads from files, as it does in a
 * node).
 */
async function torchLayerMs (shape: { hidden: number, intermediate: number, heads: number, kvHeads: number }, format: 'f32' | 'bf16'): Promise<{ decodeMs: number, prefillMs: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'bmrt-bench-torch-'))
  try {
    await makeTestModel(dir, { layers: LAYERS, ...shape, vocab: 32, dtype: format === 'bf16' ? 'bf16' : 'f32' })
    const span = await loadBlockSpan(dir, 0, LAYERS, { backend: 'torch', python: python!, threads, format })
    try {
      const prompt = randomValues(CONTEXT * shape.hidden, 1, 8)
      const token = randomValues(shape.hidden, 1, 9)
      const session = span.openSession(CONTEXT + 1)
      const prefill: number[] = []
      for (let i = 0; i < Math.max(3, Math.ceil(repeats / 2)); i++) {
        const started = performance.now()
        await span.forward(session, prompt, 0)
        prefill.push((performance.now() - started) / LAYERS)
      }
      const decode: number[] = []
      for (let i = 0; i < repeats; i++) {
        const started = performance.now()
        await span.forward(session, token, CONTEXT)
        decode.push((performance.now() - started) / LAYERS)
      }
      return { decodeMs: median(decode), prefillMs: median(prefill) }
    } finally {
      span.close()
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

console.log(`bench/blocks: ${threads} threads, kernels: ${addon.kernelFamily()}, medians of ${repeats}`)
const bandwidth = await addon.probe('bandwidth', threads, 1)
const fmaPeak = await addon.probe('fma', threads, 1)
const bf16Peak = await addon.probe('bf16', threads, 1)
console.log(`machine: read bandwidth ${gb(bandwidth)} GB/s, fp32 FMA peak ${gb(fmaPeak)} GFLOP/s, bf16 dot peak ${bf16Peak > 0 ? `${gb(bf16Peak)} GFLOP/s` : 'n/a'}`)
console.log('')
console.log('layer       format  weights MB  decode ms  GB/s  %bw   prefill-128 ms  GFLOP/s  %peak')

for (const shapeName of args.shapes.split(',')) {
  const shape = SHAPES[shapeName]
  if (shape === undefined) throw new Error(`unknown shape ${shapeName}: use ${Object.keys(SHAPES).join(', ')}`)
  const headDim = shape.hidden / shape.heads
  const config = parseConfig({ model_type: 'llama', hidden_size: shape.hidden, intermediate_size: shape.intermediate, num_hidden_layers: 1, num_attention_heads: shape.heads, num_key_value_heads: shape.kvHeads, vocab_size: 32000 })
  const q = shape.heads * headDim
  const kv = shape.kvHeads * headDim
  const matrices: Array<[number, number]> = [[q, shape.hidden], [kv, shape.hidden], [kv, shape.hidden], [shape.hidden, q], [shape.intermediate, shape.hidden], [shape.intermediate, shape.hidden], [shape.hidden, shape.intermediate]]
  const params = matrices.reduce((sum, [r, c]) => sum + r * c, 0)
  // Weights scaled like a trained model's (1/sqrt(fan-in)), so activations stay finite.
  const tensorsBySuffix: Record<string, Float32Array | null> = {
    'input_layernorm.weight': new Float32Array(shape.hidden).fill(1),
    'self_attn.q_proj.weight': randomValues(q * shape.hidden, 1 / Math.sqrt(shape.hidden), 1),
    'self_attn.k_proj.weight': randomValues(kv * shape.hidden, 1 / Math.sqrt(shape.hidden), 2),
    'self_attn.v_proj.weight': randomValues(kv * shape.hidden, 1 / Math.sqrt(shape.hidden), 3),
    'self_attn.o_proj.weight': randomValues(shape.hidden * q, 1 / Math.sqrt(q), 4),
    'post_attention_layernorm.weight': new Float32Array(shape.hidden).fill(1),
    'mlp.gate_proj.weight': randomValues(shape.intermediate * shape.hidden, 1 / Math.sqrt(shape.hidden), 5),
    'mlp.up_proj.weight': randomValues(shape.intermediate * shape.hidden, 1 / Math.sqrt(shape.hidden), 6),
    'mlp.down_proj.weight': randomValues(shape.hidden * shape.intermediate, 1 / Math.sqrt(shape.intermediate), 7)
  }
  const tensors = LAYER_TENSOR_SUFFIXES.map(s => tensorsBySuffix[s] ?? null)
  const prompt = randomValues(CONTEXT * shape.hidden, 1, 8)
  const token = randomValues(shape.hidden, 1, 9)

  for (const format of args.formats.split(',') as WeightFormat[]) {
    const span = new addon.BlockSpan({
      hidden: shape.hidden, intermediate: shape.intermediate, heads: shape.heads, kvHeads: shape.kvHeads, headDim,
      rmsNormEps: 1e-5, ropeInverseFrequencies: ropeInverseFrequencies(config), layers: LAYERS, format, threads
    })
    for (let layer = 0; layer < LAYERS; layer++) span.setLayer(layer, tensors)
    const session = span.openSession(CONTEXT + 1)
    const prefill: number[] = []
    for (let i = 0; i < Math.max(3, Math.ceil(repeats / 2)); i++) {
      const started = performance.now()
      await span.forward([{ session, hidden: prompt, position: 0 }])
      prefill.push((performance.now() - started) / LAYERS)
    }
    // This machine's bandwidth swings between runs (a shared VM), so each decode sample is paired
    // with a bandwidth probe taken just before it, and the share is the median of the pairs.
    const bytes = matrices.reduce((sum, [r, c]) => sum + storedMatrixBytes(format, r, c), 0)
    const decode: number[] = []
    const shares: number[] = []
    for (let i = 0; i < repeats; i++) {
      const probe = await addon.probe('bandwidth', threads, 0.1)
      const started = performance.now()
      await span.forward([{ session, hidden: token, position: CONTEXT }]) // KV length 128 every time
      const ms = (performance.now() - started) / LAYERS
      decode.push(ms)
      shares.push(bytes / (ms / 1000) / probe)
    }
    span.close()
    const decodeMs = median(decode)
    const prefillMs = median(prefill)
    const streamed = bytes / (decodeMs / 1000)
    const flops = 2 * params * CONTEXT / (prefillMs / 1000)
    const peak = format === 'bf16' && bf16Peak > 0 ? bf16Peak : fmaPeak
    console.log(`${shapeName.padEnd(11)} ${format.padEnd(6)} ${(bytes / 1e6).toFixed(0).padStart(10)} ${decodeMs.toFixed(2).padStart(10)} ${gb(streamed).padStart(5)} ${(100 * median(shares)).toFixed(0).padStart(4)}% ${prefillMs.toFixed(1).padStart(15)} ${gb(flops).padStart(8)} ${(100 * flops / peak).toFixed(0).padStart(5)}%`)
    nativeMs.set(`${shapeName} ${format}`, { decodeMs, prefillMs })
    layerFigures.push({ shape: shapeName, format, weightBytes: bytes, decodeMs })
  }
  if (python !== null) {
    for (const format of (['f32', 'bf16'] as const).filter(f => args.formats.split(',').includes(f))) {
      const torch = await torchLayerMs(shape, format)
      const native = nativeMs.get(`${shapeName} ${format}`)!
      const bytes = matrices.reduce((sum, [r, c]) => sum + storedMatrixBytes(format, r, c), 0)
      console.log(`${shapeName.padEnd(11)} ${`torch ${format}`.padEnd(10)} ${torch.decodeMs.toFixed(2).padStart(6)} ms decode (${gb(bytes / (torch.decodeMs / 1000))} GB/s, native ${(torch.decodeMs / native.decodeMs).toFixed(1)}x faster), prefill-128 ${torch.prefillMs.toFixed(1)} ms (native ${(torch.prefillMs / native.prefillMs).toFixed(1)}x faster)`)
    }
  }
}
console.log('')
console.log('decode %bw: weight bytes / time against a read-bandwidth probe taken just before each sample (median of the pairs); prefill %peak: 2 x matmul parameters x 128 tokens / time against the fp32 FMA peak (bf16: the bf16 dot peak)')

const client = await clientHeadMs()
const clientGBps = client.bytes / (client.ms / 1000) / 1e9
console.log(`client lm_head (native, bf16, ${threads} threads, [${CLIENT_VOCAB}, ${CLIENT_HIDDEN}]): ${client.ms.toFixed(2)} ms per token, ${clientGBps.toFixed(1)} GB/s`)

if (args.save !== undefined) {
  const figures: BlockFigures = { device: 'cpu', threads, kernels: addon.kernelFamily(), readGBps: bandwidth / 1e9, layers: layerFigures, clientGBps }
  await writeFile(args.save, `${JSON.stringify(figures, null, 2)}\n`)
  console.log(`saved the figures to ${args.save} (bmrt plan --figures ${args.save})`)
}

/**
 * Median time of the client's logits for one token: the native head's final norm and bf16 lm_head
 * on `threads` threads (what a client runs), on dummy weights with a TinyLlama-sized vocabulary and
 * hidden size.
 */
async function clientHeadMs (): Promise<{ ms: number, bytes: number }> {
  const config = parseConfig({ model_type: 'llama', hidden_size: CLIENT_HIDDEN, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 16, vocab_size: CLIENT_VOCAB }, 'bench:blocks')
  const head = await loadHead(new DummyWeights(), config, { backend: 'native', format: 'bf16', threads })
  try {
    const hidden = randomValues(CLIENT_HIDDEN, 1, 10)
    const samples: number[] = []
    for (let i = 0; i < repeats; i++) {
      const started = performance.now()
      await head.logits(hidden)
      samples.push(performance.now() - started)
    }
    return { ms: median(samples), bytes: CLIENT_VOCAB * CLIENT_HIDDEN * 2 }
  } finally {
    head.close()
  }
}
