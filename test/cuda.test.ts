// The GPU path end to end, where the addon was built with CUDA and a GPU is there (skipped
// elsewhere, saying so, unless BMRT_REQUIRE_CUDA=1, which fails instead): the bundled model's
// greedy ids on the GPU in fp32, locally and through a swarm of real bmrt-node processes whose
// middle span runs on the GPU; dummy weights made on the GPU against the CPU's; the GPU head
// against the CPU head.

import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { parseConfig } from '../src/inference/config.js'
import { DummyWeights } from '../src/inference/dummy-weights.js'
import { collect, generate } from '../src/inference/generate.js'
import { loadHead } from '../src/inference/load-span.js'
import { LocalModel } from '../src/inference/model.js'
import { loadAddon, nativeUnavailableReason } from '../src/inference/native-backend.js'
import { makeTestModel } from '../src/inference/test-model.js'
import { EXPECTED } from './expected.js'
import { BUNDLED_MODEL, maxAbsDiff, randomHidden, runCommand, scratchDir, startNode } from './helpers.js'

function cudaDevices (): number {
  return loadAddon()?.cudaDevices?.().length ?? 0
}

describe('CUDA: the bundled model, dummy weights and the head on a GPU', function () {
  this.timeout(180_000)
  before(function () {
    if (cudaDevices() > 0) return
    const why = loadAddon() === null ? `the native addon is not available (${nativeUnavailableReason()})` : loadAddon()!.CudaBlockSpan === undefined ? 'the addon was built without CUDA' : 'no CUDA device'
    if (process.env.BMRT_REQUIRE_CUDA === '1') throw new Error(`BMRT_REQUIRE_CUDA=1 but ${why}`)
    console.log(`    (skipped: ${why})`)
    this.skip()
  })
  let root: string
  let cleanup: () => Promise<void>
  before(async () => { ({ dir: root, cleanup } = await scratchDir()) })
  after(async () => await cleanup?.())

  it('the bundled model\'s reference greedy ids on the GPU in fp32 (blocks and head)', async () => {
    const model = await LocalModel.load(BUNDLED_MODEL, { backend: 'native', device: 'cuda', format: 'f32' })
    try {
      assert.equal((model.blocks as { device?: string }).device, 'cuda:0')
      assert.equal(model.head.device, 'cuda:0')
      for (const expected of EXPECTED) {
        const result = await collect(generate(model, expected.promptIds, { maxNewTokens: expected.ids.length, ignoreEos: true }))
        assert.deepEqual(result.ids, expected.ids, expected.prompt)
      }
    } finally {
      model.close()
    }
  })

  it('the bundled model\'s reference greedy ids through a swarm whose middle span runs on the GPU in fp32', async () => {
    const servers: ChildProcess[] = []
    try {
      const common = ['--host-addrs', '/ip4/127.0.0.1/tcp/0', '--throughput', '1']
      const first = await startNode([...common, '--new-swarm', '--blocks', '0:2', '--device', 'cpu'])
      servers.push(first.process)
      const address = first.output.find(l => l.includes('share as --initial-peers'))!.split(': ')[1]
      const gpu = await startNode([...common, '--initial-peers', address, '--blocks', '2:4', '--device', 'cuda', '--dtype', 'f32'])
      servers.push(gpu.process)
      assert.ok(gpu.output.some(l => /loaded blocks 2:4 .* cuda:0, f32/.test(l)), gpu.output.join('\n'))
      servers.push((await startNode([...common, '--initial-peers', address, '--blocks', '4:5', '--device', 'cpu'])).process)
      const expected = EXPECTED[0]
      const run = await runCommand('bmrt', ['generate', '--initial-peers', address, '--prompt', expected.prompt, '--max-new-tokens', String(expected.ids.length),
        '--ignore-eos', '--show-ids'])
      assert.equal(run.code, 0, run.stderr)
      // The three spans tile the model, so the route runs blocks 2:4 on the GPU.
      assert.equal(/generated ids: (.*)/.exec(run.stderr)![1], JSON.stringify(expected.ids))
    } finally {
      for (const server of servers) server.kill('SIGKILL')
    }
  })

  it('dummy weights made on the GPU compute what the CPU\'s compute (f32 within 1e-4, bf16 within 2e-2 of the largest value)', async () => {
    const dir = join(root, 'dummy')
    await makeTestModel(dir, { layers: 4, hidden: 512, intermediate: 1376, heads: 8, kvHeads: 2, vocab: 2000, tokenizerFrom: BUNDLED_MODEL })
    const cpu = await LocalModel.load(dir, { backend: 'native', loadFormat: 'dummy', format: 'f32' })
    const ids = [1, 5, 17, 33, 2, 60, 41, 9]
    const logits = async (model: LocalModel): Promise<Float32Array[]> => {
      const session = await model.openSession(16)
      const out = [await session.step(ids)]
      for (const id of [7, 8, 9]) out.push(await session.step([id]))
      await session.close()
      return out
    }
    try {
      const expected = await logits(cpu)
      for (const [format, bound] of [['f32', 1e-4], ['bf16', 2e-2]] as const) {
        const gpu = await LocalModel.load(dir, { backend: 'native', loadFormat: 'dummy', device: 'cuda', format })
        try {
          const got = await logits(gpu)
          for (const [i, step] of got.entries()) {
            const scale = Math.max(...expected[i].map(Math.abs))
            const diff = maxAbsDiff(step, expected[i])
            assert.ok(diff <= bound * (format === 'f32' ? 1 : scale), `${format}, step ${i}: ${diff} (largest logit ${scale})`)
          }
        } finally {
          gpu.close()
        }
      }
    } finally {
      cpu.close()
    }
  })

  it('the GPU head gives the CPU head\'s logits for a 70B-sized vocabulary and hidden size', async () => {
    const config = parseConfig({ model_type: 'llama', hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 1, num_attention_heads: 64, num_key_value_heads: 8, vocab_size: 32000, torch_dtype: 'bfloat16' }, 'test')
    const cpu = await loadHead(new DummyWeights(), config, { backend: 'native', format: 'bf16' })
    const gpu = await loadHead(new DummyWeights(), config, { backend: 'native', format: 'bf16', device: 'cuda' })
    try {
      assert.deepEqual(gpu.embed([0, 31999, 5]), cpu.embed([0, 31999, 5]))
      const hidden = randomHidden(2, 8192, 3)
      const expected = await cpu.logits(hidden)
      const scale = Math.max(...expected.map(Math.abs))
      // The GPU rounds the normed input to bf16, the CPU's decode kernels may not: 1e-2 of the largest.
      const diff = maxAbsDiff(await gpu.logits(hidden), expected)
      assert.ok(diff <= 1e-2 * scale, `${diff} (largest logit ${scale})`)
    } finally {
      cpu.close()
      gpu.close()
    }
  })
})
