// Petals' choice of how many blocks a node holds, on real model shapes, and the weight bytes it
// counts against what the native addon really holds.

import assert from 'node:assert/strict'
import { Checkpoint } from '../src/inference/checkpoint.js'
import { loadConfig, parseConfig } from '../src/inference/config.js'
import { WEIGHT_FORMATS } from '../src/inference/dtype.js'
import { loadNativeSpan } from '../src/inference/native-backend.js'
import { makeTestModel } from '../src/inference/test-model.js'
import { blockWeightBytes, describePlan, planBlocks } from '../src/petals/planning/memory-plan.js'
import { scratchDir, skipWithoutAddon } from './helpers.js'

const llama70b = parseConfig({
  model_type: 'llama', hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 80, num_attention_heads: 64,
  num_key_value_heads: 8, vocab_size: 32000, max_position_embeddings: 4096, rms_norm_eps: 1e-5
})
const GIB = 2 ** 30

describe('memory plan', () => {
  it('counts a Llama-2-70B block as Petals does: 1.71 GB of bf16 weights, 128 MiB of cache per 16384 tokens', () => {
    assert.equal(blockWeightBytes(llama70b, 'bf16'), 855_638_016 * 2 + 2 * 8192 * 4)
    const plan = planBlocks(llama70b, 80 * GIB, 'bf16', 16384)
    assert.equal(plan.cacheBytesPerBlock, 128 * 2 ** 20)
    assert.equal(plan.reserveBytes, Math.ceil(2 * GIB * 8192 / 14336))
    // (80 GiB - 1.14 GiB) / (1.61 GiB + 0.125 GiB) = 45.5
    assert.equal(plan.blocks, 45)
    assert.match(describePlan(plan), /^45 blocks fit in 80\.00 GiB: 1\.61 GiB of weights and 0\.13 GiB of attention cache per block, 1\.14 GiB kept/)
  })

  it('never plans more blocks than the model has, nor fewer than none', () => {
    assert.equal(planBlocks(llama70b, 1000 * GIB, 'bf16', 16384).blocks, 80)
    assert.equal(planBlocks(llama70b, 1 * GIB, 'bf16', 16384).blocks, 0)
    // A smaller cache budget leaves room for more blocks.
    assert.ok(planBlocks(llama70b, 40 * GIB, 'bf16', 1024).blocks > planBlocks(llama70b, 40 * GIB, 'bf16', 16384).blocks)
  })

  describe('weight bytes against the native addon', function () {
    before(function () { skipWithoutAddon(this) })

    it('are what a loaded span holds, in every format, padding and scales included', async () => {
      const { dir, cleanup } = await scratchDir()
      try {
        // Shapes that are not multiples of the kernels' 16-row panels or int4's 32-value groups, and biases.
        await makeTestModel(dir, { layers: 2, hidden: 40, intermediate: 70, heads: 4, kvHeads: 2, headDim: 10, vocab: 16, attentionBias: true, mlpBias: true })
        const config = await loadConfig(dir)
        const checkpoint = await Checkpoint.open(dir)
        try {
          for (const format of WEIGHT_FORMATS) {
            const span = await loadNativeSpan(checkpoint, config, 0, 2, { format, threads: 1 })
            try {
              assert.equal(span.weightBytes, 2 * blockWeightBytes(config, format), format)
            } finally {
              span.close()
            }
          }
        } finally {
          await checkpoint.close()
        }
      } finally {
        await cleanup()
      }
    })
  })
})
