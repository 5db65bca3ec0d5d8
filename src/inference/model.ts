// A whole model on this machine: the head (embeddings, final norm, lm_head) plus every block.
// It offers the same session interface that the distributed client offers, so the generation loop
// (generate.ts) runs unchanged on either.

import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { BlockSpan, ModelHead } from './backend.js'
import { loadConfig, type ModelConfig } from './config.js'
import { loadHead, loadSpan, openWeights, type LoadOptions } from './load-span.js'
import { Tokenizer } from './tokenizer.js'

/** A causal language model that can hold conversations with a KV cache. */
export interface LanguageModel {
  readonly config: ModelConfig
  readonly tokenizer: Tokenizer
  /** End-of-sequence ids (config.json and generation_config.json together). */
  readonly eosTokenIds: readonly number[]
  /** Opens a session whose caches hold up to `maxLength` tokens. */
  openSession (maxLength: number, options?: SessionOptions): Promise<LanguageModelSession>
}

/** Which machine computes which blocks of a session (a swarm model's chain of servers). */
export interface ServedBlocks {
  peerId: string
  /** blocks [start, end) */
  start: number
  end: number
}

export interface SessionOptions {
  /** hears the chain of servers at open and after every failover (swarm models only) */
  onRoute?: (route: readonly ServedBlocks[]) => void
  /** aborting gives up waiting for servers at once (swarm models; an AbortError) */
  signal?: AbortSignal
}

export interface LanguageModelSession {
  /** Tokens processed so far. */
  readonly length: number
  /**
   * Feeds token ids at `position` (default: after the last step; smaller rewinds the caches) and
   * returns the logits that follow the last of them.
   */
  step (ids: readonly number[], position?: number): Promise<Float32Array>
  close (): Promise<void>
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
    const weights = await openWeights(dir, options.loadFormat)
    let head: ModelHead | undefined
    try {
      head = await loadHead(weights, config, options)
      options.onProgress?.(`loaded embeddings, final norm and lm_head (${describeHead(head)})`)
      const blocks = await loadSpan(weights, config, 0, config.numLayers, options)
      options.onProgress?.(`loaded blocks 0:${config.numLayers} (${(blocks.weightBytes / 2 ** 20).toFixed(1)} MiB on the ${blocks.backend} backend)`)
      return new LocalModel(dir, config, tokenizer, await loadEosTokenIds(dir, config), head, blocks)
    } catch (err) {
      head?.close()
      throw err
    } finally {
      await weights.close()
    }
  }

  async openSession (maxLength: number): Promise<LanguageModelSession> {
    const id = this.blocks.openSession(maxLength)
    const { head, blocks } = this
    return {
      get length () { return blocks.sessionLength(id) },
      async step (ids, position) {
        if (ids.length === 0) throw new Error('a step needs at least one token')
        return await head.logits(await blocks.forward(id, head.embed(ids), position))
      },
      async close () { blocks.closeSession(id) }
    }
  }

  close (): void {
    this.blocks.close()
    this.head.close()
  }
}

/** e.g. "124.5 MiB, native bf16 on cuda:0" */
export function describeHead (head: ModelHead): string {
  const format = (head as { format?: string }).format
  return `${(head.weightBytes / 2 ** 20).toFixed(1)} MiB, ${head.backend}${format !== undefined ? ` ${format}` : ''} on ${head.device}`
}

/** EOS ids from config.json plus generation_config.json (Llama 3 instruct lists extra ones there). */
export async function loadEosTokenIds (dir: string, config: ModelConfig): Promise<number[]> {
  const ids = new Set(config.eosTokenIds)
  try {
    const generation = JSON.parse(await readFile(join(dir, 'generation_config.json'), 'utf8'))
    const extra = generation.eos_token_id
    for (const id of Array.isArray(extra) ? extra : [extra]) if (Number.isSafeInteger(id)) ids.add(id)
  } catch {}
  return [...ids]
}
