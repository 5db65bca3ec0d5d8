// The tensors of one Llama decoder block: Hugging Face names and the shapes config.json implies.
// The order is the addon's LayerTensor order (addon/src/core/span.h); keep the two in step.

import type { ModelConfig } from './config.js'
import { tensorNames } from './checkpoint.js'

export const LAYER_TENSOR_SUFFIXES = [
  'input_layernorm.weight', 'self_attn.q_proj.weight', 'self_attn.k_proj.weight', 'self_attn.v_proj.weight',
  'self_attn.o_proj.weight', 'post_attention_layernorm.weight', 'mlp.gate_proj.weight', 'mlp.up_proj.weight',
  'mlp.down_proj.weight', 'self_attn.q_proj.bias', 'self_attn.k_proj.bias', 'self_attn.v_proj.bias',
  'self_attn.o_proj.bias', 'mlp.gate_proj.bias', 'mlp.up_proj.bias', 'mlp.down_proj.bias'
] as const

export type LayerTensorSuffix = typeof LAYER_TENSOR_SUFFIXES[number]

export interface LayerTensor {
  suffix: LayerTensorSuffix
  name: string
  shape: number[]
  /** false for biases the model does not have */
  present: boolean
}

export function layerTensors (config: ModelConfig, layer: number): LayerTensor[] {
  const { hiddenSize: h, intermediateSize: inter, numHeads, numKvHeads, headDim, attentionBias, mlpBias } = config
  const q = numHeads * headDim
  const kv = numKvHeads * headDim
  const shapes: Record<LayerTensorSuffix, [number[], boolean]> = {
    'input_layernorm.weight': [[h], true],
    'self_attn.q_proj.weight': [[q, h], true],
    'self_attn.k_proj.weight': [[kv, h], true],
    'self_attn.v_proj.weight': [[kv, h], true],
    'self_attn.o_proj.weight': [[h, q], true],
    'post_attention_layernorm.weight': [[h], true],
    'mlp.gate_proj.weight': [[inter, h], true],
    'mlp.up_proj.weight': [[inter, h], true],
    'mlp.down_proj.weight': [[h, inter], true],
    'self_attn.q_proj.bias': [[q], attentionBias],
    'self_attn.k_proj.bias': [[kv], attentionBias],
    'self_attn.v_proj.bias': [[kv], attentionBias],
    'self_attn.o_proj.bias': [[h], attentionBias],
    'mlp.gate_proj.bias': [[inter], mlpBias],
    'mlp.up_proj.bias': [[inter], mlpBias],
    'mlp.down_proj.bias': [[h], mlpBias]
  }
  return LAYER_TENSOR_SUFFIXES.map(suffix => ({ suffix, name: tensorNames.layer(layer, suffix), shape: shapes[suffix][0], present: shapes[suffix][1] }))
}
