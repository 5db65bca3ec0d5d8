// A whole model on this machine: the head (embeddings, final norm, lm_head) plus every block.
// It offers the same session interface that the distributed client offers, so the generation loop
// (generate.ts) runs unchanged on either.

import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { BackendName, BlockSpan, ModelHead } from './backend.js'
import { Checkpoint } from './checkpoint.js'
import { loadConfig, type ModelConfig } from './config.js'
import { loadJsHead, loadJsSpan } from './js-backend.js'
import { loadAddon, loadNativeSpan, nativeUnavailableReason, type WeightFormat } from './native-backend.js'
import { Tokenizer } from './tokenizer.js'

/** A causal language model that can hold conversations with a KV cache. */
export interface LanguageModel {
  readonly config: ModelConfig
  readonly tokenizer: Tokenizer
  /** End-of-sequence ids (config.json and generation_config.json together). */
  readonly eosTokenIds: readonly number[]
  /** Opens a session whose caches hold up to `maxLength` tokens. */
  openSession (maxLength: number): Promise<LanguageModelSession>
}

export interface LanguageModelSession {
  /** Tokens processed so far. */
  readonly length: number
  /** Feeds new token ids and returns the logits that follow the last of them. */
  step (ids: readonly number[]): Promise<Float32Array>
  close (): Promise<void>
}

export interface LoadOptions {
  /** block executor; 'auto' (default) is native when the addon loaded, else js with one warning */
  backend?: BackendName | 'auto'
  /** native weight storage: f32, bf16, f16, int8, int4 (default: the checkpoint's dtype) */
  format?: WeightFormat
  /** native kernel threads (default: all cores) */
  threads?: number
  /** tokens all sessions' KV caches may reserve together (native; default: no limit) */
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
  return await loadJsSpan(checkpoint, config, start, end, options.onBlock)
}

export class LocalModel implements LanguageModel {
  private constructor (
    readonly dir: string,
    readonly config: ModelConfig,
    readonly tokenizer: Tokenizer,
    readonly eosTokenIds: readonly number[],
    readonly head: ModelHead,
    readonly blocks: BlockSpan
  ) {}

  static async load (dir: string, options: LoadOptions = {}): Promise<LocalModel> {
    const config = await loadConfig(dir)
    const tokenizer = await Tokenizer.load(dir)
    const checkpoint = await Checkpoint.open(dir)
    try {
      const head = await loadJsHead(checkpoint, config)
      options.onProgress?.('loaded embeddings, final norm and lm_head')
      const blocks = await loadSpan(checkpoint, config, 0, config.numLayers, options)
      options.onProgress?.(`loaded blocks 0:${config.numLayers} (${(blocks.weightBytes / 2 ** 20).toFixed(1)} MiB on the ${blocks.backend} backend)`)
      return new LocalModel(dir, config, tokenizer, await eosIds(dir, config), head, blocks)
    } finally {
      await checkpoint.close()
    }
  }

  async openSession (maxLength: number): Promise<LanguageModelSession> {
    const id = this.blocks.openSession(maxLength)
    const { head, blocks } = this
    return {
      get length () { return blocks.sessionLength(id) },
      async step (ids) {
        if (ids.length === 0) throw new Error('a step needs at least one token')
        return head.logits(await blocks.forward(id, head.embed(ids)))
      },
      async close () { blocks.closeSession(id) }
    }
  }

  close (): void {
    this.blocks.close()
  }
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

/** EOS ids from config.json plus generation_config.json (Llama 3 instruct lists extra ones there). */
async function eosIds (dir: string, config: ModelConfig): Promise<number[]> {
  const ids = new Set(config.eosTokenIds)
  try {
    const generation = JSON.parse(await readFile(join(dir, 'generation_config.json'), 'utf8'))
    const extra = generation.eos_token_id
    for (const id of Array.isArray(extra) ? extra : [extra]) if (Number.isSafeInteger(id)) ids.add(id)
  } catch {}
  return [...ids]
}
