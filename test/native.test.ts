// The native addon against the JS reference: same numbers in fp32, bounded drift in the reduced
// formats, isolated sessions, batches, clear errors, and an event loop that keeps running.
// Skipped (with a message) where the addon did not build, unless BMRT_REQUIRE_NATIVE=1 (CI).

import assert from 'node:assert/strict'
import { Checkpoint } from '../src/inference/checkpoint.js'
import { loadConfig, type ModelConfig } from '../src/inference/config.js'
import { loadJsSpan } from '../src/inference/js-backend.js'
import type { WeightFormat } from '../src/inference/dtype.js'
import { loadNativeSpan, type NativeBlockSpan } from '../src/inference/native-backend.js'
import type { BlockSpan } from '../src/inference/backend.js'
import { LocalModel } from '../src/inference/model.js'
import { collect, generate } from '../src/inference/generate.js'
import { makeTestModel, type TestModelSpec } from '../src/inference/test-model.js'
import { argmax } from '../src/inference/sampling.js'
import { BUNDLED_MODEL, maxAbsDiff, randomHidden, scratchDir, skipWithoutAddon } from './helpers.js'
import { EXPECTED } from './expected.js'

const SHAPES: Array<{ name: string, spec: TestModelSpec }> = [
  { name: 'MHA, 1 block', spec: { layers: 1, hidden: 64, intermediate: 96, heads: 4, vocab: 32 } },
  { name: 'GQA 8/2, 3 blocks, biases', spec: { layers: 3, hidden: 96, intermediate: 200, heads: 8, kvHeads: 2, headDim: 12, vocab: 32, attentionBias: true, mlpBias: true } },
  { name: 'GQA 4/1, llama3 rope, BF16 checkpoint', spec: { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 1, vocab: 32, dtype: 'bf16', ropeTheta: 500000, ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } } },
  { name: 'mistral sliding window 4, 5 blocks', spec: { modelType: 'mistral', layers: 5, hidden: 32, intermediate: 64, heads: 4, kvHeads: 2, vocab: 32, slidingWindow: 4 } }
]

async function open (dir: string, backend: 'js' | 'native', format?: WeightFormat, start = 0, end?: number, maxCacheTokens?: number): Promise<{ span: BlockSpan, config: ModelConfig }> {
  const config = await loadConfig(dir)
  const checkpoint = await Checkpoint.open(dir)
  try {
    const last = end ?? config.numLayers
    const span = backend === 'js'
      ? await loadJsSpan(checkpoint, config, start, last)
      : await loadNativeSpan(checkpoint, config, start, last, { format, threads: 2, maxCacheTokens })
    return { span, config }
  } finally {
    await checkpoint.close()
  }
}

/** Two sessions, interleaved: a 7-token prefill each, then 5 single-token steps each. */
async function prefillThenDecode (span: BlockSpan, width: number): Promise<Float32Array> {
  const inputs = [randomHidden(12, width, 1), randomHidden(12, width, 2)]
  const sessions = inputs.map(() => span.openSession(12))
  const outputs: number[][] = [[], []]
  for (let s = 0; s < 2; s++) outputs[s].push(...await span.forward(sessions[s], inputs[s].subarray(0, 7 * width)))
  for (let t = 7; t < 12; t++) {
    for (let s = 0; s < 2; s++) outputs[s].push(...await span.forward(sessions[s], inputs[s].subarray(t * width, (t + 1) * width)))
  }
  sessions.forEach(id => span.closeSession(id))
  return Float32Array.from([...outputs[0], ...outputs[1]])
}

function relativeRms (actual: Float32Array, expected: Float32Array): number {
  let err = 0
  let ref = 0
  for (let i = 0; i < expected.length; i++) {
    err += (actual[i] - expected[i]) ** 2
    ref += expected[i] ** 2
  }
  return Math.sqrt(err / ref)
}

describe('native addon', function () {
  before(function () { skipWithoutAddon(this) })

  let root: string
  let cleanup: () => Promise<void>
  before(async () => { ({ dir: root, cleanup } = await scratchDir()) })
  after(async () => await cleanup?.())

  for (const [index, { name, spec }] of SHAPES.entries()) {
    it(`${name}: fp32 matches the JS reference within 1e-4 (prefill, decode, two sessions interleaved)`, async () => {
      const dir = `${root}/shape-${index}`
      await makeTestModel(dir, { ...spec, seed: 40 + index })
      const js = await open(dir, 'js')
      const native = await open(dir, 'native', 'f32')
      const expected = await prefillThenDecode(js.span, js.config.hiddenSize)
      const actual = await prefillThenDecode(native.span, js.config.hiddenSize)
      const diff = maxAbsDiff(expected, actual)
      assert.ok(diff <= 1e-4, `max abs diff ${diff}`)
      native.span.close()
    })
  }

  it('reduced weight formats stay close to fp32 on a random model (drift reported)', async () => {
    const dir = `${root}/formats`
    await makeTestModel(dir, { layers: 4, hidden: 128, intermediate: 320, heads: 8, kvHeads: 2, vocab: 32, seed: 9 })
    const reference = await prefillThenDecode((await open(dir, 'js')).span, 128)
    // Relative RMS error of the span's output over 24 tokens; measured values are printed.
    const bounds: Record<string, number> = { bf16: 0.015, f16: 0.002, int8: 0.04, int4: 0.5 }
    for (const format of ['bf16', 'f16', 'int8', 'int4'] as const) {
      const native = await open(dir, 'native', format)
      const drift = relativeRms(await prefillThenDecode(native.span, 128), reference)
      console.log(`      ${format}: relative RMS error ${drift.toExponential(2)} (bound ${bounds[format]})`)
      assert.ok(drift > 0 && drift <= bounds[format], `${format} drift ${drift}`)
      native.span.close()
    }
  })

  it('reduced weight formats on the bundled model: logit drift and greedy agreement with fp32 (reported)', async () => {
    const fp32 = await LocalModel.load(BUNDLED_MODEL, { backend: 'native', format: 'f32' })
    const prompt = fp32.tokenizer.encode(EXPECTED[0].prompt)
    const ids = [...prompt, ...EXPECTED[0].ids]
    const logitsOf = async (model: LocalModel): Promise<Float32Array[]> => {
      const session = await model.openSession(ids.length)
      const out: Float32Array[] = [await session.step(prompt)]
      for (const id of EXPECTED[0].ids.slice(0, -1)) out.push(await session.step([id]))
      await session.close()
      return out
    }
    const reference = await logitsOf(fp32)
    const minAgreement: Record<string, number> = { bf16: 0.95, f16: 1, int8: 0.9, int4: 0.5 }
    for (const format of ['bf16', 'f16', 'int8', 'int4'] as const) {
      const model = await LocalModel.load(BUNDLED_MODEL, { backend: 'native', format })
      const logits = await logitsOf(model)
      let diff = 0
      let agree = 0
      for (let i = 0; i < logits.length; i++) {
        diff += logits[i].reduce((sum, v, j) => sum + Math.abs(v - reference[i][j]), 0) / logits[i].length
        if (argmax(logits[i]) === argmax(reference[i])) agree++
      }
      const agreement = agree / logits.length
      console.log(`      ${format}: mean |logit diff| ${(diff / logits.length).toFixed(4)}, greedy agreement ${(100 * agreement).toFixed(0)}% over ${logits.length} teacher-forced steps`)
      assert.ok(agreement >= minAgreement[format], `${format} agreement ${agreement}`)
      model.close()
    }
    fp32.close()
  })

  it('greedy generation on the bundled model equals the reference token ids in fp32', async () => {
    const model = await LocalModel.load(BUNDLED_MODEL, { backend: 'native', format: 'f32' })
    assert.equal(model.blocks.backend, 'native')
    for (const expected of EXPECTED) {
      const result = await collect(generate(model, model.tokenizer.encode(expected.prompt), { maxNewTokens: 50 }))
      assert.deepEqual(result.ids, expected.ids, expected.prompt)
    }
    model.close()
  })

  it('a batch of sessions gives what each session gives alone', async () => {
    const dir = `${root}/batch`
    await makeTestModel(dir, { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, vocab: 32 })
    const span = (await open(dir, 'native', 'f32')).span as NativeBlockSpan
    const a = randomHidden(5, 64, 3)
    const b = randomHidden(2, 64, 4)
    const alone = [span.openSession(8), span.openSession(8)]
    const expectA = await span.forward(alone[0], a)
    const expectB = await span.forward(alone[1], b)
    const together = [span.openSession(8), span.openSession(8)]
    const [gotA, gotB] = await span.forwardBatch([{ session: together[0], hidden: a }, { session: together[1], hidden: b }])
    assert.ok(maxAbsDiff(expectA, gotA) <= 1e-5)
    assert.ok(maxAbsDiff(expectB, gotB) <= 1e-5)
    assert.equal(span.sessionLength(together[0]), 5)
    assert.equal(span.sessionLength(together[1]), 2)
    await assert.rejects(span.forwardBatch([{ session: together[0], hidden: a.subarray(0, 64) }, { session: together[0], hidden: a.subarray(0, 64) }]), /appears twice in one batch/)
    span.close()
  })

  it('gives back the workspace of a long forward, keeps a decode step\'s, and still computes right (issue 20, row 13)', async () => {
    const dir = `${root}/workspace`
    await makeTestModel(dir, { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, vocab: 32 })
    const span = (await open(dir, 'native', 'f32')).span as NativeBlockSpan
    const reference = (await open(dir, 'js')).span
    const input = randomHidden(1026, 64, 7)
    const [native, js] = [span, reference].map(s => s.openSession(1026))
    // A decode step's workspace is kept from one step to the next.
    const step = async (s: BlockSpan, id: number, from: number, to: number): Promise<Float32Array> => await s.forward(id, input.subarray(from * 64, to * 64))
    await step(span, span.openSession(1), 0, 1)
    const decode = span.workspaceBytes()
    assert.ok(decode > 0, 'a decode step keeps its workspace')
    // A 1024-token prefill (a hostile peer's batch frame, say) gives its 2.4 MB back when it ends.
    const prefill = await step(span, native, 0, 1024)
    assert.ok(span.workspaceBytes() <= decode, `after a 1024-token forward the span keeps a ${span.workspaceBytes()}-byte workspace, a decode step ${decode}`)
    const decoded = [await step(span, native, 1024, 1025)]
    const kept = span.workspaceBytes()
    decoded.push(await step(span, native, 1025, 1026))
    assert.ok(kept > 0 && span.workspaceBytes() >= kept, 'decode steps after it keep their workspace')
    // And the regrown workspace computes what the JS reference does.
    assert.ok(maxAbsDiff(prefill, await step(reference, js, 0, 1024)) <= 1e-4)
    for (const [i, out] of decoded.entries()) assert.ok(maxAbsDiff(out, await step(reference, js, 1024 + i, 1025 + i)) <= 1e-4)
    span.close()
    reference.close()
  })

  it('keeps the event loop running during a long forward', async () => {
    const dir = `${root}/long`
    await makeTestModel(dir, { layers: 8, hidden: 512, intermediate: 1024, heads: 8, vocab: 32 })
    const { span } = await open(dir, 'native', 'f32')
    const session = span.openSession(256)
    let turns = 0
    let done = false
    const spin = (): void => { if (!done) { turns++; setImmediate(spin) } }
    setImmediate(spin)
    await span.forward(session, randomHidden(256, 512))
    done = true
    assert.ok(turns >= 2, `the event loop turned ${turns} times during the forward`)
    span.close()
  })

  it('refuses bad calls with clear errors and goes on serving', async () => {
    const dir = `${root}/errors`
    await makeTestModel(dir, { layers: 1, hidden: 32, intermediate: 64, heads: 4, vocab: 32 })
    const { span } = await open(dir, 'native', 'f32', 0, 1, 10)
    const session = span.openSession(4)
    await assert.rejects(span.forward(session, new Float32Array(33)), { name: 'InvalidInputError', code: 'INVALID_ARGUMENT', message: /hidden states must be \[tokens, 32\] floats, got 33 values/ })
    await assert.rejects(span.forward(session, randomHidden(5, 32)), { code: 'INVALID_ARGUMENT', message: /at most 4 tokens/ })
    await assert.rejects(span.forward(session, new Float32Array(32).fill(NaN)), /NaN or infinite/)
    await assert.rejects(span.forward(session, randomHidden(1, 32), 3), /position 3 is outside the session's 0 cached tokens/)
    await assert.rejects(span.forward(999, randomHidden(1, 32)), /unknown or closed session 999/)
    const first = span.forward(session, randomHidden(1, 32))
    await assert.rejects(span.forward(session, randomHidden(1, 32)), /session \d+ is already running a step/)
    await first
    assert.throws(() => span.openSession(7), { name: 'CacheFullError', code: 'CACHE_FULL', message: /attention cache full: 4 of 10 tokens reserved/ })
    assert.throws(() => span.openSession(0), /positive integer/)
    const out = await span.forward(session, randomHidden(4, 32), 0) // rewound to the start: 4 fit again
    assert.equal(out.length, 128)
    span.closeSession(session)
    const again = span.openSession(10) // the closed session's reservation came back
    assert.equal((await span.forward(again, randomHidden(1, 32))).length, 32)
    span.close()
    assert.throws(() => span.openSession(1), /this block span is closed/)
  })

  it('reads a model from a path longer than Windows\' 260-character limit', async () => {
    // On Windows the addon opens such paths in their \\?\ form; elsewhere this is any deep path.
    const { cp } = await import('node:fs/promises')
    const { join } = await import('node:path')
    const dir = join(root, ...Array.from({ length: 6 }, (_, i) => `a-folder-name-of-fifty-characters-to-make-it-long-${i}`), 'stories260K')
    assert.ok(dir.length > 300)
    await cp(BUNDLED_MODEL, dir, { recursive: true })
    const model = await LocalModel.load(dir, { backend: 'native', format: 'f32' })
    const result = await collect(generate(model, model.tokenizer.encode(EXPECTED[0].prompt), { maxNewTokens: 20 }))
    assert.deepEqual(result.ids, EXPECTED[0].ids.slice(0, 20))
    model.close()
  })

  it('names the tensor and file when the checkpoint is truncated', async () => {
    const dir = `${root}/truncated`
    await makeTestModel(dir, { layers: 2, hidden: 32, intermediate: 64, heads: 4, vocab: 32 })
    const { truncate } = await import('node:fs/promises')
    const checkpoint = await Checkpoint.open(dir)
    const info = await checkpoint.info('model.layers.1.mlp.down_proj.weight')
    await checkpoint.close()
    await truncate(`${dir}/model.safetensors`, info!.offset + 8)
    await assert.rejects(open(dir, 'native', 'f32', 1, 2), /model\.safetensors: tensor 'model\.layers\.1\.mlp\.down_proj\.weight' needs bytes .* but the file has only .* \(truncated download\?\) \(block 1\)/)
  })
})
