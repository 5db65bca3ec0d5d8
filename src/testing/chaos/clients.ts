// A client of the chaos run: a DistributedModel of its own (its own libp2p node, as a separate
// user would have) that generates greedy continuations of the reference prompts one after another
// and checks each against its reference. It records every token, every failover the SDK reports
// (onRoute after "open") and how long each failure held the generation up.

import { collect } from '../../inference/generate.js'
import { DistributedModel } from '../../petals/client/distributed-model.js'
import type { RouteHop } from '../../petals/client/routing.js'
import type { Recorder } from './record.js'
import type { ReferencePrompt } from './reference.js'

export interface ClientOptions {
  initialPeers: string[]
  modelName: string
  connectTimeoutMs: number
  stepTimeoutMs: number
  /** the share of steps spot-checked (undefined: the SDK's default) */
  verifyRate?: number
  /** readable names for peer ids in the log */
  names: (text: string) => string
}

export class ChaosClient {
  /** the route of the generation running now (empty between generations) */
  route: readonly RouteHop[] = []
  private model: DistributedModel | null = null
  private lastProgress = 0
  private failovers = 0
  private stall: { since: number, detectedAt: number, failovers: number } | null = null

  constructor (readonly index: number, private readonly recorder: Recorder, private readonly options: ClientOptions) {}

  async connect (modelDir: string): Promise<void> {
    const { recorder, options } = this
    let loaded = false
    this.model = await DistributedModel.load(modelDir, {
      initialPeers: options.initialPeers,
      modelName: options.modelName,
      connectTimeoutMs: options.connectTimeoutMs,
      stepTimeoutMs: options.stepTimeoutMs,
      verifyRate: options.verifyRate,
      onRoute: (route, reason) => this.onRoute(route, reason),
      onSpotCheck: (result, hop) => {
        // The checked server found wrong, or the second server (its verifier) when a third sided with the checked one.
        const wrong = result.outcome === 'server wrong' ? hop.peerId : result.outcome === 'verifier wrong' ? result.verifier : null
        if (wrong !== null) recorder.convictions.push({ client: this.index, peerId: wrong, atMs: recorder.now(), by: 'spot check' })
        recorder.checks[result.outcome] = (recorder.checks[result.outcome] ?? 0) + 1
        if (result.outcome === 'unchecked') recorder.say(`c${this.index}: a step of ${options.names(hop.peerId)} went unchecked: ${result.why}`)
      },
      onProgress: message => {
        if (!loaded) return // joining and finding servers
        if (/; (retrying blocks \d+:\d+|looking again) in [\d.]+ s/.test(message)) recorder.waits++
        const evidence = /holds evidence against (\w+);/.exec(message) // banned on evidence another client published
        if (evidence !== null) recorder.convictions.push({ client: this.index, peerId: evidence[1], atMs: recorder.now(), by: 'evidence' })
        recorder.say(`c${this.index}: ${options.names(message)}`)
      }
    })
    loaded = true
  }

  private onRoute (route: readonly RouteHop[], reason: string): void {
    this.route = [...route]
    if (reason === 'open') return
    const now = this.recorder.now()
    this.failovers++
    this.recorder.failoverTimes.push(now)
    if (this.stall === null) this.stall = { since: this.lastProgress, detectedAt: now, failovers: 0 }
    this.stall.failovers++
    this.recorder.say(`c${this.index}: failover: ${this.options.names(reason)}`)
  }

  private onToken (): void {
    const now = this.recorder.now()
    this.recorder.tokenTimes.push(now)
    this.lastProgress = now
    if (this.stall !== null) {
      const { since, detectedAt, failovers } = this.stall
      this.recorder.stalls.push({ client: this.index, atMs: since, ms: now - since, detectMs: detectedAt - since, failovers })
      this.stall = null
    }
  }

  /**
   * Generates until `stopping()` says so (the generation under way is finished), taking the
   * prompts in turn from `first`; aborting `signal` cuts the one under way off.
   */
  async run (prompts: readonly ReferencePrompt[], options: { first: number, newTokens: number, stopping: () => boolean, signal: AbortSignal }): Promise<void> {
    const model = this.model
    if (model === null) throw new Error('connect() first')
    for (let k = options.first; !options.stopping() && !options.signal.aborted; k++) {
      const index = k % prompts.length
      const prompt = prompts[index]
      const startMs = this.recorder.now()
      this.lastProgress = startMs
      this.failovers = 0
      this.stall = null
      const record = { client: this.index, prompt: index, startMs }
      try {
        const result = await collect(model.generate(prompt.ids, { maxNewTokens: options.newTokens, ignoreEos: true, signal: options.signal }), () => this.onToken())
        const differs = prompt.expected.findIndex((id, i) => result.ids[i] !== id)
        const outcome = result.finishReason === 'aborted' ? 'cut off' : differs === -1 && result.ids.length === prompt.expected.length ? 'equal' : 'wrong'
        const detail = outcome === 'wrong' ? `token ${differs === -1 ? result.ids.length : differs} differs: got [${result.ids.join(' ')}], expected [${prompt.expected.join(' ')}]` : undefined
        this.recorder.generations.push({ ...record, endMs: this.recorder.now(), outcome, failovers: this.failovers, detail })
        if (outcome === 'wrong') this.recorder.say(`c${this.index}: WRONG OUTPUT for prompt ${index}: ${detail}`)
      } catch (err) {
        const outcome = options.signal.aborted ? 'cut off' : 'failed'
        const detail = this.options.names((err as Error).message)
        this.recorder.generations.push({ ...record, endMs: this.recorder.now(), outcome, failovers: this.failovers, detail })
        if (outcome === 'failed') this.recorder.say(`c${this.index}: GENERATION FAILED: ${detail}`)
      } finally {
        this.route = []
      }
    }
  }

  /** Whether this client has `peerId` banned now. */
  hasBanned (peerId: string): boolean {
    return this.model?.manager.bans.isBanned(peerId) ?? false
  }

  async close (): Promise<void> {
    await this.model?.close()
  }
}
