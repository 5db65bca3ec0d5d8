// The JS reference blocks on random models of several shapes: the KV cache, chunked prefill and
// span splits must all give what one full-sequence pass gives.

import assert from 'node:assert/strict'
import { Checkpoint } from '../src/inference/checkpoint.js'
import { loadConfig, type ModelConfig } from '../src/inference/config.js'
import { loadJsSpan } from '../src/inference/js-backend.js'
import type { BlockSpan } from '../src/inference/backend.js'
import { makeTestModel, type TestModelSpec } from '../src/inference/test-model.js'
import { maxAbsDiff, randomHidden, scratchDir } from './helpers.js'

const SHAPES: Array<{ name: string, spec: TestModelSpec }> = [
  { name: 'MHA, 3 blocks, f32', spec: { layers: 3, hidden: 32, intermediate: 72, heads: 4, vocab: 64 } },
  { name: 'GQA 8/2, biases, tied, bf16', spec: { layers: 4, hidden: 48, intermediate: 96, heads: 8, kvHeads: 2, headDim: 6, vocab: 64, tied: true, attentionBias: true, mlpBias: true, dtype: 'bf16' } },
  { name: 'llama3 rope scaling, f16, 2 shards', spec: { layers: 2, hidden: 32, intermediate: 64, heads: 4, kvHeads: 1, vocab: 64, dtype: 'f16', shards: 2, ropeTheta: 500000, ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } } },
  { name: 'mistral sliding window 5', spec: { modelType: 'mistral', layers: 2, hidden: 32, intermediate: 64, heads: 4, kvHeads: 2, vocab: 64, slidingWindow: 5 } },
  { name: 'Llama-2-70B layout at tiny width: 80 blocks, 64 heads, 8 KV heads', spec: { layers: 80, hidden: 128, intermediate: 32, heads: 64, kvHeads: 8, headDim: 2, vocab: 32 } }
]

async function loadSpan (dir: string, start: number, end: number): Promise<BlockSpan> {
  const checkpoint = await Checkpoint.open(dir)
  try {
    return await loadJsSpan(checkpoint, await loadConfig(dir), start, end)
  } finally {
    await checkpoint.close()
  }
}

/** Runs a fresh session over `hidden` in the given chunk sizes; returns the concatenated outputs. */
async function runChunks (span: BlockSpan, hidden: Float32Array, chunks: number[], width: number): Promise<Float32Array> {
  const session = span.openSession(hidden.length / width)
  const out = new Float32Array(hidden.length)
  let at = 0
  for (const size of chunks) {
    out.set(await span.forward(session, hidden.subarray(at * width, (at + size) * width)), at * width)
    at += size
  }
  span.closeSession(session)
  return out
}

describe('JS reference blocks on random models', function () {
  for (const { name, spec } of SHAPES) {
    describe(name, () => {
      let dir: string
      let cleanup: () => Promise<void>
      let config: ModelConfig
      const tokens = 11
      before(async () => {
        ({ dir, cleanup } = await scratchDir())
        config = await makeTestModel(dir, { ...spec, seed: 3 })
      })
      after(async () => await cleanup())

      it('decoding token by token with the KV cache equals one full-sequence pass (max abs diff <= 1e-5)', async () => {
        const span = await loadSpan(dir, 0, config.numLayers)
        const hidden = randomHidden(tokens, config.hiddenSize)
        const full = await runChunks(span, hidden, [tokens], config.hiddenSize)
        const stepwise = await runChunks(span, hidden, Array(tokens).fill(1), config.hiddenSize)
        assert.ok(full.every(Number.isFinite))
        assert.ok(maxAbsDiff(full, hidden) > 1e-3, 'the blocks changed nothing')
        assert.ok(maxAbsDiff(full, stepwise) <= 1e-5, `diff ${maxAbsDiff(full, stepwise)}`)
      })

      it('chunked prefill equals token by token', async () => {
        const span = await loadSpan(dir, 0, config.numLayers)
        const hidden = randomHidden(tokens, config.hiddenSize, 5)
        const chunked = await runChunks(span, hidden, [4, 3, 1, 3], config.hiddenSize)
        const stepwise = await runChunks(span, hidden, Array(tokens).fill(1), config.hiddenSize)
        assert.ok(maxAbsDiff(chunked, stepwise) <= 1e-5, `diff ${maxAbsDiff(chunked, stepwise)}`)
      })

      it('blocks [0,k) then [k,L) equal blocks [0,L)', async () => {
        const k = Math.floor(config.numLayers / 2)
        const whole = await loadSpan(dir, 0, config.numLayers)
        const first = await loadSpan(dir, 0, k)
        const second = await loadSpan(dir, k, config.numLayers)
        const hidden = randomHidden(tokens, config.hiddenSize, 9)
        const direct = await runChunks(whole, hidden, [6, 5], config.hiddenSize)
        const split = await runChunks(second, await runChunks(first, hidden, [6, 5], config.hiddenSize), [6, 5], config.hiddenSize)
        assert.ok(maxAbsDiff(direct, split) <= 1e-5, `diff ${maxAbsDiff(direct, split)}`)
      })
    })
  }
})

describe('JS reference block sessions', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let span: BlockSpan
  const width = 32
  before(async () => {
    ({ dir, cleanup } = await scratchDir())
    await makeTestModel(dir, { layers: 2, hidden: width, intermediate: 64, heads: 4, kvHeads: 2, vocab: 64 })
    span = await loadSpan(dir, 0, 2)
  })
  after(async () => await cleanup())

  it('keeps sessions isolated when their steps interleave', async () => {
    const a = randomHidden(6, width, 1)
    const b = randomHidden(6, width, 2)
    const aloneA = await runChunks(span, a, [6], width)
    const aloneB = await runChunks(span, b, [6], width)
    const sa = span.openSession(6)
    const sb = span.openSession(6)
    const outA: Float32Array[] = []
    const outB: Float32Array[] = []
    for (let t = 0; t < 6; t++) {
      const [x, y] = await Promise.all([
        span.forward(sa, a.subarray(t * width, (t + 1) * width)),
        span.forward(sb, b.subarray(t * width, (t + 1) * width))
      ])
      outA.push(x)
      outB.push(y)
    }
    assert.ok(maxAbsDiff(aloneA, Float32Array.from(outA.flatMap(x => [...x]))) <= 1e-6)
    assert.ok(maxAbsDiff(aloneB, Float32Array.from(outB.flatMap(x => [...x]))) <= 1e-6)
  })

  it('rewinds to an earlier position and recomputes from there', async () => {
    const hidden = randomHidden(5, width, 4)
    const reference = await runChunks(span, hidden, [5], width)
    const session = span.openSession(5)
    await span.forward(session, randomHidden(5, width, 99)) // a different continuation first
    const redo = await span.forward(session, hidden, 0)
    assert.equal(span.sessionLength(session), 5)
    assert.ok(maxAbsDiff(reference, redo) <= 1e-6)
  })

  it('refuses bad calls with clear errors and keeps serving', async () => {
    const session = span.openSession(3)
    await assert.rejects(span.forward(session, new Float32Array(width + 1)), /hidden states must be \[tokens, 32\] floats, got 33 values/)
    await assert.rejects(span.forward(session, randomHidden(4, width)), /at most 3 tokens/)
    await assert.rejects(span.forward(session, randomHidden(1, width), 2), /position 2 is outside the session's 0 cached tokens/)
    await assert.rejects(span.forward(session, new Float32Array(width).fill(NaN)), /NaN or infinite/)
    await assert.rejects(span.forward(12345, randomHidden(1, width)), /unknown or closed session 12345/)
    assert.throws(() => span.openSession(0), /positive integer/)
    const out = await span.forward(session, randomHidden(3, width))
    assert.equal(out.length, 3 * width)
    span.closeSession(session)
    await assert.rejects(span.forward(session, randomHidden(1, width)), /unknown or closed session/)
  })

  it('refuses spans outside the model', async () => {
    await assert.rejects(loadSpan(dir, 1, 3), /block span 1:3 is not within the model's 2 blocks/)
  })
})
