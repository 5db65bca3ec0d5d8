// Loading a span of blocks on the backend the user chose: the native addon when it is there
// (the default), else the JS reference, saying so once; or a PyTorch worker when asked for (torch).

import type { BackendName, BlockSpan } from './backend.js'
import { Checkpoint } from './checkpoint.js'
import { loadConfig, type ModelConfig } from './config.js'
import { loadJsSpan } from './js-backend.js'
import { loadTorchSpan } from './torch-backend.js'
import { loadAddon, loadNativeSpan, nativeUnavailableReason, type WeightFormat } from './native-backend.js'

export interface LoadOptions {
  /** block executor; 'auto' (default) is native when the addon loaded, else js with one warning */
  backend?: BackendName | 'auto'
  /**
   * native weight storage: f32, bf16, f16, int8, int4 (default: the checkpoint's dtype); torch:
   * f32, bf16 or f16 weights and compute (default: f32 on cpu, the checkpoint's dtype elsewhere)
   */
  format?: WeightFormat
  /** native kernel threads (default: all cores) */
  threads?: number
  /** KV cache tokens per block, Petals' attn_cache_tokens (default 0: no limit); see BlockSpan */
  maxCacheTokens?: number
  /** torch backend: the Python interpreter (default: $BMRT_PYTHON, else python3) */
  python?: string
  /** native: cpu (default), cuda, cuda:N or auto; torch: cpu (default), cuda, cuda:N or mps */
  device?: string
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

/** Loads blocks [start, end) from an open checkpoint on the chosen backend. */
export async function loadSpan (checkpoint: Checkpoint, config: ModelConfig, start: number, end: number, options: LoadOptions = {}): Promise<BlockSpan> {
  const backend = resolveBackend(options.backend)
  if (backend === 'native') return await loadNativeSpan(checkpoint, config, start, end, options)
  if (backend === 'torch') {
    const format = options.format
    if (format === 'int8' || format === 'int4') throw new Error(`the torch backend runs f32, bf16 or f16 weights; ${format} needs the native backend`)
    return await loadTorchSpan(checkpoint.dir, config, start, end,
      { python: options.python, device: options.device, format, maxCacheTokens: options.maxCacheTokens, onBlock: options.onBlock })
  }
  if (options.format !== undefined && options.format !== 'f32') {
    throw new Error(`the js backend computes in f32; weight format ${options.format} needs the native backend`)
  }
  return await loadJsSpan(checkpoint, config, start, end, { onBlock: options.onBlock, maxCacheTokens: options.maxCacheTokens })
}

/** Loads blocks [start, end) of the model in `dir`, reading no other block's bytes. */
export async function loadBlockSpan (dir: string, start: number, end: number, options: LoadOptions = {}): Promise<BlockSpan> {
  const config = await loadConfig(dir)
  const checkpoint = await Checkpoint.open(dir)
  try {
    return await loadSpan(checkpoint, config, start, end, options)
  } finally {
    await checkpoint.close()
  }
}

