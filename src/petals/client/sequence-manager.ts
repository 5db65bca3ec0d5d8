// What a client knows about the swarm serving one model (Petals' RemoteSequenceManager): the
// servers' spans from the DHT registry, refreshed every update period and at once after a failure,
// round-trip times to them, and bans of servers that failed. It turns that into routes.

import { peerIdFromString } from '@libp2p/peer-id'
import type { BmrtNode } from '../../p2p/node.js'
import type { WeightFormat } from '../../inference/dtype.js'
import { DEFAULT_UPDATE_PERIOD_MS, type Registry } from '../../p2p/registry.js'
import { maxThroughputRoute, minLatencyRoute, missingBlocks, serverSpanFromRecord, type RouteHop, type ServerSpan } from './routing.js'
import { BanList } from './ban-list.js'
import { ServerSpeeds, StepTimes } from './remote-span.js'

/**
 * Once the span records found cover every block, a refresh waits this much longer for the rest, not
 * for the slowest: an advertiser that does not answer for its record costs up to
 * RECORD_ASK_TIMEOUT_MS (issue 20, row 4).
 */
export const SPAN_LOOKUP_GRACE_MS = 1000

export interface SequenceManagerOptions {
  /**
   * refresh the swarm's spans this often
   * @default DEFAULT_UPDATE_PERIOD_MS (60 s, as Petals)
   */
  updatePeriodMs?: number
  /**
   * first ban of a failing server; doubles with each further failure (as Petals)
   * @default DEFAULT_BAN_TIMEOUT_MS (15 s)
   */
  banTimeoutMs?: number
  /** only these servers (peer ids), if given */
  allowedServers?: readonly string[]
  /** never these servers */
  blockedServers?: readonly string[]
}

export class SequenceManager {
  private spans: ServerSpan[] = []
  private updatedAt = 0
  private updating: Promise<void> | null = null
  private readonly rtts = new Map<string, number>()
  readonly bans: BanList
  /** how long inference steps took, for every session of this client (they shorten step timeouts) */
  readonly stepTimes = new StepTimes()
  /** how fast each server answered this client's steps: routing trusts that over its record */
  readonly speeds = new ServerSpeeds(peerId => this.rtts.get(peerId))

  constructor (private readonly node: BmrtNode, private readonly registry: Registry, readonly model: string,
    readonly numBlocks: number, private readonly options: SequenceManagerOptions = {}) {
    this.bans = new BanList({ banTimeoutMs: options.banTimeoutMs })
  }

  /** The servers known now (after the allow and block lists). */
  get servers (): readonly ServerSpan[] {
    return this.spans
  }

  /** The weight format `peerId` announced (undefined: not known, or it announced none). */
  formatOf (peerId: string): WeightFormat | undefined {
    return this.spans.find(s => s.peerId === peerId)?.format
  }

  private readonly updateListeners: Array<() => void> = []

  /** Calls `listener` after each look at the swarm (the evidence exchange reads the new records). */
  afterUpdate (listener: () => void): void {
    this.updateListeners.push(listener)
  }

  /** Fetches every ONLINE span of the model and pings servers not pinged yet. */
  async update (): Promise<void> {
    this.updating ??= this.fetch().finally(() => { this.updating = null })
    await this.updating
  }

  private async fetch (): Promise<void> {
    const records = await this.registry.findSpans(this.model, this.numBlocks, ['online'], { graceMs: SPAN_LOOKUP_GRACE_MS, ownersOnly: true })
    const allowed = this.options.allowedServers
    const blocked = new Set(this.options.blockedServers ?? [])
    this.spans = records.map(serverSpanFromRecord)
      .filter(s => !blocked.has(s.peerId) && (allowed === undefined || allowed.includes(s.peerId)))
    this.updatedAt = Date.now()
    await Promise.all(this.spans.filter(s => !Number.isFinite(this.rtts.get(s.peerId) ?? NaN)).map(async s => await this.ping(s.peerId)))
    for (const listener of this.updateListeners) listener()
  }

  /** Round trip to a server in seconds, smoothed as Petals does (EMA 0.2); unreachable: infinite. */
  private async ping (peerId: string): Promise<void> {
    try {
      // libp2p's connection monitor pings every connection every 2 s and keeps the round trip
      // (Connection.rtt); a ping of ours at the same moment would be a second outbound ping stream,
      // over @libp2p/ping's limit of one, and when the monitor's is the one refused, the monitor
      // aborts the connection. So a measured round trip is taken as it is.
      const peer = peerIdFromString(peerId)
      const measured = this.node.getConnections(peer).find(c => c.rtt !== undefined)?.rtt
      const rtt = (measured ?? await this.node.services.ping.ping(peer, { signal: AbortSignal.timeout(2000) })) / 1000
      const previous = this.rtts.get(peerId)
      this.rtts.set(peerId, previous === undefined ? rtt : 0.8 * previous + 0.2 * rtt)
    } catch {
      this.rtts.set(peerId, Infinity) // routing caps it at its worst delay, as Petals does
    }
  }

  private async fresh (): Promise<void> {
    await this.updateIfOlder(this.options.updatePeriodMs ?? DEFAULT_UPDATE_PERIOD_MS)
  }

  /** Looks at the swarm again if the last look is more than `ms` old. */
  async updateIfOlder (ms: number): Promise<void> {
    if (Date.now() - this.updatedAt > ms) await this.update()
  }

  /**
   * The fastest chain over blocks [start, end) for an inference session reserving
   * `cacheTokensNeeded` tokens per server. Refreshes once when blocks seem missing.
   */
  async inferenceRoute (start: number, end: number, cacheTokensNeeded: number): Promise<RouteHop[]> {
    return await this.route(spans => minLatencyRoute(spans.map(s => this.measured(s)), start, end, { rtts: this.rtts, cacheTokensNeeded, model: this.model }), start, end)
  }

  /** A chain for forward work over [start, end), spreading load by throughput. */
  async forwardRoute (start: number, end: number): Promise<RouteHop[]> {
    return await this.route(spans => maxThroughputRoute(spans.map(s => this.measured(s)), start, end), start, end)
  }

  /**
   * `span` as its answers showed it: once this client measured the server's decode speed
   * (ServerSpeeds), that is its inferenceRps, and an announced throughput is scaled down by as much
   * as the measured speed falls short of the announced one. A server cannot draw traffic by
   * announcing more than it does for longer than a few steps.
   */
  private measured (span: ServerSpan): ServerSpan {
    const rps = this.speeds.rps(span.peerId)
    if (rps === null) return span
    const announced = span.inferenceRps
    const shortfall = announced !== undefined && announced > 0 ? Math.min(1, rps / announced) : 1
    return { ...span, inferenceRps: rps, throughput: span.throughput * shortfall }
  }

  /**
   * Looks at the swarm again first when the servers known and not banned leave some block
   * uncovered (Petals refreshes at once when a failure leaves a block without servers): servers
   * may have joined since the last look, and a banned one is chosen again only if none did.
   */
  private async route (choose: (spans: ServerSpan[]) => RouteHop[], start: number, end: number): Promise<RouteHop[]> {
    await this.fresh()
    if (missingBlocks(this.spans.filter(s => !this.bans.isBanned(s.peerId)), start, end).length > 0) await this.update()
    return choose(this.bans.filter(this.spans, start, end))
  }

  /**
   * Bans a server that failed (15 s, doubling per consecutive failure) and refreshes the spans in
   * the background: where other servers are known, re-routing goes on at once with them, so a hung
   * peer that slows DHT queries does not slow recovery.
   */
  onFailure (peerId: string): void {
    this.bans.fail(peerId)
    this.update().catch(() => {}) // the next route that finds blocks missing waits for it
  }

  onSuccess (peerId: string): void {
    this.bans.succeed(peerId)
  }
}
