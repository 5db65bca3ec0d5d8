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
    spec: { layers: 3, hidden: 48, intermediate: 96, heads: 8, kvHeads: 2, headDim: 6, vocab: 64, tied: true, attentionBias: true, mlpBias: true, dtype: 'BF16', ropeTheta: 500000, ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 }, seed: 21 },
    logitsAt3: [-8.399028, -0.596506, 4.879038, 5.893486, -8.056326, -0.691953, -1.156519, 4.099679],
    logitsLast: [-9.025297, 1.418198, 4.167727, 3.207322, 1.790044, -0.320241, -1.490232, 30.79439],
    greedy: [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]
  },
  {
    name: 'mistral: sliding window 4, GQA 4/2, F16',
    spec: { modelType: 'mistral', layers: 2, hidden: 32, intermediate: 64, heads: 4, kvHeads: 2, vocab: 64, slidingWindow: 4, dtype: 'F16', seed: 22 },
    logitsAt3: [2.197098, 1.252414, 1.577723, 0.093142, -0.330022, -0.198433, -0.164096, 0.044988],
    logitsLast: [1.921777, -0.307912, -0.028169, -0.83825, -0.067831, -0.20302, -1.46465, 1.438677],
    greedy: [23, 41, 32, 0, 18, 23, 20, 44, 10, 31, 36, 48]
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
      assert.ok(maxAbsDiff(head.logits(hidden.subarray(0, 4 * h)).subarray(0, 8), m.logitsAt3) <= 1e-4)
      let logits = head.logits(hidden)
      assert.ok(maxAbsDiff(logits.subarray(0, 8), m.logitsLast) <= 1e-4)
      const greedy: number[] = []
      for (let i = 0; i < m.greedy.length; i++) {
        greedy.push(argmax(logits))
        if (i + 1 < m.greedy.length) logits = head.logits(await span.forward(session, head.embed([greedy[i]])))
      }
      assert.deepEqual(greedy, m.greedy)
    })
  }
})
