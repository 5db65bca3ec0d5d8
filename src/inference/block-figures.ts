// The speed figures `npm run bench:blocks -- --save FILE` measures on a machine and `bmrt plan
// --figures FILE` projects from: per-layer decode time of the native addon's CPU path in each weight
// format, and how fast the client's lm_head (the JS head, fp32, one thread) reads its weights.

import { readFile } from 'node:fs/promises'
import { WEIGHT_FORMATS, type WeightFormat } from './dtype.js'

export interface LayerFigure {
  /** the layer's shape, e.g. llama-2-7b */
  shape: string
  format: WeightFormat
  /** weight bytes the layer streams per decode step (scales included) */
  weightBytes: number
  /** median time of one layer's decode step (1 token, KV length 128) */
  decodeMs: number
}

export interface BlockFigures {
  /** where the layers ran: bench/blocks measures the addon's CPU path */
  device: 'cpu'
  threads: number
  /** the SIMD kernel family, e.g. avx512bf16 */
  kernels: string
  /** the machine's read-bandwidth probe, GB/s (10^9 bytes) */
  readGBps: number
  layers: LayerFigure[]
  /** the client's lm_head (the native head, bf16): weight bytes it reads per second, GB/s */
  clientGBps: number
}

const HOW_TO_MAKE = 'write it with `npm run bench:blocks -- --save FILE`'

/** Reads and checks a figures file. */
export async function readBlockFigures (path: string): Promise<BlockFigures> {
  let raw: unknown
  try {
    raw = JSON.parse(await readFile(path, 'utf8'))
  } catch (err) {
    throw new Error(`cannot read figures from ${path} (${(err as Error).message}); ${HOW_TO_MAKE}`)
  }
  const bad = (what: string): Error => new Error(`${path}: ${what}; ${HOW_TO_MAKE}`)
  const f = raw as Partial<BlockFigures> | null
  const positive = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v > 0
  if (f === null || typeof f !== 'object') throw bad('expected a JSON object')
  if (f.device !== 'cpu') throw bad(`'device' must be "cpu", got ${JSON.stringify(f.device)}`)
  for (const key of ['threads', 'readGBps', 'clientGBps'] as const) {
    if (!positive(f[key])) throw bad(`'${key}' must be a positive number, got ${JSON.stringify(f[key])}`)
  }
  if (!Array.isArray(f.layers) || f.layers.length === 0) throw bad("'layers' must be a non-empty list of measured layers")
  for (const [i, layer] of f.layers.entries()) {
    if (layer === null || typeof layer !== 'object' || typeof layer.shape !== 'string' || !WEIGHT_FORMATS.includes(layer.format) ||
      !positive(layer.weightBytes) || !positive(layer.decodeMs)) {
      throw bad(`layers[${i}] must be { shape, format (${WEIGHT_FORMATS.join(', ')}), weightBytes > 0, decodeMs > 0 }, got ${JSON.stringify(layer)}`)
    }
  }
  return { device: 'cpu', threads: f.threads!, kernels: String(f.kernels ?? ''), readGBps: f.readGBps!, layers: f.layers, clientGBps: f.clientGBps! }
}

/**
 * The rate decode streams weights at in `format`, GB/s: the largest layer measured in that format
 * (its time is the least dominated by fixed costs, so it is closest to a big model's layers).
 */
export function decodeGBps (figures: BlockFigures, format: WeightFormat, source: string): { gbps: number, layer: LayerFigure } {
  const layer = figures.layers.filter(l => l.format === format).sort((a, b) => b.weightBytes - a.weightBytes)[0]
  if (layer === undefined) throw new Error(`${source} has no decode figure for ${format}: measure it with \`npm run bench:blocks -- --formats ${format} --save FILE\``)
  return { gbps: layer.weightBytes / (layer.decodeMs / 1000) / 1e9, layer }
}
