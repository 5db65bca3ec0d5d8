// Rotary position embeddings as Hugging Face's Llama computes them: inverse frequencies in fp32,
// optional linear or llama3 frequency scaling, and the `rotate_half` layout (the first half of each
// head pairs with the second half, not even with odd).

import type { ModelConfig } from './config.js'

const f = Math.fround

/** fp32 inverse frequencies, headDim / 2 of them. */
export function ropeInverseFrequencies (config: ModelConfig): Float32Array {
  const half = config.headDim / 2
  const inv = new Float32Array(half)
  for (let j = 0; j < half; j++) inv[j] = f(1 / f(config.ropeTheta ** f((2 * j) / config.headDim)))
  const scaling = config.ropeScaling
  if (scaling?.type === 'linear') {
    for (let j = 0; j < half; j++) inv[j] = f(inv[j] / scaling.factor)
  } else if (scaling?.type === 'llama3') {
    // Llama 3.1: leave high frequencies alone, divide low ones by `factor`, blend in between.
    const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: oldContext } = scaling
    const lowFreqWavelen = oldContext / lowFreqFactor
    const highFreqWavelen = oldContext / highFreqFactor
    for (let j = 0; j < half; j++) {
      const wavelen = (2 * Math.PI) / inv[j]
      if (wavelen > lowFreqWavelen) {
        inv[j] = f(inv[j] / factor)
      } else if (wavelen >= highFreqWavelen) {
        const smooth = (oldContext / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor)
        inv[j] = f((1 - smooth) * (inv[j] / factor) + smooth * inv[j])
      }
    }
  }
  return inv
}

/** cos and sin tables for one position, each headDim / 2 long (fp32, like HF). */
export function ropeAngles (inverseFrequencies: Float32Array, position: number): { cos: Float32Array, sin: Float32Array } {
  const half = inverseFrequencies.length
  const cos = new Float32Array(half)
  const sin = new Float32Array(half)
  for (let j = 0; j < half; j++) {
    const angle = f(position * inverseFrequencies[j])
    cos[j] = Math.cos(angle)
    sin[j] = Math.sin(angle)
  }
  return { cos, sin }
}

/** Rotates `heads` consecutive heads of `headDim` values in `x` starting at `offset`, in place. */
export function applyRope (x: Float32Array, offset: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
  const half = headDim / 2
  for (let h = 0; h < heads; h++) {
    const base = offset + h * headDim
    for (let j = 0; j < half; j++) {
      const a = x[base + j]
      const b = x[base + j + half]
      x[base + j] = a * cos[j] - b * sin[j]
      x[base + j + half] = b * cos[j] + a * sin[j]
    }
  }
}
