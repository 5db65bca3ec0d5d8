// The native backend: blocks and the model's head run in the C++ addon (addon/), which reads its
// tensors straight from the safetensors files (positioned reads, no copy through JS; on a GPU
// through pinned staging buffers) or makes dummy weights itself, and runs every forward and
// logits on a worker thread, on the CPU or, where the addon was built with CUDA, on an NVIDIA
// GPU. If the addon did not build, callers fall back to the JS backend.

import { createRequire } from 'node:module'
import { availableParallelism } from 'node:os'
import { sessionBlocks, type BlockRange, type BlockSpan, type ModelHead, type SpanStep } from './backend.js'
import { tensorNames, type Checkpoint } from './checkpoint.js'
import { checkSpan, type ModelConfig } from './config.js'
import { DummyWeights } from './dummy-weights.js'
import { WEIGHT_FORMATS, type DType, type WeightFormat } from './dtype.js'
import { addonCall, addonCallAsync } from './errors.js'
import { OptionError } from '../util/errors.js'
import { layerTensors } from './llama-layout.js'
import { ropeInverseFrequencies } from './rope.js'

export type NativeStep = SpanStep

/** Where a tensor's bytes are in a checkpoint file. */
interface TensorSource { path: string, offset: number, bytes: number, dtype: DType }

interface AddonSpan {
  loadLayer (index: number, sources: Array<TensorSource | null>): Promise<void>
  /** the dummy weights of the model's block `block` (addon/src/core/dummy.h) */
  loadDummyLayer (index: number, block: number, seed: number): Promise<void>
  setLayer (index: number, tensors: Array<Float32Array | null>): void
  /** layers relative to the span; layerCount -1 (default): to the end */
  openSession (maxLength: number, firstLayer?: number, layerCount?: number): number
  closeSession (session: number): void
  sessionLength (session: number): number
  forward (steps: NativeStep[]): Promise<Float32Array[]>
  /**
   * maxCacheTokens is per block; cacheLayerTokensReserved sums maxLength × layers over sessions;
   * workspaceBytes (CPU span only): the forward workspace kept between forwards
   */
  stats (): { weightBytes: number, cacheBytesPerToken: number, layers: number, cacheLayerTokensReserved: number, maxCacheTokens: number, sessions: number, format: string, device: string, workspaceBytes?: number }
  close (): void
}

export interface CudaDevice {
  name: string
  /** compute capability */
  major: number
  minor: number
  totalBytes: number
}

interface AddonHead {
  load (sources: { embeddings: TensorSource, finalNorm: TensorSource, lmHead: TensorSource | null }): Promise<void>
  loadDummy (seed: number): Promise<void>
  embed (ids: Int32Array): Float32Array
  /** of the last row */
  logits (hidden: Float32Array): Promise<Float32Array>
  stats (): { weightBytes: number, format: string, device: string }
  close (): void
}

export interface Addon {
  BlockSpan: new (options: Record<string, unknown>) => AddonSpan
  Head: new (options: Record<string, unknown>) => AddonHead
  /** `count` dummy values of stream `stream` stored as `dtype` bytes, made on all cores */
  dummyTensor (seed: number, stream: number, scale: number, offset: number, count: number, dtype: DType): Promise<Uint8Array>
  /** present when the addon was built with CUDA and cuBLAS */
  CudaBlockSpan?: new (options: Record<string, unknown>) => AddonSpan
  CudaHead?: new (options: Record<string, unknown>) => AddonHead
  cudaDevices?: () => CudaDevice[]
  cudaFreeBytes?: (device: number) => number
  kernelFamily (): string
  forceKernelFamily (family: string): boolean
  probe (kind: 'bandwidth' | 'fma' | 'bf16', threads: number, seconds: number): Promise<number>
}

let addon: Addon | null | undefined
let loadError = ''

/** The addon, or null when it did not build or does not load here (see nativeUnavailableReason). */
export function loadAddon (): Addon | null {
  if (addon === undefined && process.env.BMRT_DISABLE_NATIVE === '1') {
    addon = null
    loadError = 'disabled by BMRT_DISABLE_NATIVE=1'
  }
  if (addon === undefined) {
    try {
      // BMRT_ADDON loads another build (the Windows cross-build check uses it).
      addon = createRequire(import.meta.url)(process.env.BMRT_ADDON ?? '../../../addon/build/Release/bmrt.node') as Addon
    } catch (err) {
      addon = null
      loadError = (err as Error).message.split('\n')[0]
    }
  }
  return addon
}

export function nativeUnavailableReason (): string {
  return loadAddon() === null ? loadError : ''
}

export interface NativeSpanOptions {
  /** weight storage (default: see nativeFormat) */
  format?: WeightFormat
  /** threads for the CPU kernels (default: all cores) */
  threads?: number
  /** cpu (default), cuda, cuda:N, or auto (the first GPU when there is one) */
  device?: string
  /** cache tokens per block, Petals' attn_cache_tokens (default 0: no limit); see BlockSpan */
  maxCacheTokens?: number
  onBlock?: (block: number) => void
}

export function defaultFormat (config: ModelConfig): WeightFormat {
  return config.dtype ?? 'f32'
}

/** Where the native backend runs: the CPU, or a CUDA device by index (with its free memory now). */
export type NativeDevice = { kind: 'cpu' } | { kind: 'cuda', index: number, info: CudaDevice, freeBytes: number }

/**
 * The weight format a native span or head stores on `device` when `requested` is not given: the
 * checkpoint's dtype on the CPU; on a GPU half precision (bf16 unless the checkpoint is f16),
 * since decode streams every weight once per token. A GPU stores f32, bf16 or f16.
 */
export function nativeFormat (config: ModelConfig, device: NativeDevice, requested?: WeightFormat): WeightFormat {
  const format = requested ?? (device.kind === 'cuda' ? (config.dtype === 'f16' ? 'f16' : 'bf16') : defaultFormat(config))
  if (!WEIGHT_FORMATS.includes(format)) throw new Error(`unknown weight format '${format}': use ${WEIGHT_FORMATS.join(', ')}`)
  if (device.kind === 'cuda' && format !== 'bf16' && format !== 'f16' && format !== 'f32') throw new Error(`on a GPU the native backend stores weights in f32, bf16 or f16, not ${format}`)
  return format
}

/**
 * Resolves cpu, cuda, cuda:N or auto against this build of the addon and this machine's GPUs,
 * with errors that say what is missing.
 */
export function resolveNativeDevice (device = 'cpu'): NativeDevice {
  if (device === 'cpu') return { kind: 'cpu' }
  const native = loadAddon()
  const gpus = native?.cudaDevices?.() ?? []
  const gpu = (index: number): NativeDevice => ({ kind: 'cuda', index, info: gpus[index], freeBytes: native!.cudaFreeBytes!(index) })
  if (device === 'auto') return gpus.length > 0 ? gpu(0) : { kind: 'cpu' }
  const match = /^cuda(?::(\d+))?$/.exec(device)
  if (match === null) throw new Error(`unknown device '${device}' for the native backend: use cpu, cuda, cuda:N or auto`)
  if (native?.CudaBlockSpan === undefined) {
    throw new Error('this build of the native addon has no CUDA path: it is built only where nvcc and cuBLAS are found (see docs/user-guide.md, "NVIDIA GPUs"), then `npm run install` rebuilds it')
  }
  const index = Number(match[1] ?? 0)
  if (index >= gpus.length) throw new Error(gpus.length === 0 ? 'no CUDA device found (is the NVIDIA driver loaded?)' : `no CUDA device ${index}: this machine has ${gpus.length}`)
  return gpu(index)
}

function requireAddon (): Addon {
  const native = loadAddon()
  if (native === null) throw new OptionError(['load.backend'], name => `the native addon is not available (${loadError}); use ${name('load.backend')} js`)
  return native
}

/** Where a checkpoint's tensor is, for the addon to read it (after checking its shape). */
async function source (checkpoint: Checkpoint, name: string, shape: number[]): Promise<TensorSource> {
  const { path, info } = await checkpoint.locate(name, shape)
  return { path, offset: info.offset, bytes: info.byteLength, dtype: info.dtype }
}

/**
 * Loads blocks [start, end) into the addon: it reads their bytes from the checkpoint's files
 * itself, or makes dummy weights (on the GPU when the span is there).
 */
export async function loadNativeSpan (weights: Checkpoint | DummyWeights, config: ModelConfig, start: number, end: number,
  options: NativeSpanOptions = {}): Promise<NativeBlockSpan> {
  const native = requireAddon()
  checkSpan(config, start, end)
  const device = resolveNativeDevice(options.device)
  const format = nativeFormat(config, device, options.format)
  const Span = device.kind === 'cuda' ? native.CudaBlockSpan! : native.BlockSpan
  const span = new Span({
    hidden: config.hiddenSize,
    intermediate: config.intermediateSize,
    heads: config.numHeads,
    kvHeads: config.numKvHeads,
    headDim: config.headDim,
    rmsNormEps: config.rmsNormEps,
    ropeInverseFrequencies: ropeInverseFrequencies(config),
    slidingWindow: config.slidingWindow ?? 0,
    attentionBias: config.attentionBias,
    mlpBias: config.mlpBias,
    layers: end - start,
    format,
    threads: options.threads ?? availableParallelism(),
    device: device.kind === 'cuda' ? device.index : undefined,
    maxCacheTokens: options.maxCacheTokens ?? 0
  })
  try {
    for (let i = start; i < end; i++) {
      try {
        if (weights instanceof DummyWeights) {
          await span.loadDummyLayer(i - start, i, weights.seed)
        } else {
          const sources = []
          for (const tensor of layerTensors(config, i)) sources.push(tensor.present ? await source(weights, tensor.name, tensor.shape) : null)
          await span.loadLayer(i - start, sources)
        }
      } catch (err) {
        (err as Error).message += ` (block ${i})` // the addon numbers blocks within the span
        throw err
      }
      options.onBlock?.(i)
    }
  } catch (err) {
    span.close()
    throw err
  }
  return new NativeBlockSpan(config, start, end, span)
}

export interface NativeHeadOptions {
  /** f32, bf16 or f16 (default: see nativeFormat) */
  format?: WeightFormat
  /** threads for lm_head on the CPU (default: all cores) */
  threads?: number
  /** cpu (default), cuda, cuda:N, or auto */
  device?: string
}

/** Loads the embeddings, final norm and lm_head into the addon (from the files, or dummy). */
export async function loadNativeHead (weights: Checkpoint | DummyWeights, config: ModelConfig, options: NativeHeadOptions = {}): Promise<NativeModelHead> {
  const native = requireAddon()
  const device = resolveNativeDevice(options.device)
  const format = nativeFormat(config, device, options.format)
  if (format === 'int8' || format === 'int4') throw new Error(`the head stores its weights in f32, bf16 or f16, not ${format}`)
  const Head = device.kind === 'cuda' ? native.CudaHead! : native.Head
  const head = new Head({
    vocab: config.vocabSize,
    hidden: config.hiddenSize,
    rmsNormEps: config.rmsNormEps,
    tied: config.tieWordEmbeddings,
    format,
    threads: options.threads ?? availableParallelism(),
    device: device.kind === 'cuda' ? device.index : undefined
  })
  try {
    if (weights instanceof DummyWeights) {
      await head.loadDummy(weights.seed)
    } else {
      const { vocabSize, hiddenSize } = config
      await head.load({
        embeddings: await source(weights, tensorNames.embed, [vocabSize, hiddenSize]),
        finalNorm: await source(weights, tensorNames.finalNorm, [hiddenSize]),
        lmHead: config.tieWordEmbeddings ? null : await source(weights, tensorNames.lmHead, [vocabSize, hiddenSize])
      })
    }
  } catch (err) {
    head.close()
    throw err
  }
  return new NativeModelHead(config, head)
}

/** The head in the addon: lm_head on the CPU's cores or a GPU, a worker thread per logits call. */
export class NativeModelHead implements ModelHead {
  readonly backend = 'native'
  readonly device: string
  readonly weightBytes: number
  readonly format: WeightFormat

  constructor (readonly config: ModelConfig, private readonly head: AddonHead) {
    const stats = head.stats()
    this.device = stats.device
    this.weightBytes = stats.weightBytes
    this.format = stats.format as WeightFormat
  }

  embed (ids: readonly number[]): Float32Array {
    const { vocabSize } = this.config
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`token id ${id} is outside the vocabulary (0..${vocabSize - 1})`)
    }
    return addonCall(() => this.head.embed(Int32Array.from(ids)))
  }

  async logits (hidden: Float32Array): Promise<Float32Array> {
    return await addonCallAsync(async () => await this.head.logits(hidden))
  }

  close (): void {
    this.head.close()
  }
}

export class NativeBlockSpan implements BlockSpan {
  readonly backend = 'native'
  readonly weightBytes: number
  readonly cacheBytesPerToken: number
  readonly format: WeightFormat
  /** cpu, or cuda:N */
  readonly device: string
  private readonly running = new Set<number>()

  constructor (readonly config: ModelConfig, readonly start: number, readonly end: number, private readonly span: AddonSpan) {
    const stats = span.stats()
    this.weightBytes = stats.weightBytes
    this.cacheBytesPerToken = stats.cacheBytesPerToken
    this.format = stats.format as WeightFormat
    this.device = stats.device
  }

  openSession (maxLength: number, blocks?: BlockRange): number {
    // Checked here too so the error names absolute blocks; the addon counts from the span's start.
    const { start, end } = sessionBlocks(this, blocks)
    return addonCall(() => this.span.openSession(maxLength, start - this.start, end - start))
  }

  async forward (session: number, hidden: Float32Array, position?: number): Promise<Float32Array> {
    const [out] = await this.forwardBatch([{ session, hidden, position }])
    return out
  }

  /**
   * Runs steps of several sessions (over the same blocks) as one batch: each weight is streamed
   * once for all of them.
   */
  async forwardBatch (steps: NativeStep[]): Promise<Float32Array[]> {
    // Steps of one session must run in the order they were asked for; the addon's worker threads
    // would not guarantee that, so a session takes one step at a time (as in the JS backend).
    for (const { session } of steps) {
      if (this.running.has(session)) throw new Error(`session ${session} is already running a step`)
    }
    const ids = new Set(steps.map(s => s.session))
    ids.forEach(id => this.running.add(id))
    try {
      return await addonCallAsync(async () => await this.span.forward(steps))
    } finally {
      ids.forEach(id => this.running.delete(id))
    }
  }

  sessionLength (session: number): number {
    return addonCall(() => this.span.sessionLength(session))
  }

  closeSession (session: number): void {
    addonCall(() => this.span.closeSession(session))
  }

  /** See BlockSpan.cacheUsage: reserved block-tokens over the span's blocks, limit per block. */
  cacheUsage (): { reserved: number, limit: number, sessions: number } {
    const stats = this.span.stats()
    return { reserved: stats.cacheLayerTokensReserved / stats.layers, limit: stats.maxCacheTokens, sessions: stats.sessions }
  }

  /**
   * Host memory the CPU span's forward workspace keeps between forwards: a decode step's at most,
   * since a larger forward gives its workspace back (addon/src/core/span.cc); 0 on CUDA.
   */
  workspaceBytes (): number {
    return this.span.stats().workspaceBytes ?? 0
  }

  close (): void {
    this.span.close()
  }
}
