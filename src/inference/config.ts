// config.json of a Hugging Face Llama-family model, validated into the few numbers the blocks need.

import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseDType, type DType } from './dtype.js'
import { OptionError } from '../util/errors.js'

/** model_type values whose decoder block is the Llama block (Mistral adds an optional sliding window). */
export const SUPPORTED_MODEL_TYPES = ['llama', 'mistral'] as const

export type RopeScaling =
  | { type: 'linear', factor: number }
  | { type: 'llama3', factor: number, lowFreqFactor: number, highFreqFactor: number, originalMaxPositionEmbeddings: number }

export interface ModelConfig {
  modelType: typeof SUPPORTED_MODEL_TYPES[number]
  hiddenSize: number
  intermediateSize: number
  numLayers: number
  numHeads: number
  numKvHeads: number
  headDim: number
  rmsNormEps: number
  ropeTheta: number
  ropeScaling: RopeScaling | null
  maxPositionEmbeddings: number
  /** Mistral's sliding attention window in tokens, or null for full causal attention */
  slidingWindow: number | null
  tieWordEmbeddings: boolean
  vocabSize: number
  bosTokenId: number | null
  eosTokenIds: number[]
  attentionBias: boolean
  mlpBias: boolean
  /** the dtype the checkpoint was saved in (config's torch_dtype / dtype), if it says */
  dtype: DType | null
}

export async function loadConfig (modelDir: string): Promise<ModelConfig> {
  const path = join(modelDir, 'config.json')
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    throw new OptionError(['modelDir'], name => `no config.json in ${modelDir}: point ${name('modelDir')} at a Hugging Face model directory (config.json, *.safetensors, tokenizer.json)`)
  }
  return parseConfigText(text, path)
}

/** Reads and validates a config.json file at `path` (a model without its weights, e.g. for planning). */
export async function readConfigFile (path: string): Promise<ModelConfig> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`)
  }
  return parseConfigText(text, path)
}

function parseConfigText (text: string, path: string): ModelConfig {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`)
  }
  return parseConfig(raw, path)
}

/** Validates a parsed config.json. `source` names it in error messages. */
export function parseConfig (raw: unknown, source = 'config.json'): ModelConfig {
  if (raw === null || typeof raw !== 'object') throw new Error(`${source}: expected a JSON object`)
  const c = raw as Record<string, unknown>
  const modelType = String(c.model_type ?? '')
  if (!(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    const arch = Array.isArray(c.architectures) ? ` (${c.architectures.join(', ')})` : ''
    throw new Error(`${source}: unsupported architecture model_type '${modelType}'${arch}; bmrt runs Llama-family models: ${SUPPORTED_MODEL_TYPES.join(', ')}`)
  }

  const int = (key: string, fallback?: number): number => {
    const v = c[key] ?? fallback
    if (!Number.isSafeInteger(v) || (v as number) <= 0) throw new Error(`${source}: '${key}' must be a positive integer, got ${JSON.stringify(c[key])}`)
    return v as number
  }
  const num = (key: string, fallback: number): number => {
    const v = c[key] ?? fallback
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new Error(`${source}: '${key}' must be a positive number, got ${JSON.stringify(c[key])}`)
    return v
  }
  const optionalId = (v: unknown): number | null => (Number.isSafeInteger(v) ? v as number : null)

  const hiddenSize = int('hidden_size')
  const numHeads = int('num_attention_heads')
  const numKvHeads = int('num_key_value_heads', numHeads)
  if (numHeads % numKvHeads !== 0) {
    throw new Error(`${source}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`)
  }
  if (c.head_dim == null && hiddenSize % numHeads !== 0) {
    throw new Error(`${source}: hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numHeads}); set head_dim`)
  }
  const headDim = int('head_dim', hiddenSize / numHeads)
  if (headDim % 2 !== 0) throw new Error(`${source}: head_dim (${headDim}) must be even for rotary embeddings`)
  const hiddenAct = c.hidden_act ?? 'silu'
  if (hiddenAct !== 'silu') throw new Error(`${source}: hidden_act '${String(hiddenAct)}' is not supported; Llama-family models use silu`)

  const eos = c.eos_token_id
  const eosTokenIds = Array.isArray(eos) ? eos.filter(Number.isSafeInteger) as number[] : Number.isSafeInteger(eos) ? [eos as number] : []
  const dtypeName = c.torch_dtype ?? c.dtype
  let slidingWindow: number | null = null
  if (modelType === 'mistral' && c.sliding_window != null && c.use_sliding_window !== false) slidingWindow = int('sliding_window')

  return {
    modelType: modelType as ModelConfig['modelType'],
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numLayers: int('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num('rms_norm_eps', 1e-6),
    ropeTheta: num('rope_theta', 10000),
    ropeScaling: parseRopeScaling(c.rope_scaling, source),
    maxPositionEmbeddings: int('max_position_embeddings', 2048),
    slidingWindow,
    tieWordEmbeddings: c.tie_word_embeddings === true,
    vocabSize: int('vocab_size'),
    bosTokenId: optionalId(c.bos_token_id),
    eosTokenIds,
    attentionBias: c.attention_bias === true,
    mlpBias: c.mlp_bias === true,
    dtype: typeof dtypeName === 'string' ? parseDType(dtypeName) : null
  }
}

function parseRopeScaling (raw: unknown, source: string): RopeScaling | null {
  if (raw == null) return null
  const r = raw as Record<string, unknown>
  const type = r.rope_type ?? r.type
  const positive = (key: string): number => {
    const v = r[key]
    if (typeof v !== 'number' || !(v > 0)) throw new Error(`${source}: rope_scaling.${key} must be a positive number, got ${JSON.stringify(v)}`)
    return v
  }
  if (type === 'default') return null
  if (type === 'linear') return { type, factor: positive('factor') }
  if (type === 'llama3') {
    return {
      type,
      factor: positive('factor'),
      lowFreqFactor: positive('low_freq_factor'),
      highFreqFactor: positive('high_freq_factor'),
      originalMaxPositionEmbeddings: positive('original_max_position_embeddings')
    }
  }
  throw new Error(`${source}: rope_scaling type '${String(type)}' is not supported; bmrt supports linear and llama3`)
}

/** Number of parameters in one decoder block (its weights, norms and biases). */
export function blockParameterCount (config: ModelConfig): number {
  const { hiddenSize: h, intermediateSize: i, numHeads, numKvHeads, headDim } = config
  const q = numHeads * headDim
  const kv = numKvHeads * headDim
  let n = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
  if (config.attentionBias) n += q + 2 * kv + h
  if (config.mlpBias) n += 2 * i + h
  return n
}

/** Throws unless [start, end) is a non-empty span of the model's blocks. */
export function checkSpan (config: ModelConfig, start: number, end: number): void {
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > config.numLayers || start >= end) {
    throw new Error(`block span ${start}:${end} is not within the model's ${config.numLayers} blocks (need 0 <= start < end <= ${config.numLayers})`)
  }
}
