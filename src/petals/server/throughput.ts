// A server's throughput as Petals measures and combines it (petals/server/throughput.py):
// inference rps (tokens per second of one block at 1 token per step with a KV cache), forward rps
// (tokens per second of one block on a long batch), network rps (hidden states the link carries per
// second), and the announced figure min(forward rps / average blocks used, network rps), cut to a
// fifth for servers reachable only through a relay. Measurements are cached on disk per model shape,
// backend, weight format and device.

import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import type { BlockSpan } from '../../inference/backend.js'

export interface ThroughputInfo {
  /** tokens/s of one block, 1 token per step with a KV cache */
  inferenceRps: number
  /** tokens/s of one block on a batch of FORWARD_TOKENS tokens */
  forwardRps: number
  /** hidden states per second the network carries */
  networkRps: number
  /** what the server announces */
  throughput: number
}

export interface ThroughputOptions {
  /** the server is reachable only through a relay: its throughput counts a fifth (Petals' penalty) */
  usingRelay?: boolean
  /** link speed in bits/s (default 100 Mbit/s, Petals' assumption when speedtest fails) */
  networkBitsPerSecond?: number
  /** cache file (default: the user's cache folder, bmrt/throughput.json); null disables caching */
  cacheFile?: string | null
  /** re-measure even when the cache has a figure */
  refresh?: boolean
  /** part of the cache key: the model's name */
  modelName: string
}

const INFERENCE_STEPS = 20
const FORWARD_TOKENS = 128
const FORWARD_STEPS = 2
const RELAY_PENALTY = 0.2

export function defaultCacheFile (): string {
  const base = process.env.XDG_CACHE_HOME ?? (process.platform === 'win32' ? process.env.LOCALAPPDATA : undefined) ?? join(homedir(), '.cache')
  return join(base ?? homedir(), 'bmrt', 'throughput.json')
}

/** Measures (or reads from the cache) the span's per-block speeds and combines them as Petals does. */
export async function measureThroughput (span: BlockSpan, options: ThroughputOptions): Promise<ThroughputInfo & { cached: boolean }> {
  const blocks = span.end - span.start
  const cacheFile = options.cacheFile === undefined ? defaultCacheFile() : options.cacheFile
  const c = span.config
  const stored = span as { format?: string, device?: string }
  const key = `${options.modelName}|${c.hiddenSize}x${c.intermediateSize}x${c.numHeads}/${c.numKvHeads}|${span.backend}|${stored.format ?? 'f32'}|${stored.device ?? 'cpu'}`
  let measured = options.refresh === true || cacheFile === null ? undefined : (await readCache(cacheFile))[key]
  const cached = measured !== undefined
  if (measured === undefined) {
    measured = await measureSpan(span)
    if (cacheFile !== null) await writeCache(cacheFile, key, measured)
  }
  const networkRps = (options.networkBitsPerSecond ?? 100e6) / (c.hiddenSize * 16)
  const averageBlocksUsed = (blocks + 1) / 2
  let throughput = Math.min(measured.forwardRps / averageBlocksUsed, networkRps)
  if (options.usingRelay === true) throughput *= RELAY_PENALTY
  return { ...measured, networkRps, throughput, cached }
}

/** Per-block speeds from timing the whole span and dividing by its length (no extra block in memory). */
async function measureSpan (span: BlockSpan): Promise<{ inferenceRps: number, forwardRps: number }> {
  const blocks = span.end - span.start
  const width = span.config.hiddenSize
  const session = span.openSession(Math.max(FORWARD_TOKENS, INFERENCE_STEPS + 1))
  try {
    const token = new Float32Array(width).fill(0.01)
    await span.forward(session, token, 0) // warm-up
    let started = performance.now()
    for (let step = 1; step <= INFERENCE_STEPS; step++) await span.forward(session, token, step)
    const inferenceSeconds = (performance.now() - started) / 1000
    const batch = new Float32Array(FORWARD_TOKENS * width).fill(0.01)
    started = performance.now()
    for (let step = 0; step < FORWARD_STEPS; step++) await span.forward(session, batch, 0)
    const forwardSeconds = (performance.now() - started) / 1000
    return {
      inferenceRps: INFERENCE_STEPS * blocks / inferenceSeconds,
      forwardRps: FORWARD_STEPS * FORWARD_TOKENS * blocks / forwardSeconds
    }
  } finally {
    span.closeSession(session)
  }
}

type Cache = Record<string, { inferenceRps: number, forwardRps: number }>

async function readCache (file: string): Promise<Cache> {
  try {
    const cache = JSON.parse(await readFile(file, 'utf8'))
    return cache !== null && typeof cache === 'object' ? cache : {}
  } catch {
    return {} // absent or unreadable: measure again
  }
}

async function writeCache (file: string, key: string, value: { inferenceRps: number, forwardRps: number }): Promise<void> {
  const cache = await readCache(file)
  cache[key] = value
  await mkdir(dirname(file), { recursive: true })
  // Write a new file and rename it over the old, so a crash never leaves half a cache.
  const temporary = `${file}.${process.pid}.tmp`
  await writeFile(temporary, JSON.stringify(cache, null, 2))
  await rename(temporary, file)
}
