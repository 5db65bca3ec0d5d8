// Writes random-weight Llama checkpoints of any shape, so tests and benchmarks can cover shapes the
// bundled model lacks (80 layers with 8 KV heads like Llama-2-70B, tied embeddings, llama3 rope,
// F16/BF16, sharded files) without downloading anything.

import { copyFile, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fromFloat32, type DType } from './dtype.js'
import { tensorNames } from './checkpoint.js'
import { parseConfig, type ModelConfig } from './config.js'
import { seededRandom } from './sampling.js'
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
  /** storage dtype of the weights (default F32) */
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
  seed?: number
  /** copy tokenizer.json and tokenizer_config.json from this model directory */
  tokenizerFrom?: string
}

/** Writes config.json and safetensors weights for `spec` into `dir`; returns the parsed config. */
export async function makeTestModel (dir: string, spec: TestModelSpec): Promise<ModelConfig> {
  const dtype = spec.dtype ?? 'F32'
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
    torch_dtype: { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[dtype]
  }
  const config = parseConfig(rawConfig, 'test model spec')
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'config.json'), JSON.stringify(rawConfig, null, 2))
  if (spec.tokenizerFrom !== undefined) {
    for (const file of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(spec.tokenizerFrom, file), join(dir, file))
  }

  const random = seededRandom(spec.seed ?? 1)
  const normal = (): number => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random())
  const tensors: TensorToWrite[] = []
  const add = (name: string, shape: number[], init: () => number): void => {
    const values = new Float32Array(shape.reduce((a, b) => a * b, 1))
    for (let i = 0; i < values.length; i++) values[i] = init()
    tensors.push({ name, dtype, shape, bytes: fromFloat32(values, dtype) })
  }
  // Scales that keep activations O(1) through many layers, so tests compare meaningful numbers.
  const weight = (fanIn: number) => () => normal() / Math.sqrt(fanIn)
  const norm = () => 1 + 0.1 * normal()
  const bias = () => 0.1 * normal()
  const { hiddenSize: h, intermediateSize: inter, numHeads, numKvHeads, headDim, vocabSize } = config
  const qDim = numHeads * headDim
  const kvDim = numKvHeads * headDim

  add(tensorNames.embed, [vocabSize, h], normal)
  for (let i = 0; i < config.numLayers; i++) {
    const name = (suffix: string): string => tensorNames.layer(i, suffix)
    add(name('input_layernorm.weight'), [h], norm)
    add(name('self_attn.q_proj.weight'), [qDim, h], weight(h))
    add(name('self_attn.k_proj.weight'), [kvDim, h], weight(h))
    add(name('self_attn.v_proj.weight'), [kvDim, h], weight(h))
    add(name('self_attn.o_proj.weight'), [h, qDim], weight(qDim))
    if (config.attentionBias) {
      add(name('self_attn.q_proj.bias'), [qDim], bias)
      add(name('self_attn.k_proj.bias'), [kvDim], bias)
      add(name('self_attn.v_proj.bias'), [kvDim], bias)
      add(name('self_attn.o_proj.bias'), [h], bias)
    }
    add(name('post_attention_layernorm.weight'), [h], norm)
    add(name('mlp.gate_proj.weight'), [inter, h], weight(h))
    add(name('mlp.up_proj.weight'), [inter, h], weight(h))
    add(name('mlp.down_proj.weight'), [h, inter], weight(inter))
    if (config.mlpBias) {
      add(name('mlp.gate_proj.bias'), [inter], bias)
      add(name('mlp.up_proj.bias'), [inter], bias)
      add(name('mlp.down_proj.bias'), [h], bias)
    }
  }
  add(tensorNames.finalNorm, [h], norm)
  if (!config.tieWordEmbeddings) add(tensorNames.lmHead, [vocabSize, h], weight(h))

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
    for (const t of group) { weightMap[t.name] = file; totalSize += t.bytes.byteLength }
    await writeSafetensors(join(dir, file), group, { format: 'pt' })
  }
  await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2))
  return config
}
