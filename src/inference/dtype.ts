// Floating-point storage formats of checkpoint tensors, and their conversion to and from fp32.
// Node 20 has no Float16Array, so half-precision values travel as raw 16-bit patterns.

import { endianness } from 'node:os'

/**
 * bmrt's one name for a floating-point format: of checkpoint tensors, of activations on the wire,
 * of weights stored in memory. Other spellings (safetensors' `BF16`, the protobuf enum, PyTorch's
 * `bfloat16`, the CLI's input) are translated where bmrt meets them.
 */
export type DType = 'f32' | 'bf16' | 'f16'

export const DTYPES: readonly DType[] = ['f32', 'bf16', 'f16']

/** How weights are stored: a float format, or int8 / int4 quantised at load time. */
export type WeightFormat = DType | 'int8' | 'int4'

export const WEIGHT_FORMATS: readonly WeightFormat[] = [...DTYPES, 'int8', 'int4']

export const DTYPE_BYTES: Record<DType, number> = { f32: 4, bf16: 2, f16: 2 }

export function isDType (value: unknown): value is DType {
  return (DTYPES as readonly unknown[]).includes(value)
}

export function isWeightFormat (value: unknown): value is WeightFormat {
  return (WEIGHT_FORMATS as readonly unknown[]).includes(value)
}

/** Maps the names people type (`bf16`, `float16`, `fp32`…) and config.json's `torch_dtype` to a DType. */
export function parseDType (name: string): DType {
  const key = name.trim().toLowerCase()
  if (['f32', 'fp32', 'float32', 'float'].includes(key)) return 'f32'
  if (['f16', 'fp16', 'float16', 'half'].includes(key)) return 'f16'
  if (['bf16', 'bfloat16'].includes(key)) return 'bf16'
  throw new Error(`unknown dtype '${name}': use one of f32, f16, bf16`)
}

if (endianness() !== 'LE') {
  // safetensors stores little-endian values and we view them in place.
  throw new Error('bmrt needs a little-endian CPU')
}

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** IEEE half (binary16) bit pattern to a number. */
export function halfToFloat (h: number): number {
  const sign = (h & 0x8000) !== 0 ? -1 : 1
  const exponent = (h >> 10) & 0x1f
  const mantissa = h & 0x3ff
  if (exponent === 0) return sign * mantissa * 2 ** -24 // zero and subnormals
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15)
}

/** A number to the nearest IEEE half bit pattern (round to nearest even, overflow to infinity). */
export function floatToHalf (value: number): number {
  f32[0] = value
  const x = u32[0]
  const sign = (x >>> 16) & 0x8000
  const exponent = (x >>> 23) & 0xff
  let mantissa = x & 0x7fffff
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0)
  const e = exponent - 127 + 15
  if (e >= 0x1f) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    mantissa |= 0x800000
    const shift = 14 - e
    let half = mantissa >>> shift
    const rest = mantissa & ((1 << shift) - 1)
    const halfway = 1 << (shift - 1)
    if (rest > halfway || (rest === halfway && (half & 1) === 1)) half++
    return sign | half
  }
  let half = (e << 10) | (mantissa >>> 13)
  const rest = mantissa & 0x1fff
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1)) half++ // may carry into the exponent: correct
  return sign | half
}

/** A number to the nearest bfloat16 bit pattern (round to nearest even; NaN stays NaN). */
export function floatToBf16 (value: number): number {
  f32[0] = value
  const x = u32[0]
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return (x >>> 16) | 0x40
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff
}

/** Decodes little-endian raw tensor bytes of `dtype` into a new fp32 array. */
export function toFloat32 (bytes: Uint8Array, dtype: DType): Float32Array {
  const count = bytes.byteLength / DTYPE_BYTES[dtype]
  // Copy into a fresh, aligned buffer: the source may sit at any byte offset.
  const aligned = new Uint8Array(bytes.byteLength)
  aligned.set(bytes)
  if (dtype === 'f32') return new Float32Array(aligned.buffer, 0, count)
  const halves = new Uint16Array(aligned.buffer, 0, count)
  const out = new Float32Array(count)
  if (dtype === 'bf16') {
    const bits = new Uint32Array(out.buffer)
    for (let i = 0; i < count; i++) bits[i] = halves[i] << 16
  } else {
    for (let i = 0; i < count; i++) out[i] = halfToFloat(halves[i])
  }
  return out
}

/** Encodes fp32 values as little-endian raw bytes of `dtype`. */
export function fromFloat32 (values: Float32Array, dtype: DType): Uint8Array {
  if (dtype === 'f32') return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength))
  const halves = new Uint16Array(values.length)
  const encode = dtype === 'bf16' ? floatToBf16 : floatToHalf
  for (let i = 0; i < values.length; i++) halves[i] = encode(values[i])
  return new Uint8Array(halves.buffer)
}
