// The JS reference against Hugging Face transformers (LlamaForCausalLM / MistralForCausalLM, fp32,
// eager attention), on random models that exercise what the bundled model does not: llama3 rope
// scaling, GQA with head_dim != hidden/heads, q/k/v/o and MLP biases, tied embeddings, BF16 and
// F16 storage, Mistral's sliding window. The numbers were printed by test/fixtures/hf-logits.py
// (transformers 5.17, torch 2.13) on the models these specs write.

import assert from 'node:assert/strict'
import { join } from 'node:path'
import { Checkpoint } from '../src/inference/checkpoint.js'
import { loadJsHead, loadJsSpan } from '../src/inference/js-backend.js'
import { makeTestModel, type TestModelSpec } from '../src/inference/test-model.js'
import { argmax } from '../src/inference/sampling.js'
import { maxAbsDiff, scratchDir } from './helpers.js'

const PROMPT = [1, 5, 17, 33, 2, 60, 41, 9, 12, 50, 3, 7]

const MODELS: Array<{ name: string, spec: TestModelSpec, logitsAt3: number[], logitsLast: number[], greedy: number[] }> = [
  {
    name: 'llama: llama3 rope, GQA 8/2 with head_dim 6, biases, tied, BF16',
    spec: { layers: 3, hidden: 48, intermediate: 96, heads: 8, kvHeads: 2, headDim: 6, vocab: 64, tied: true, attentionBias: true, mlpBias: true, dtype: 'bf16', ropeTheta: 500000, ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 }, seed: 21 },
    logitsAt3: [3.208099, 10.661204, 7.926819, -8.427781, 6.741615, -12.513556, -2.123942, 3.80936],
    logitsLast: [11.158086, 5.476669, -0.747681, 1.736862, -9.148608, 0.906167, 18.300926, 24.450365],
    greedy: [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]
  },
  {
    name: 'mistral: sliding window 4, GQA 4/2, F16',
    spec: { modelType: 'mistral', layers: 2, hidden: 32, intermediate: 64, heads: 4, kvHeads: 2, vocab: 64, slidingWindow: 4, dtype: 'f16', seed: 22 },
    logitsAt3: [-0.388421, 0.649323, 0.735955, 0.631401, -0.126825, -0.753979, -0.157113, 0.681166],
    logitsLast: [-1.29839, 1.968692, 1.787155, -0.513599, 0.086362, -1.786074, -0.894832, 0.020897],
    greedy: [23, 1, 22, 9, 45, 45, 45, 24, 1, 45, 9, 1]
  }
]

describe('JS reference vs Hugging Face transformers', () => {
  let root: string
  let cleanup: () => Promise<void>
  before(async () => { ({ dir: root, cleanup } = await scratchDir()) })
  after(async () => await cleanup())

  for (const [index, m] of MODELS.entries()) {
    it(`${m.name}: logits within 1e-4 and the same greedy tokens`, async () => {
      const dir = join(root, String(index))
      const config = await makeTestModel(dir, m.spec)
      const checkpoint = await Checkpoint.open(dir)
      const head = await loadJsHead(checkpoint, config)
      const span = await loadJsSpan(checkpoint, config, 0, config.numLayers)
      await checkpoint.close()

      const session = span.openSession(PROMPT.length + m.greedy.length)
      const hidden = await span.forward(session, head.embed(PROMPT))
      const h = config.hiddenSize
      assert.ok(maxAbsDiff((await head.logits(hidden.subarray(0, 4 * h))).subarray(0, 8), m.logitsAt3) <= 1e-4)
      let logits = await head.logits(hidden)
      assert.ok(maxAbsDiff(logits.subarray(0, 8), m.logitsLast) <= 1e-4)
      const greedy: number[] = []
      for (let i = 0; i < m.greedy.length; i++) {
        greedy.push(argmax(logits))
        if (i + 1 < m.greedy.length) logits = await head.logits(await span.forward(session, head.embed([greedy[i]])))
      }
      assert.deepEqual(greedy, m.greedy)
    })
  }
})
