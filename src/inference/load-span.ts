// Loading a span of blocks on the backend the user chose: the native addon when it is there
// (the default), else the JS reference, saying so once.

import type { BackendName, BlockSpan } from './backend.js'
import { Checkpoint } from './checkpoint.js'
import { loadConfig, type ModelConfig } from './config.js'
import { loadJsSpan } from './js-backend.js'
import { loadAddon, loadNativeSpan, nativeUnavailableReason, type WeightFormat } from './native-backend.js'

export interface LoadOptions {
  /** block executor; 'auto' (default) is native when the addon loaded, else js with one warning */
  backend?: BackendName | 'auto'
  /** native weight storage: f32, bf16, f16, int8, int4 (default: the checkpoint's dtype) */
  format?: WeightFormat
  /** native kernel threads (default: all cores) */
  threads?: number
  /** KV cache tokens per block, Petals' attn_cache_tokens (default 0: no limit); see BlockSpan */
  maxCacheTokens?: number
  /** progress callback, called once per loaded part */
  onProgress?: (message: string) => void
  /** called after each block is loaded */
  onBlock?: (block: number) => void
}

let warnedFallback = false

/** The backend `auto` means here: native when the addon loads, else js (warning once). */
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

