// Writes random-weight Llama checkpoints of any shape, so tests and benchmarks can cover shapes the
// bundled model lacks (80 layers with 8 KV heads like Llama-2-70B, tied embeddings, llama3 rope,
// F16/BF16, sharded files) without downloading anything. The weights are the dummy weights of
// dummy-weights.ts for the spec's seed: a model written with seed 1 (the default) is the model
// `--load-format dummy` makes in memory. With the addon they are made on all cores (a 7B-shaped
// checkpoint in seconds); tensors are made one by one while the file is written.

import { copyFile, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DTYPE_BYTES, fromFloat32, type DType } from './dtype.js'
import { tensorNames } from './checkpoint.js'
import { parseConfig, type ModelConfig } from './config.js'
import { DUMMY_SEED, dummyKey, dummyTensorInfo, dummyValues } from './dummy-weights.js'
import { layerTensors } from './llama-layout.js'
import { loadAddon } from './native-backend.js'
import { writeSafetensors, type TensorToWrite } from './safetensors.js'

export interface TestModelSpec {
  modelType?: 'llama' | 'mistral'
  layers: number
  hidden: number
  intermediate: number
  heads: number
  /** default: heads (no GQA) */
  kvHeads?: number
  /** default: hidden / heads */
  headDim?: number
  vocab: number
  /** storage dtype of the weights (default f32) */
  dtype?: DType
  /** number of safetensors files (default 1: model.safetensors; more: an index plus shards) */
  shards?: number
  tied?: boolean
  attentionBias?: boolean
  mlpBias?: boolean
  ropeTheta?: number
  /** config.json's rope_scaling object, e.g. { rope_type: 'llama3', factor: 8, ... } */
  ropeScaling?: Record<string, unknown> | null
  slidingWindow?: number | null
  maxPositions?: number
  /** the dummy weights' seed (default 1, the one --load-format dummy uses) */
  seed?: number
  /** copy tokenizer.json and tokenizer_config.json from this model directory */
  tokenizerFrom?: string
}

/** Writes config.json and safetensors weights for `spec` into `dir`; returns the parsed config. */
export async function makeTestModel (dir: string, spec: TestModelSpec): Promise<ModelConfig> {
  const dtype = spec.dtype ?? 'f32'
  const rawConfig = {
    architectures: [spec.modelType === 'mistral' ? 'MistralForCausalLM' : 'LlamaForCausalLM'],
    model_type: spec.modelType ?? 'llama',
    hidden_size: spec.hidden,
    intermediate_size: spec.intermediate,
    num_hidden_layers: spec.layers,
    num_attention_heads: spec.heads,
    num_key_value_heads: spec.kvHeads ?? spec.heads,
    head_dim: spec.headDim ?? spec.hidden / spec.heads,
    vocab_size: spec.vocab,
    max_position_embeddings: spec.maxPositions ?? 512,
    hidden_act: 'silu',
    rms_norm_eps: 1e-5,
    rope_theta: spec.ropeTheta ?? 10000,
    rope_scaling: spec.ropeScaling ?? null,
    sliding_window: spec.slidingWindow ?? null,
    attention_bias: spec.attentionBias === true,
    mlp_bias: spec.mlpBias === true,
    tie_word_embeddings: spec.tied === true,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: { f32: 'float32', f16: 'float16', bf16: 'bfloat16' }[dtype]
  }
  const config = parseConfig(rawConfig, 'test model spec')
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'config.json'), JSON.stringify(rawConfig, null, 2))
  if (spec.tokenizerFrom !== undefined) {
    for (const file of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(spec.tokenizerFrom, file), join(dir, file))
  }

  const seed = spec.seed ?? DUMMY_SEED
  const tensors: TensorToWrite[] = []
  const add = (name: string, shape: number[]): void => {
    tensors.push({ name, dtype, shape, bytes: async () => await dummyBytes(seed, name, shape, dtype) })
  }
  const { hiddenSize: h, vocabSize } = config
  add(tensorNames.embed, [vocabSize, h])
  for (let i = 0; i < config.numLayers; i++) {
    for (const tensor of layerTensors(config, i)) if (tensor.present) add(tensor.name, tensor.shape)
  }
  add(tensorNames.finalNorm, [h])
  if (!config.tieWordEmbeddings) add(tensorNames.lmHead, [vocabSize, h])

  const shards = spec.shards ?? 1
  if (shards <= 1) {
    await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' })
    return config
  }
  // Contiguous groups of tensors per shard, as real exports do, so a span touches few files.
  const perShard = Math.ceil(tensors.length / shards)
  const weightMap: Record<string, string> = {}
  let totalSize = 0
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`
    const group = tensors.slice(s * perShard, (s + 1) * perShard)
    for (const t of group) { weightMap[t.name] = file; totalSize += t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype] }
    await writeSafetensors(join(dir, file), group, { format: 'pt' })
  }
  await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2))
  return config
}

/** The dummy values of a tensor stored as `dtype` bytes: on all cores with the addon, else in JS. */
async function dummyBytes (seed: number, name: string, shape: number[], dtype: DType): Promise<Uint8Array> {
  const { stream, init } = dummyTensorInfo(name, shape)
  const count = shape.reduce((a, b) => a * b, 1)
  const native = loadAddon()
  if (native !== null) return await native.dummyTensor(seed, stream, init.scale, init.offset, count, dtype)
  return fromFloat32(dummyValues(dummyKey(seed, stream), init, count), dtype)
}
