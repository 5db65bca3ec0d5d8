// How many blocks fit in a device's memory, as Petals chooses num_blocks
// (`Server._choose_num_blocks` in
// https://github.com/bigscience-workshop/petals/blob/main/src/petals/server/server.py): each block
// costs its weights (× 1.01) plus its share of the attention cache, after a reserve for
// activations that grows with the hidden size. A GPU server plans with its free memory (other
// programs may hold some); `bmrt plan` applies the same rule to the memory a user gives a node,
// CPU or GPU. Weights are counted as the native addon stores them and the KV cache in fp32,
// which is what both its CPU and CUDA paths keep.

import type { ModelConfig } from '../../inference/config.js'
import type { WeightFormat } from '../../inference/dtype.js'
import { storedMatrixBytes } from '../../inference/weight-bytes.js'

export interface MemoryPlan {
  /** blocks that fit (at most the model's) */
  blocks: number
  /** one block's weights × 1.01 (Petals' margin) */
  blockBytes: number
  /** the attention cache budget of one block */
  cacheBytesPerBlock: number
  /** kept for activations (Petals' autograd_memory) */
  reserveBytes: number
  /** the memory planned for */
  memoryBytes: number
}

const GIB = 2 ** 30
/** bytes of a cached key or value element: fp32 in the addon's CPU and CUDA paths */
const CACHE_VALUE_BYTES = 4

/** Petals' default attention cache for a model with grouped-query attention: tokens per block. */
export const DEFAULT_GQA_CACHE_TOKENS = 16384
/** Petals' default attention cache for a model without (one KV head per head): tokens per block. */
export const DEFAULT_MHA_CACHE_TOKENS = 4096

/** Petals' default attention cache: DEFAULT_GQA_CACHE_TOKENS for GQA models, DEFAULT_MHA_CACHE_TOKENS otherwise. */
export function defaultCacheTokens (config: ModelConfig): number {
  return config.numKvHeads < config.numHeads ? DEFAULT_GQA_CACHE_TOKENS : DEFAULT_MHA_CACHE_TOKENS
}

/** Bytes of one block's weights stored in `format` (norms and biases in fp32, as the addon keeps them). */
export function blockWeightBytes (config: ModelConfig, format: WeightFormat): number {
  const h = config.hiddenSize
  const q = config.numHeads * config.headDim
  const kv = config.numKvHeads * config.headDim
  const i = config.intermediateSize
  // [out, in] of q, k, v, o, gate, up, down
  const matrices: Array<[number, number]> = [[q, h], [kv, h], [kv, h], [h, q], [i, h], [i, h], [h, i]]
  const vectors = 2 * h + (config.attentionBias ? q + 2 * kv + h : 0) + (config.mlpBias ? 2 * i + h : 0)
  return matrices.reduce((sum, [rows, cols]) => sum + storedMatrixBytes(format, rows, cols), 0) + vectors * 4
}

/** Bytes of the KV cache one token takes in one block: a key and a value per KV head. */
export function cacheBytesPerToken (config: ModelConfig): number {
  return 2 * config.numKvHeads * config.headDim * CACHE_VALUE_BYTES
}

/** Petals' reserve for activations on one device: 2 GiB × hidden size / 14336. */
export function activationReserveBytes (config: ModelConfig): number {
  return Math.ceil(2 * GIB * config.hiddenSize / 14336)
}

/**
 * The plan for `memoryBytes` of memory: weights stored in `format`, and an attention cache of
 * `cacheTokensPerBlock` tokens per block.
 */
export function planBlocks (config: ModelConfig, memoryBytes: number, format: WeightFormat, cacheTokensPerBlock: number): MemoryPlan {
  const blockBytes = Math.ceil(blockWeightBytes(config, format) * 1.01)
  const cacheBytesPerBlock = cacheBytesPerToken(config) * cacheTokensPerBlock
  const reserveBytes = activationReserveBytes(config)
  const blocks = Math.max(0, Math.min(config.numLayers, Math.floor((memoryBytes - reserveBytes) / (blockBytes + cacheBytesPerBlock))))
  return { blocks, blockBytes, cacheBytesPerBlock, reserveBytes, memoryBytes }
}

/** One line for a person: what the plan found. */
export function describePlan (plan: MemoryPlan): string {
  const gib = (n: number): string => (n / GIB).toFixed(2)
  return `${plan.blocks} blocks fit in ${gib(plan.memoryBytes)} GiB: ${gib(plan.blockBytes)} GiB of weights and ` +
    `${gib(plan.cacheBytesPerBlock)} GiB of attention cache per block, ${gib(plan.reserveBytes)} GiB kept for activations`
}
