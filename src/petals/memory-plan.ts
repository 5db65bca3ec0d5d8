// How many blocks fit on a GPU, as Petals chooses num_blocks (reference/petals.md §2.1 step 5):
// each block costs its weights (× 1.01) plus its share of the attention cache, after a reserve for
// activations that grows with the hidden size. bmrt counts the GPU's free memory rather than its
// total (other programs may hold some) and its fp32 KV cache.

import type { ModelConfig } from '../inference/config.js'

export interface GpuMemoryPlan {
  /** blocks that fit (at most the model's) */
  blocks: number
  blockBytes: number
  cacheBytesPerBlock: number
  reserveBytes: number
  freeBytes: number
}

const GIB = 2 ** 30

/** Bytes of one block's weights stored with `bytesPerValue` bytes per parameter (norms and biases included). */
export function blockWeightBytes (config: ModelConfig, bytesPerValue: number): number {
  const h = config.hiddenSize
  const q = config.numHeads * config.headDim
  const kv = config.numKvHeads * config.headDim
  const matrices = h * q * 2 + h * kv * 2 + 3 * h * config.intermediateSize
  const vectors = 2 * h + (config.attentionBias ? q + 2 * kv + h : 0) + (config.mlpBias ? 2 * config.intermediateSize + h : 0)
  return matrices * bytesPerValue + vectors * 4
}

/**
 * The plan for a GPU with `freeBytes` free: weights in `bytesPerValue` bytes per parameter, and an
 * attention cache of `cacheTokensPerBlock` tokens per block (fp32 keys and values).
 */
export function planGpuBlocks (config: ModelConfig, freeBytes: number, bytesPerValue: number, cacheTokensPerBlock: number): GpuMemoryPlan {
  const blockBytes = Math.ceil(blockWeightBytes(config, bytesPerValue) * 1.01)
  const cacheBytesPerBlock = 2 * config.numKvHeads * config.headDim * 4 * cacheTokensPerBlock
  const reserveBytes = Math.ceil(2 * GIB * config.hiddenSize / 14336) // Petals' autograd_memory, for one device
  const blocks = Math.max(0, Math.min(config.numLayers, Math.floor((freeBytes - reserveBytes) / (blockBytes + cacheBytesPerBlock))))
  return { blocks, blockBytes, cacheBytesPerBlock, reserveBytes, freeBytes }
}

/** One line for a person: what the plan found. */
export function describePlan (plan: GpuMemoryPlan): string {
  const gib = (n: number): string => (n / GIB).toFixed(2)
  return `${plan.blocks} blocks fit in ${gib(plan.freeBytes)} GiB free: ${gib(plan.blockBytes)} GiB of weights and ` +
    `${gib(plan.cacheBytesPerBlock)} GiB of attention cache per block, ${gib(plan.reserveBytes)} GiB kept for activations`
}
