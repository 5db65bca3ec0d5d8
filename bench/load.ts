// How fast blocks load onto a device: blocks --blocks of --model, from its safetensors files and
// with dummy weights, on the native backend, in one run. Prints seconds and GB/s of weights per
// load (the file's bytes go through the page cache, so a second read is the memory-to-device
// path; --drop-caches asks the kernel to forget the files first, as root), and compares one
// prefill through both spans (relative max difference: the same weights, up to the checkpoint
// rounding the norms that dummy spans keep in fp32).
//   npm run bench:load -- --model DIR [--blocks 0:32] [--device cuda] [--drop-caches] [--json FILE]

import '../src/util/polyfill.js'
import { spawnSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import type { BlockSpan } from '../src/inference/backend.js'
import { loadConfig } from '../src/inference/config.js'
import { loadBlockSpan } from '../src/inference/load-span.js'

const { values: o } = parseArgs({
  options: {
    model: { type: 'string' },
    blocks: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    'drop-caches': { type: 'boolean', default: false },
    json: { type: 'string' }
  }
})
if (o.model === undefined) throw new Error('give --model DIR')
const config = await loadConfig(o.model)
const [start, end] = (o.blocks ?? `0:${config.numLayers}`).split(':').map(Number)

async function load (loadFormat: 'safetensors' | 'dummy', label: string): Promise<{ span: BlockSpan, seconds: number, gbPerSecond: number, label: string }> {
  const started = performance.now()
  const span = await loadBlockSpan(o.model!, start, end, { backend: 'native', device: o.device, loadFormat })
  const seconds = (performance.now() - started) / 1000
  const result = { span, seconds, gbPerSecond: span.weightBytes / 1e9 / seconds, label }
  console.log(`  ${label.padEnd(34)} ${seconds.toFixed(2).padStart(7)} s  ${result.gbPerSecond.toFixed(2).padStart(6)} GB/s  (${(span.weightBytes / 2 ** 30).toFixed(2)} GiB on ${(span as { device?: string }).device ?? 'cpu'})`)
  return result
}

/** A 16-token prefill of fixed inputs. */
async function prefill (span: BlockSpan): Promise<Float32Array> {
  const session = span.openSession(16)
  try {
    return await span.forward(session, new Float32Array(16 * config.hiddenSize).map((_, i) => Math.sin(i * 0.37)))
  } finally {
    span.closeSession(session)
  }
}

console.log(`loading blocks ${start}:${end} of ${o.model} (${config.numLayers} blocks, hidden ${config.hiddenSize}) on ${o.device}`)
const runs = []
if (o['drop-caches'] === true) {
  const dropped = spawnSync('sh', ['-c', 'sync && echo 3 > /proc/sys/vm/drop_caches']).status === 0
  console.log(dropped ? '  (page cache dropped)' : '  (could not drop the page cache: not root?)')
  runs.push(await load('safetensors', dropped ? 'safetensors, cold page cache' : 'safetensors'))
} else {
  runs.push(await load('safetensors', 'safetensors'))
}
const fromFiles = await prefill(runs[0].span)
runs[0].span.close()
runs.push(await load('safetensors', 'safetensors, files in the page cache'))
runs[1].span.close()
runs.push(await load('dummy', 'dummy'))
const dummy = await prefill(runs[2].span)
runs[2].span.close()
let diff = 0
let scale = 0
for (let i = 0; i < dummy.length; i++) {
  diff = Math.max(diff, Math.abs(dummy[i] - fromFiles[i]))
  scale = Math.max(scale, Math.abs(fromFiles[i]))
}
console.log(`  a 16-token prefill through the span from files and the dummy one: relative max difference ${(diff / scale).toExponential(2)}`)
if (o.json !== undefined) {
  await writeFile(o.json, JSON.stringify({ model: o.model, blocks: `${start}:${end}`, device: o.device, runs: runs.map(({ label, seconds, gbPerSecond, span }) => ({ label, seconds, gbPerSecond, weightBytes: span.weightBytes })), relativeDifference: diff / scale }, null, 2))
}
