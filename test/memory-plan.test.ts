// Petals' choice of how many blocks a GPU holds, on real model shapes.

import assert from 'node:assert/strict'
import { parseConfig } from '../src/inference/config.js'
import { blockWeightBytes, describePlan, planGpuBlocks } from '../src/petals/memory-plan.js'

const llama70b = parseConfig({
  model_type: 'llama', hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 80, num_attention_heads: 64,
  num_key_value_heads: 8, vocab_size: 32000, max_position_embeddings: 4096, rms_norm_eps: 1e-5
})
const GIB = 2 ** 30

describe('GPU memory plan', () => {
  it('counts a Llama-2-70B block as Petals does: 1.71 GB of bf16 weights, 128 MiB of cache per 16384 tokens', () => {
    assert.equal(blockWeightBytes(llama70b, 2), 855_638_016 * 2 + 2 * 8192 * 4)
    const plan = planGpuBlocks(llama70b, 80 * GIB, 2, 16384)
    assert.equal(plan.cacheBytesPerBlock, 128 * 2 ** 20)
    assert.equal(plan.reserveBytes, Math.ceil(2 * GIB * 8192 / 14336))
    // (80 GiB - 1.14 GiB) / (1.61 GiB + 0.125 GiB) = 45.5
    assert.equal(plan.blocks, 45)
    assert.match(describePlan(plan), /^45 blocks fit in 80\.00 GiB free: 1\.61 GiB of weights and 0\.13 GiB of attention cache per block, 1\.14 GiB kept/)
  })

  it('never plans more blocks than the model has, nor fewer than none', () => {
    assert.equal(planGpuBlocks(llama70b, 1000 * GIB, 2, 16384).blocks, 80)
    assert.equal(planGpuBlocks(llama70b, 1 * GIB, 2, 16384).blocks, 0)
    // A smaller cache budget leaves room for more blocks.
    assert.ok(planGpuBlocks(llama70b, 40 * GIB, 2, 1024).blocks > planGpuBlocks(llama70b, 40 * GIB, 2, 16384).blocks)
  })
})
