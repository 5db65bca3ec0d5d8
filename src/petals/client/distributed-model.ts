// The client SDK (Petals' AutoDistributedModelForCausalLM): a model whose blocks run on a swarm.
// Only the embeddings, final norm and lm_head are loaded here; hidden states stream through a
// chain of servers found in the DHT. It is a LanguageModel, so the generation loop, sampling and
// multi-turn conversations work exactly as they do on a local model.
//
//   const model = await DistributedModel.load('models/stories260K', { initialPeers: [addr] })
//   for await (const token of model.generate('Once upon a time')) process.stdout.write(token.text)
//   await model.close()

import type { ModelHead } from '../../inference/backend.js'
import { loadConfig, type ModelConfig } from '../../inference/config.js'
import type { DType } from '../../inference/dtype.js'
import { Conversation, generate, type GeneratedToken, type GenerateOptions, type GenerationResult } from '../../inference/generate.js'
import { loadHead, openWeights, type LoadOptions } from '../../inference/load-span.js'
import { describeHead, loadEosTokenIds, type LanguageModel, type LanguageModelSession, type SessionOptions } from '../../inference/model.js'
import { Tokenizer } from '../../inference/tokenizer.js'
import { createNode, joinSwarm, type BmrtNode } from '../../p2p/node.js'
import { Registry } from '../../p2p/registry.js'
import { FORWARD_PROTOCOL, modelWireDType } from '../protocol/wire.js'
import { DEFAULT_MAX_RETRIES, InferenceSession, withRetries, type InferenceSessionOptions, type SessionContext } from './inference-session.js'
import { swarmModelName } from '../protocol/model-name.js'
import { HopError, RemoteSpan, type ReceiptListener } from './remote-span.js'
import type { Evidence } from '../protocol/evidence.js'
import { formatRoute, MissingBlocksError, type RouteHop } from './routing.js'
import type { SpotCheckResult } from './spot-check.js'
import { retryDelayMs } from './ban-list.js'
import { SequenceManager, type SequenceManagerOptions } from './sequence-manager.js'
import { EvidenceExchange } from './evidence-exchange.js'

export interface DistributedModelOptions extends SequenceManagerOptions {
  /** multiaddrs of swarm peers to join through */
  initialPeers: string[]
  /** a private swarm's pre-shared key (see NodeOptions.swarmKey) */
  swarmKey?: Uint8Array
  /**
   * the name servers announce the model under
   * @default see swarmModelName (the folder's name)
   */
  modelName?: string
  /**
   * how the head (embeddings, final norm, lm_head) is loaded: backend, device, format, threads,
   * and loadFormat 'dummy' for a swarm serving dummy weights
   * @default {} (native on the CPU's cores)
   */
  head?: LoadOptions
  /** activations on the wire: f32, bf16 or f16 (default: the model's dtype, f32 when unknown) */
  dtype?: DType
  /**
   * failed attempts in a row, with no hop answering between them, before a step gives up
   * @default DEFAULT_MAX_RETRIES (8)
   */
  maxRetries?: number
  /**
   * opening a server session
   * @default DEFAULT_CONNECT_TIMEOUT_MS (5 s)
   */
  connectTimeoutMs?: number
  /**
   * one server's answer to one step
   * @default DEFAULT_CLIENT_STEP_TIMEOUT_MS (60 s)
   */
  stepTimeoutMs?: number
  /**
   * the share of inference steps re-run on a second server that holds the same blocks, to catch
   * servers that compute wrong (spot-check.ts); 0 turns checks off
   * @default DEFAULT_VERIFY_RATE (0.05)
   */
  verifyRate?: number
  /** hears what each spot check found (which server checked which, and the outcome) */
  onSpotCheck?: (result: SpotCheckResult, hop: RouteHop) => void
  /** hears of every chain chosen (at open and after failovers) */
  onRoute?: (route: readonly RouteHop[], reason: string) => void
  /** progress while connecting, and waits before retries */
  onProgress?: (message: string) => void
}

/**
 * Hears of the work servers do for a DistributedModel (a gateway's credit ledger listens): every
 * receipt a server sent, and every server a spot check found wrong, with the evidence.
 */
export interface WorkListener {
  /** a receipt whose fields and hashes were checked against the step; its signature is not checked yet */
  receipt?: ReceiptListener
  /** `peerId` was found wrong; `evidence` disproves its receipts for that session (null: none could be made) */
  disproven?: (peerId: string, evidence: Evidence | null) => void
}

export class DistributedModel implements LanguageModel {
  private constructor (
    readonly config: ModelConfig,
    readonly tokenizer: Tokenizer,
    readonly eosTokenIds: readonly number[],
    readonly head: ModelHead,
    readonly node: BmrtNode,
    readonly manager: SequenceManager,
    private readonly context: SessionContext,
    private readonly options: DistributedModelOptions,
    private readonly listeners: Set<WorkListener>,
    /** evidence this client publishes, and checks when other clients' evidence names a server */
    readonly evidence: EvidenceExchange
  ) {}

  /** Tells `listener` of the servers' work from now on; the returned function stops that. */
  watchWork (listener: WorkListener): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /** Loads the model's ends from `dir` and joins the swarm serving its blocks. */
  static async load (dir: string, options: DistributedModelOptions): Promise<DistributedModel> {
    if (options.initialPeers.length === 0) throw new Error('give the swarm\'s initial peers (multiaddrs) to connect to')
    const progress = options.onProgress ?? (() => {})
    const config = await loadConfig(dir)
    const tokenizer = await Tokenizer.load(dir)
    const weights = await openWeights(dir, options.head?.loadFormat)
    let head: ModelHead
    try {
      head = await loadHead(weights, config, options.head) // the blocks' weights are never read
    } finally {
      await weights.close()
    }
    progress(`loaded embeddings, final norm and lm_head (${describeHead(head)})`)
    const dtype = options.dtype ?? modelWireDType(config.dtype)
    const modelName = options.modelName ?? swarmModelName(dir, options.head?.loadFormat)
    let node: BmrtNode | undefined
    try {
      node = await createNode({ role: 'client', bootstrap: options.initialPeers, swarmKey: options.swarmKey })
      progress('joining the swarm...')
      await joinSwarm(node)
      const manager = new SequenceManager(node, new Registry(node), modelName, config.numLayers, options)
      await manager.update()
      progress(`found ${manager.servers.length} server${manager.servers.length === 1 ? '' : 's'} of ${modelName}`)
      const listeners = new Set<WorkListener>()
      const context: SessionContext = {
        node, manager, model: modelName, numBlocks: config.numLayers, hiddenSize: config.hiddenSize, dtype, log: options.onProgress,
        onReceipt: (peerId, signed, receipt) => { for (const l of listeners) l.receipt?.(peerId, signed, receipt) }
      }
      const evidence = new EvidenceExchange(context, {
        connectTimeoutMs: options.connectTimeoutMs,
        stepTimeoutMs: options.stepTimeoutMs,
        onDisproven: (peerId, e) => { for (const l of listeners) l.disproven?.(peerId, e) }
      })
      // Each look at the swarm may bring records that name servers as disproven: checked in the
      // background, so routing does not wait on it (a spot check still catches what slips through).
      const review = (): void => { evidence.review().catch(err => progress(`checking published evidence failed: ${(err as Error).message}`)) }
      manager.afterUpdate(review)
      review()
      return new DistributedModel(config, tokenizer, await loadEosTokenIds(dir, config), head, node, manager, context, options, listeners, evidence)
    } catch (err) {
      head.close()
      await node?.stop()
      throw err
    }
  }

  /** An inference session over the whole model for raw hidden states ([batch, tokens, hidden]). */
  async inferenceSession (options: InferenceSessionOptions): Promise<InferenceSession> {
    const { onRoute, onSpotCheck } = options
    return await InferenceSession.open(this.context, {
      maxRetries: this.options.maxRetries,
      connectTimeoutMs: this.options.connectTimeoutMs,
      stepTimeoutMs: this.options.stepTimeoutMs,
      verifyRate: this.options.verifyRate,
      ...options,
      onRoute: (route, reason) => {
        this.options.onRoute?.(route, reason)
        onRoute?.(route, reason)
      },
      onSpotCheck: (result, hop) => {
        this.options.onSpotCheck?.(result, hop)
        onSpotCheck?.(result, hop)
        if (result.outcome !== 'server wrong') return
        for (const l of this.listeners) l.disproven?.(hop.peerId, result.evidence)
        // Other clients learn of it through the servers of the same blocks, which check it first.
        if (result.evidence !== null) this.evidence.publish(hop.peerId, result.evidence).catch(err => this.options.onProgress?.(`publishing the evidence failed: ${(err as Error).message}`))
      }
    })
  }

  /** LanguageModel: a one-sequence session from token ids to logits. */
  async openSession (maxLength: number, options: SessionOptions = {}): Promise<LanguageModelSession> {
    const session = await this.inferenceSession({ maxLength, onRoute: options.onRoute, signal: options.signal })
    const { head } = this
    return {
      get length () { return session.position },
      async step (ids, position) {
        if (ids.length === 0) throw new Error('a step needs at least one token')
        return await head.logits(await session.step(head.embed(ids), position))
      },
      async close () { session.close() }
    }
  }

  /** Streams a continuation of `prompt` (text, or token ids). */
  generate (prompt: string | readonly number[], options: GenerateOptions = {}): AsyncGenerator<GeneratedToken, GenerationResult> {
    return generate(this, typeof prompt === 'string' ? this.tokenizer.encode(prompt) : prompt, options)
  }

  /** A multi-turn conversation whose turns keep the servers' caches (at most `maxLength` tokens). */
  async session (maxLength: number): Promise<Conversation> {
    return await Conversation.open(this, maxLength)
  }

  /**
   * Runs hidden states [batch, tokens, hidden] through blocks [start, end) without keeping caches
   * (batch work: scoring, embeddings). Routes spread load by throughput; on a failure the rest of
   * the range is routed again from the failed hop's first block.
   */
  async forward (hidden: Float32Array, options: { batch?: number, start?: number, end?: number } = {}): Promise<Float32Array> {
    const { batch = 1, start = 0, end = this.config.numLayers } = options
    const size = this.config.hiddenSize
    if (!(start >= 0 && start < end && end <= this.config.numLayers)) throw new RangeError(`blocks ${start}:${end} are not a range of the model's ${this.config.numLayers}`)
    if (hidden.length === 0 || hidden.length % (batch * size) !== 0) throw new RangeError(`hidden states must be [${batch}, tokens, ${size}], got ${hidden.length} values`)
    const tokens = hidden.length / (batch * size)
    const maxRetries = this.options.maxRetries ?? DEFAULT_MAX_RETRIES
    let x = hidden
    let block = start
    let route = await withRetries(maxRetries, async () => await this.manager.forwardRoute(block, end), this.options.onProgress)
    for (let attempt = 0; block < end;) {
      const hop = route[0]
      let remote: RemoteSpan | null = null
      try {
        remote = await RemoteSpan.open(this.node, hop, {
          protocol: FORWARD_PROTOCOL, model: this.context.model, maxLength: tokens, batch, hiddenSize: size, dtype: this.context.dtype,
          connectTimeoutMs: this.options.connectTimeoutMs, stepTimeoutMs: this.options.stepTimeoutMs, format: this.manager.formatOf(hop.peerId),
          onReceipt: this.context.onReceipt
        })
        x = await remote.step(x, tokens, 0)
        this.manager.onSuccess(hop.peerId)
        block = hop.end
        route = route.slice(1)
        attempt = 0
      } catch (err) {
        if (!(err instanceof HopError) || attempt >= maxRetries) throw err
        this.manager.onFailure(hop.peerId)
        await new Promise(resolve => setTimeout(resolve, retryDelayMs(attempt++)))
        try {
          route = await this.manager.forwardRoute(block, end)
        } catch (e) {
          if (!(e instanceof MissingBlocksError)) throw e
        }
        this.options.onRoute?.(route, `forward: ${err.message}; continuing via ${formatRoute(route)}`)
      } finally {
        remote?.close()
      }
    }
    return x
  }

  /** Leaves the swarm and frees the head. */
  async close (): Promise<void> {
    await this.node.stop()
    this.head.close()
  }
}
