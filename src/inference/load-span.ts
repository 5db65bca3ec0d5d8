// Loading a span of blocks, or the model's head, on the backend the user chose: the native addon
// when it is there (the default), else the JS reference, saying so once; or a PyTorch worker when
// asked for (torch, blocks only). Weights come from the model directory's safetensors files, or
// are made in memory (`loadFormat: 'dummy'`, see dummy-weights.ts).

import type { BackendName, BlockSpan, ModelHead } from './backend.js'
import { Checkpoint } from './checkpoint.js'
import { loadConfig, type ModelConfig } from './config.js'
import { DummyWeights, type LoadFormat } from './dummy-weights.js'
import { loadJsHead, loadJsSpan } from './js-backend.js'
import { loadTorchSpan } from './torch-backend.js'
import type { WeightFormat } from './dtype.js'
import { loadAddon, loadNativeHead, loadNativeSpan, nativeUnavailableReason } from './native-backend.js'
import { OptionError } from '../util/errors.js'

export interface LoadOptions {
  /**
   * block executor; 'auto' is native when the addon loaded, else js with one warning
   * @default 'auto'
   */
  backend?: BackendName | 'auto'
  /**
   * native weight storage: f32, bf16, f16, int8, int4 (default: the checkpoint's dtype; bf16 on a
   * GPU); torch: f32, bf16 or f16 weights and compute (default: f32 on cpu, the checkpoint's dtype
   * elsewhere). A head keeps int8 and int4 requests to the blocks and stores its default.
   */
  format?: WeightFormat
  /**
   * native kernel threads
   * @default availableParallelism() (all cores)
   */
  threads?: number
  /**
   * KV cache tokens per block, Petals' attn_cache_tokens (0: no limit); see BlockSpan. A
   * BlockServer passes defaultCacheTokens (planning/memory-plan.ts) when none is given.
   * @default 0
   */
  maxCacheTokens?: number
  /**
   * torch backend: the Python interpreter
   * @default $BMRT_PYTHON, else 'python3'
   */
  python?: string
  /**
   * native: cpu, cuda, cuda:N or auto; torch: cpu, cuda, cuda:N or mps
   * @default 'cpu'
   */
  device?: string
  /**
   * safetensors: the model directory's files; dummy: random values of the model's shape made in
   * memory (native and js), for benchmarks: only config.json is read
   * @default 'safetensors'
   */
  loadFormat?: LoadFormat
  /** progress callback, called once per loaded part */
  onProgress?: (message: string) => void
  /** called after each block is loaded */
  onBlock?: (block: number) => void
}

let warnedFallback = false

/** The backend `auto` means here: native when the addon loads, else js (warning once); never torch. */
export function resolveBackend (backend: BackendName | 'auto' = 'auto'): BackendName {
  if (backend !== 'auto') return backend
  if (loadAddon() !== null) return 'native'
  if (!warnedFallback) {
    warnedFallback = true
    process.emitWarning(`the native addon is not available (${nativeUnavailableReason()}); running blocks on the JS backend, which is much slower`, { code: 'BMRT_NO_ADDON' })
  }
  return 'js'
}

/** The model directory's checkpoint, or dummy weights: close it when done. */
export async function openWeights (dir: string, loadFormat: LoadFormat = 'safetensors'): Promise<Checkpoint | DummyWeights> {
  if (loadFormat === 'dummy') return new DummyWeights()
  if (loadFormat !== 'safetensors') throw new Error(`unknown load format '${String(loadFormat)}': use safetensors or dummy`)
  return await Checkpoint.open(dir)
}

/** Loads blocks [start, end) from open weights on the chosen backend. */
export async function loadSpan (weights: Checkpoint | DummyWeights, config: ModelConfig, start: number, end: number, options: LoadOptions = {}): Promise<BlockSpan> {
  const backend = resolveBackend(options.backend)
  if (backend === 'native') return await loadNativeSpan(weights, config, start, end, options)
  if (backend === 'torch') {
    const format = options.format
    if (format === 'int8' || format === 'int4') throw new Error(`the torch backend runs f32, bf16 or f16 weights; ${format} needs the native backend`)
    if (weights instanceof DummyWeights) throw new Error('dummy weights are made by the native and js backends, not torch')
    return await loadTorchSpan(weights.dir, config, start, end,
      { python: options.python, device: options.device, format, maxCacheTokens: options.maxCacheTokens, onBlock: options.onBlock })
  }
  if (options.format !== undefined && options.format !== 'f32') {
    throw new Error(`the js backend computes in f32; weight format ${options.format} needs the native backend`)
  }
  if (!['cpu', 'auto', undefined].includes(options.device)) {
    throw new OptionError(['load.device'], name => `${name('load.device')} ${options.device ?? ''} needs the native or torch backend; the js backend runs on the CPU`)
  }
  return await loadJsSpan(weights, config, start, end, { onBlock: options.onBlock, maxCacheTokens: options.maxCacheTokens })
}

/** Loads blocks [start, end) of the model in `dir`, reading no other block's bytes. */
export async function loadBlockSpan (dir: string, start: number, end: number, options: LoadOptions = {}): Promise<BlockSpan> {
  const config = await loadConfig(dir)
  const weights = await openWeights(dir, options.loadFormat)
  try {
    return await loadSpan(weights, config, start, end, options)
  } finally {
    await weights.close()
  }
}

/**
 * Loads the embeddings, final norm and lm_head: native (lm_head on all cores, or the GPU that
 * `device` names) unless the backend is js or the addon is missing. A torch client's head is native.
 */
export async function loadHead (weights: Checkpoint | DummyWeights, config: ModelConfig, options: LoadOptions = {}): Promise<ModelHead> {
  const backend = options.backend === 'torch' ? resolveBackend('auto') : resolveBackend(options.backend)
  if (backend === 'js') return await loadJsHead(weights, config)
  const format = options.format === 'int8' || options.format === 'int4' ? undefined : options.format
  const device = options.backend === 'torch' ? 'cpu' : options.device
  return await loadNativeHead(weights, config, { format, threads: options.threads, device })
}
