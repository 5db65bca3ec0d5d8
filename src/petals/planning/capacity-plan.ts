// Capacity planning for a swarm (`bmrt plan`): how many blocks of a model one node holds (Petals'
// memory rule, memory-plan.ts), how many nodes a whole model needs, what a session's KV cache
// costs, and how many tokens/s one client can expect. Decode is bound by memory bandwidth, and
// every hop's output comes back to the client (no server-to-server push), so one token costs
//   hops × RTT  +  layers × (bytes one layer reads / decode bandwidth)  +  the client's lm_head.
// Not counted: moving the hidden state itself, prefill, and other clients sharing the servers.

import type { ModelConfig } from '../../inference/config.js'
import { WEIGHT_FORMATS, type WeightFormat } from '../../inference/dtype.js'
import { DEFAULT_INFERENCE_MAX_LENGTH } from '../protocol/server-info.js'
import { blockWeightBytes, cacheBytesPerToken, defaultCacheTokens, planBlocks, type MemoryPlan } from './memory-plan.js'

/** Where a node runs its blocks: the formats bmrt serves and the default speed depend on it. */
export type PlanDevice = 'cpu' | 'gpu'

/** Formats bmrt's native backend serves on each device; others are projections only. */
const SERVED_FORMATS: Record<PlanDevice, readonly WeightFormat[]> = {
  cpu: WEIGHT_FORMATS,
  gpu: ['bf16', 'f16', 'f32'] // the CUDA path (addon/src/cuda) stores float formats only
}

/** How fast one layer decodes: a bandwidth its bytes stream at, or a measured time per layer. */
export type LayerSpeed =
  | { decodeGBps: number, source: string }
  | { layerMs: number, source: string }

export interface CapacityOptions {
  /** memory each node gives bmrt, bytes */
  memoryBytes: number
  /** default cpu */
  device?: PlanDevice
  /** weight storage; default bf16 */
  format?: WeightFormat
  /** tokens of one session; default the model's context, at most DEFAULT_INFERENCE_MAX_LENGTH */
  maxLength?: number
  /** attention cache tokens per block a node reserves (Petals' attn_cache_tokens); default 16384 for GQA models, else 4096 */
  cacheTokensPerBlock?: number
  /** round-trip time between the client and each server, ms; default 30 */
  rttMs?: number
  layerSpeed: LayerSpeed
  /** how fast the client's lm_head reads its weights, GB/s, and where that figure comes from */
  client: { gbps: number, source: string }
}

export interface SpeedProjection {
  /** servers in the chain: the nodes that hold the model once */
  hops: number
  rttMs: number
  networkMs: number
  /** bytes one layer reads per token: its weights, and the KV cache over a session on average */
  layerBytes: number
  layerMs: number
  blocksMs: number
  lmHeadBytes: number
  clientGBps: number
  clientSource: string
  clientMs: number
  tokenMs: number
  tokensPerSecond: number
  /** the decode bandwidth used (null when the time per layer was given) */
  decodeGBps: number | null
  source: string
}

export interface CapacityPlan {
  device: PlanDevice
  format: WeightFormat
  /** null, or why this format is a projection only (bmrt cannot serve it on this device yet) */
  projectionOnly: string | null
  /** blocks per node and the terms that decide it */
  memory: MemoryPlan
  /** one block's weights before Petals' 1.01 margin */
  weightBytesPerBlock: number
  /** nodes to hold every block once / twice (two full chains); null when no block fits */
  nodes: number | null
  nodesTwice: number | null
  /** the least memory in which one block fits */
  minMemoryBytes: number
  cacheTokensPerBlock: number
  session: {
    maxLength: number
    bytesPerTokenPerBlock: number
    bytesPerBlock: number
    bytesWholeModel: number
    /** sessions of maxLength over a node's whole span its cache budget holds at once */
    perNode: number
  }
  client: {
    /** embeddings and lm_head, as the native head holds them (see headBytesPerValue) */
    bytes: number
  }
  /** null when no block fits */
  speed: SpeedProjection | null
}

/** The whole plan for `config` on nodes of `options.memoryBytes`. */
export function planCapacity (config: ModelConfig, options: CapacityOptions): CapacityPlan {
  const device = options.device ?? 'cpu'
  const format = options.format ?? 'bf16'
  const context = config.maxPositionEmbeddings
  const maxLength = options.maxLength ?? Math.min(context, DEFAULT_INFERENCE_MAX_LENGTH)
  if (!Number.isSafeInteger(maxLength) || maxLength < 1 || maxLength > context) {
    throw new Error(`a session of ${maxLength} tokens does not fit the model's context of ${context} tokens: give a max length of 1..${context}`)
  }
  const cacheTokensPerBlock = options.cacheTokensPerBlock ?? defaultCacheTokens(config)
  const memory = planBlocks(config, options.memoryBytes, format, cacheTokensPerBlock)
  const nodes = memory.blocks > 0 ? Math.ceil(config.numLayers / memory.blocks) : null
  const bytesPerTokenPerBlock = cacheBytesPerToken(config)
  const lmHeadBytes = config.vocabSize * config.hiddenSize * headBytesPerValue(format)
  return {
    device,
    format,
    projectionOnly: SERVED_FORMATS[device].includes(format)
      ? null
      : `bmrt serves ${SERVED_FORMATS[device].join(', ')} weights on a ${device === 'gpu' ? 'GPU' : 'CPU'}, not ${format}`,
    memory,
    weightBytesPerBlock: blockWeightBytes(config, format),
    nodes,
    nodesTwice: nodes === null ? null : 2 * nodes,
    minMemoryBytes: memory.reserveBytes + memory.blockBytes + memory.cacheBytesPerBlock,
    cacheTokensPerBlock,
    session: {
      maxLength,
      bytesPerTokenPerBlock,
      bytesPerBlock: bytesPerTokenPerBlock * maxLength,
      bytesWholeModel: bytesPerTokenPerBlock * maxLength * config.numLayers,
      perNode: Math.floor(cacheTokensPerBlock / maxLength)
    },
    client: { bytes: (config.tieWordEmbeddings ? 1 : 2) * lmHeadBytes + config.hiddenSize * 4 },
    speed: nodes === null ? null : projectSpeed(config, options, format, nodes, maxLength, lmHeadBytes)
  }
}

function projectSpeed (config: ModelConfig, options: CapacityOptions, format: WeightFormat, hops: number, maxLength: number, lmHeadBytes: number): SpeedProjection {
  const rttMs = options.rttMs ?? 30
  const speed = options.layerSpeed
  const layerBytes = blockWeightBytes(config, format) + cacheBytesPerToken(config) * meanAttendedTokens(maxLength, config.slidingWindow)
  const decodeGBps = 'decodeGBps' in speed ? speed.decodeGBps : null
  const layerMs = decodeGBps !== null ? layerBytes / (decodeGBps * 1e6) : (speed as { layerMs: number }).layerMs
  const networkMs = hops * rttMs
  const blocksMs = config.numLayers * layerMs
  const clientMs = lmHeadBytes / (options.client.gbps * 1e6)
  const tokenMs = networkMs + blocksMs + clientMs
  return {
    hops, rttMs, networkMs, layerBytes, layerMs, blocksMs,
    lmHeadBytes, clientGBps: options.client.gbps, clientSource: options.client.source, clientMs,
    tokenMs, tokensPerSecond: 1000 / tokenMs, decodeGBps, source: speed.source
  }
}

/** The client's native head stores f32 for f32 servers, else bf16 (it holds no int8 or int4). */
export function headBytesPerValue (format: WeightFormat): number {
  return format === 'f32' ? 4 : 2
}

/**
 * Cached tokens a decode step attends to, on average over a session of `maxLength` tokens: the
 * token at position p attends to p + 1 tokens, or to the last `window` with Mistral's sliding window.
 */
export function meanAttendedTokens (maxLength: number, window: number | null): number {
  const w = window === null ? maxLength : Math.min(window, maxLength)
  return (w * (w + 1) / 2 + (maxLength - w) * w) / maxLength
}
