// Dummy weights (`--load-format dummy`, vLLM's name for the same thing): every tensor of a model's
// shape made from a hash of (seed, tensor, element index), for benchmarks at sizes whose
// checkpoints do not fit on a disk. This is the JS twin of addon/src/core/dummy.h: the addon makes
// the same fp32 values bit for bit on the CPU and the GPU (tests hold the three to it), so a
// server of dummy weights computes the same model on any backend and any machine, and
// `bmrt make-test-model` writes these values to files.
//
// A value is offset + scale * u with u uniform in [-1, 1) (24 random bits): projections scale
// sqrt(3 / fan_in) (the variance of N(0, 1 / fan_in)), embeddings sqrt(3), norms 0.1 around 1,
// biases 0.1 around 0.

import { tensorNames } from './checkpoint.js'
import { LAYER_TENSOR_SUFFIXES, type LayerTensorSuffix } from './llama-layout.js'

/** The seed of `--load-format dummy`, and make-test-model's default: the two make the same model. */
export const DUMMY_SEED = 1

/** Where weights come from: a checkpoint's safetensors files, or made in memory (dummy). */
export type LoadFormat = 'safetensors' | 'dummy'
export const LOAD_FORMATS: readonly LoadFormat[] = ['safetensors', 'dummy']

/** The head's tensors are streams 0..2; block b's tensor t (LayerTensor order) is (b + 1) * 32 + t. */
const HEAD_STREAMS: Record<string, number> = { [tensorNames.embed]: 0, [tensorNames.finalNorm]: 1, [tensorNames.lmHead]: 2 }

export interface DummyInit { scale: number, offset: number }

/** murmur3's 32-bit finaliser (dummy.h's dummy_mix). */
function mix (h: number): number {
  h = (h ^ (h >>> 16)) >>> 0
  h = Math.imul(h, 0x85ebca6b) >>> 0
  h = (h ^ (h >>> 13)) >>> 0
  h = Math.imul(h, 0xc2b2ae35) >>> 0
  return (h ^ (h >>> 16)) >>> 0
}

export function dummyKey (seed: number, stream: number): number {
  return mix((seed ^ mix((Math.imul(stream, 0x9e3779b9) + 1) >>> 0)) >>> 0)
}

/** The stream and initialisation of the tensor named `name` of shape `shape` (the Llama layout). */
export function dummyTensorInfo (name: string, shape: readonly number[]): { stream: number, init: DummyInit } {
  const head = HEAD_STREAMS[name]
  if (head !== undefined) {
    if (name === tensorNames.finalNorm) return { stream: head, init: { scale: 0.1, offset: 1 } }
    return { stream: head, init: { scale: uniformScale(name === tensorNames.embed ? 1 : shape[1]), offset: 0 } }
  }
  const match = /^model\.layers\.(\d+)\.(.+)$/.exec(name)
  const index = match === null ? -1 : LAYER_TENSOR_SUFFIXES.indexOf(match[2] as LayerTensorSuffix)
  if (match === null || index < 0) throw new Error(`dummy weights have no tensor '${name}'`)
  const stream = (Number(match[1]) + 1) * 32 + index
  if (match[2].endsWith('layernorm.weight')) return { stream, init: { scale: 0.1, offset: 1 } }
  if (match[2].endsWith('.bias')) return { stream, init: { scale: 0.1, offset: 0 } }
  return { stream, init: { scale: uniformScale(shape[1]), offset: 0 } }
}

/** sqrt(3 / fan_in) rounded once to fp32, as dummy.cc does. */
function uniformScale (fanIn: number): number {
  return Math.fround(Math.sqrt(3 / fanIn))
}

/** `count` values of the tensor with `key`, in plain JS (dummy.h's dummy_value). */
export function dummyValues (key: number, init: DummyInit, count: number): Float32Array {
  const out = new Float32Array(count)
  const scale = Math.fround(init.scale)
  const offset = Math.fround(init.offset)
  for (let i = 0; i < count; i++) {
    const high = Math.floor(i / 0x100000000)
    let h = mix(((i >>> 0) ^ key) >>> 0)
    h = mix((h + key + high) >>> 0)
    const u = ((h >>> 8) - 8388608) / 8388608 // exact: 24 bits
    // fp32 product, then fp32 sum: each rounded once, as in C++ (the double results are exact
    // or rounded once to float here, which gives the same fp32 values).
    out[i] = offset + Math.fround(scale * u)
  }
  return out
}

/**
 * The weights of a model made from the dummy hash: the reading interface of Checkpoint that the
 * JS backend uses, so that its loaders take either.
 */
export class DummyWeights {
  constructor (readonly seed = DUMMY_SEED) {}

  async readFloat32 (name: string, shape: number[]): Promise<Float32Array> {
    const { stream, init } = dummyTensorInfo(name, shape)
    return dummyValues(dummyKey(this.seed, stream), init, shape.reduce((a, b) => a * b, 1))
  }

  async close (): Promise<void> {}
}
