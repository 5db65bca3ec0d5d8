// Dummy weights (--load-format dummy) and the native head. The JS generator makes the addon's
// values bit for bit; a model made in memory is the model `make-test-model` writes with the same
// seed (same logits, read from files or not, on the js and native backends); the native head (lm_head
// on the CPU's cores) gives the JS head's logits; and a swarm of `bmrt-node --load-format dummy`
// servers gives a dummy client the local dummy model's greedy tokens, under a name that clients of
// real weights never look up.

import assert from 'node:assert/strict'
import { copyFile, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { Checkpoint } from '../src/inference/checkpoint.js'
import { loadConfig } from '../src/inference/config.js'
import { fromFloat32 } from '../src/inference/dtype.js'
import { DUMMY_SEED, DummyWeights, dummyKey, dummyTensorInfo, dummyValues } from '../src/inference/dummy-weights.js'
import { collect, generate } from '../src/inference/generate.js'
import { loadJsHead } from '../src/inference/js-backend.js'
import { loadHead } from '../src/inference/load-span.js'
import { LocalModel } from '../src/inference/model.js'
import { loadAddon } from '../src/inference/native-backend.js'
import { makeTestModel, type TestModelSpec } from '../src/inference/test-model.js'
import { BUNDLED_MODEL, maxAbsDiff, randomHidden, runCommand, scratchDir, skipWithoutAddon, startNode } from './helpers.js'

const SPEC: TestModelSpec = { layers: 3, hidden: 64, intermediate: 96, heads: 8, kvHeads: 2, vocab: 512, attentionBias: true, tokenizerFrom: BUNDLED_MODEL }
const PROMPT = [1, 5, 17, 33, 2, 60, 41, 9]

/** Greedy ids and the prompt's logits of a model. */
async function run (model: LocalModel): Promise<{ ids: number[], logits: Float32Array }> {
  const session = await model.openSession(PROMPT.length + 1)
  const logits = await session.step(PROMPT)
  await session.close()
  const result = await collect(generate(model, PROMPT, { maxNewTokens: 12, ignoreEos: true }))
  return { ids: result.ids, logits }
}

/** A model directory with config.json and the tokenizer only (what --load-format dummy reads). */
async function configOnly (dir: string, from: string): Promise<void> {
  await mkdir(dir, { recursive: true })
  for (const file of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) await copyFile(join(from, file), join(dir, file))
}

describe('dummy weights and the native head', function () {
  this.timeout(120_000)
  before(function () { skipWithoutAddon(this) })
  let root: string
  let cleanup: () => Promise<void>
  before(async () => { ({ dir: root, cleanup } = await scratchDir()) })
  after(async () => await cleanup?.())

  it('the JS generator makes the addon\'s values bit for bit, for block and head tensors of any size', async () => {
    const cases: Array<[string, number[]]> = [
      ['model.layers.0.self_attn.q_proj.weight', [64, 64]], ['model.layers.79.mlp.down_proj.weight', [8, 28672]],
      ['model.layers.3.input_layernorm.weight', [4096]], ['model.layers.2.self_attn.k_proj.bias', [100003]],
      ['model.embed_tokens.weight', [300, 64]], ['model.norm.weight', [64]], ['lm_head.weight', [300, 64]]
    ]
    for (const [name, shape] of cases) {
      const { stream, init } = dummyTensorInfo(name, shape)
      const count = shape.reduce((a, b) => a * b, 1)
      for (const seed of [DUMMY_SEED, 7]) {
        const js = dummyValues(dummyKey(seed, stream), init, count)
        const native = await loadAddon()!.dummyTensor(seed, stream, init.scale, init.offset, count, 'f32')
        assert.deepEqual(new Uint8Array(js.buffer), native, `${name}, seed ${seed}`)
        const bf16 = await loadAddon()!.dummyTensor(seed, stream, init.scale, init.offset, count, 'bf16')
        assert.deepEqual(fromFloat32(js, 'bf16'), bf16, `${name} as bf16, seed ${seed}`)
      }
    }
    // The inits: projections by fan-in, norms around 1.
    const q = await new DummyWeights().readFloat32('model.layers.0.self_attn.q_proj.weight', [64, 64])
    assert.ok(Math.max(...q.map(Math.abs)) <= Math.sqrt(3 / 64) && Math.max(...q.map(Math.abs)) > 0.9 * Math.sqrt(3 / 64))
    const norm = await new DummyWeights().readFloat32('model.norm.weight', [64])
    assert.ok(norm.every(v => v >= 0.9 && v <= 1.1))
    assert.throws(() => dummyTensorInfo('model.layers.0.mystery.weight', [4]), /no tensor 'model.layers.0.mystery.weight'/)
  })

  it('a dummy model is the model make-test-model writes with the same seed: same logits and tokens on js and native, from files or not', async () => {
    const files = join(root, 'written')
    await makeTestModel(files, SPEC)
    const dummy = join(root, 'config-only')
    await configOnly(dummy, files)
    const results: Array<{ what: string, ids: number[], logits: Float32Array }> = []
    for (const backend of ['js', 'native'] as const) {
      for (const [dir, loadFormat] of [[files, 'safetensors'], [dummy, 'dummy']] as const) {
        const model = await LocalModel.load(dir, { backend, loadFormat, format: backend === 'native' ? 'f32' : undefined, threads: 2 })
        try {
          results.push({ what: `${backend} ${loadFormat}`, ...await run(model) })
        } finally {
          model.close()
        }
      }
    }
    for (const r of results.slice(1)) {
      assert.deepEqual(r.ids, results[0].ids, r.what)
      const diff = maxAbsDiff(r.logits, results[0].logits)
      // Same backend: the same weights, so the same numbers; js against native: 1e-4 as always.
      assert.ok(r.what.startsWith('js') ? diff === 0 : diff <= 1e-4, `${r.what}: logits differ by ${diff}`)
    }
    assert.ok(results[2].logits.every((v, i) => v === results[3].logits[i]), 'native: files and dummy give identical logits')
    // bf16: a BF16 checkpoint holds the dummy values rounded (the norms too, which dummy blocks keep
    // in fp32), and the native backend stores bf16 weights for it by default.
    const bf16 = join(root, 'written-bf16')
    await makeTestModel(bf16, { ...SPEC, dtype: 'bf16' })
    const a = await LocalModel.load(bf16, { backend: 'native', threads: 2 })
    const b = await LocalModel.load(bf16, { backend: 'native', threads: 2, loadFormat: 'dummy' })
    try {
      assert.equal((a.blocks as { format?: string }).format, 'bf16')
      const [x, y] = [await run(a), await run(b)]
      const scale = Math.max(...x.logits.map(Math.abs))
      assert.ok(maxAbsDiff(x.logits, y.logits) <= 2e-2 * scale, `bf16 file and dummy: ${maxAbsDiff(x.logits, y.logits)} of ${scale}`)
    } finally {
      a.close()
      b.close()
    }
  })

  it('the native head gives the JS head\'s logits (f32 within 1e-4, bf16 within its rounding), tied or not, and refuses bad ids', async () => {
    for (const tied of [false, true]) {
      const dir = join(root, `head-${String(tied)}`)
      const config = await makeTestModel(dir, { ...SPEC, layers: 1, vocab: 5000, hidden: 96, heads: 8, kvHeads: 8, attentionBias: false, tied })
      const checkpoint = await Checkpoint.open(dir)
      try {
        const js = await loadJsHead(checkpoint, config)
        const native = await loadHead(checkpoint, config, { backend: 'native', format: 'f32', threads: 2 })
        const bf16 = await loadHead(checkpoint, config, { backend: 'native', format: 'bf16', threads: 2 })
        const dummy = await loadHead(new DummyWeights(), config, { backend: 'native', format: 'f32', threads: 2 })
        assert.equal(native.backend, 'native')
        assert.equal(native.device, 'cpu')
        const ids = [0, 4999, 17, 17]
        assert.deepEqual(native.embed(ids), js.embed(ids))
        const hidden = randomHidden(3, config.hiddenSize, 5)
        const expected = await js.logits(hidden)
        assert.ok(maxAbsDiff(await native.logits(hidden), expected) <= 1e-4, `tied ${String(tied)}: f32 native head`)
        assert.deepEqual(await dummy.logits(hidden), await native.logits(hidden), 'the dummy head is the written one')
        const scale = Math.max(...expected.map(Math.abs))
        assert.ok(maxAbsDiff(await bf16.logits(hidden), expected) <= 2e-2 * scale, `tied ${String(tied)}: bf16 native head`)
        assert.throws(() => native.embed([5000]), /token id 5000 is outside the vocabulary \(0..4999\)/)
        assert.throws(() => native.embed([1.5]), /outside the vocabulary/)
        await assert.rejects(native.logits(new Float32Array(config.hiddenSize + 1)), /hidden states must be \[tokens, 96\]/)
        for (const head of [native, bf16, dummy]) head.close()
        await assert.rejects(native.logits(hidden), /closed/)
      } finally {
        await checkpoint.close()
      }
    }
  })

  it('dummy servers in a swarm: a dummy client gets the local dummy model\'s tokens; the swarm knows the model as NAME-dummy', async function () {
    this.timeout(240_000)
    const dir = join(root, 'swarm-model')
    await makeTestModel(dir, SPEC)
    const modelOnly = join(root, 'swarm-config')
    await configOnly(modelOnly, dir)
    await writeFile(join(modelOnly, 'README'), 'config.json and the tokenizer, no weights')
    const local = await runCommand('bmrt', ['generate', '--model', dir, '--prompt', 'Once upon a time', '--max-new-tokens', '16', '--ignore-eos', '--show-ids'])
    assert.equal(local.code, 0, local.stderr)
    const servers: ChildProcess[] = []
    try {
      const common = ['--model', modelOnly, '--load-format', 'dummy', '--host-addrs', '/ip4/127.0.0.1/tcp/0', '--throughput', '1']
      const first = await startNode([...common, '--new-swarm', '--blocks', '0:2'])
      servers.push(first.process)
      const address = first.output.find(l => l.includes('share as --initial-peers'))!.split(': ')[1]
      assert.ok(first.output.some(l => l.includes('with dummy weights')), first.output.join('\n'))
      servers.push((await startNode([...common, '--initial-peers', address, '--blocks', '2:3'])).process)
      const remote = await runCommand('bmrt', ['generate', '--model', modelOnly, '--load-format', 'dummy', '--initial-peers', address,
        '--prompt', 'Once upon a time', '--max-new-tokens', '16', '--ignore-eos', '--show-ids'])
      assert.equal(remote.code, 0, remote.stderr)
      const ids = (text: string): string => /generated ids: (.*)/.exec(text)![1]
      assert.equal(ids(remote.stderr), ids(local.stderr))
      const status = await runCommand('bmrt', ['swarm', 'status', '--initial-peers', address, '--json'])
      assert.deepEqual(JSON.parse(status.stdout).models.map((m: { name: string }) => m.name), ['swarm-config-dummy'])
      // A client that loads real weights looks for "swarm-config": nobody serves it.
      const real = await runCommand('bmrt', ['generate', '--model', modelOnly, '--initial-peers', address, '--max-new-tokens', '2'])
      assert.notEqual(real.code, 0)
      assert.match(real.stderr, /no model\.safetensors or model\.safetensors\.index\.json/)
    } finally {
      for (const server of servers) server.kill('SIGKILL')
    }
    assert.equal((await loadConfig(modelOnly)).numLayers, 3)
  })
})
