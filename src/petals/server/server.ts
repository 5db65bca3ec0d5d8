// A block server's life, as Petals runs it: join the swarm, choose a span (pinned, or the weakest
// window), announce JOINING, load the blocks, measure throughput, announce ONLINE, then refresh the
// announcement every update period and now and then check whether moving would balance the swarm
// better. Stopping announces OFFLINE at once.

import type { Connection, PrivateKey } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import type { BlockRange, BlockSpan } from '../../inference/backend.js'
import type { WeightFormat } from '../../inference/dtype.js'
import { checkSpan, loadConfig, type ModelConfig } from '../../inference/config.js'
import { loadBlockSpan, resolveBackend, type LoadOptions } from '../../inference/load-span.js'
import { nativeFormat, nativeUnavailableReason, resolveNativeDevice } from '../../inference/native-backend.js'
import { createNode, joinSwarm, type BmrtNode } from '../../p2p/node.js'
import { privateKeyOf } from '../../p2p/identity.js'
import { checkReachability, describeReachability, serveDirectly } from '../../p2p/reachability.js'
import { DEFAULT_RECORD_TTL_MS, DEFAULT_UPDATE_PERIOD_MS, Registry, type RecordStats, type SpanRecord, type SpanState } from '../../p2p/registry.js'
import { OptionError } from '../../util/errors.js'
import { chooseBestBlocks, DEFAULT_BALANCE_QUALITY, ServerState, shouldChooseOtherBlocks, type ServedSpan } from './block-selection.js'
import { defaultCacheTokens, describePlan, planBlocks, type MemoryPlan } from '../planning/memory-plan.js'
import { ErrorCode, FORWARD_PROTOCOL, INFERENCE_PROTOCOL, INFO_PROTOCOL, EVIDENCE_PROTOCOL, modelWireDType, ProtocolError } from '../protocol/wire.js'
import { serveInfo, serveSession, SessionTracker, type HandlerOptions } from './handler.js'
import { PeerLimits, type PeerLimitOptions } from './peer-limits.js'
import { peerGroup, TaskQueue, type TaskOwner } from './task-queue.js'
import { swarmModelName } from '../protocol/model-name.js'
import { Disputes, serveEvidence } from './disputes.js'
import { DEFAULT_INFERENCE_MAX_LENGTH, formatInfo, parseServerInfo, serverInfoRecord, weightFormat, type ServerInfo } from '../protocol/server-info.js'
import { ReceiptSigner } from '../protocol/receipts.js'
import { measureThroughput } from './throughput.js'
import { VERSION } from '../protocol/version.js'

/** Mean time between a server's rebalancing checks (Petals' mean_balance_check_period: 60 s). */
export const DEFAULT_BALANCE_CHECK_PERIOD_MS = 60_000

export interface ServerOptions {
  /** the Hugging Face model directory (config.json, the weights) */
  modelDir: string
  /**
   * the name the swarm knows the model by
   * @default see swarmModelName (the folder's name)
   */
  modelName?: string
  /**
   * pin blocks [start, end) (Petals' --block_indices): no rebalancing; checked against the
   * model's config.json before the node starts
   * @default choose numBlocks blocks where the swarm is weakest
   */
  blocks?: BlockRange
  /**
   * how many blocks to choose where the swarm is weakest, unless `blocks` is given
   * @default on a GPU as many as fit in its free memory; else one of blocks, numBlocks is needed
   */
  numBlocks?: number
  /** how the blocks load and run (backend, device, format, cache tokens) */
  load?: LoadOptions
  /**
   * the node's identity
   * @default a fresh Ed25519 key
   */
  privateKey?: PrivateKey
  /**
   * address to listen on, unless `listen` is given
   * @default '127.0.0.1'
   */
  host?: string
  /**
   * TCP port, unless `listen` is given
   * @default 0 (any free port)
   */
  port?: number
  /** multiaddrs to listen on (overrides host and port) */
  listen?: string[]
  /**
   * addresses to announce instead of the listening ones
   * @default []
   */
  announce?: string[]
  /**
   * peers to join through
   * @default [] (a new swarm)
   */
  initialPeers?: string[]
  /** a name shown to others on the swarm monitor */
  publicName?: string
  /**
   * 'auto' measures (cached on disk), a number is announced as it is
   * @default 'auto'
   */
  throughput?: 'auto' | number
  /**
   * move when that improves the swarm's weakest block below this ratio; 0 disables rebalancing
   * @default DEFAULT_BALANCE_QUALITY (Petals')
   */
  balanceQuality?: number
  /**
   * mean time between rebalancing checks, each after a random 0..2x this
   * @default DEFAULT_BALANCE_CHECK_PERIOD_MS (60 s, as Petals)
   */
  balanceCheckPeriodMs?: number
  /**
   * how often the announcement is refreshed
   * @default DEFAULT_UPDATE_PERIOD_MS (60 s)
   */
  updatePeriodMs?: number
  /**
   * how long an announcement stays valid
   * @default DEFAULT_RECORD_TTL_MS (180 s)
   */
  expirationMs?: number
  /**
   * the longest session a client may open, announced to clients (Petals' default for GQA models);
   * never more than the model's context (max_position_embeddings), see BlockServer.inferenceMaxLength
   * @default DEFAULT_INFERENCE_MAX_LENGTH (8192)
   */
  inferenceMaxLength?: number
  /**
   * how long a client session may wait for its next step
   * @default DEFAULT_STEP_TIMEOUT_MS (5 min)
   */
  stepTimeoutMs?: number
  /**
   * how long a client session may last
   * @default DEFAULT_SESSION_TIMEOUT_MS (30 min)
   */
  sessionTimeoutMs?: number
  /**
   * how long a client session must have been idle before a new session that does not fit in the
   * cache may end it and take its cache
   * @default DEFAULT_IDLE_RECLAIM_MS (30 s)
   */
  idleReclaimMs?: number
  /**
   * sessions and unprocessed bytes one peer may hold
   * @default see PeerLimitOptions (DEFAULT_MAX_SESSIONS_PER_PEER, DEFAULT_MAX_PENDING_BYTES_PER_PEER)
   */
  peerLimits?: PeerLimitOptions
  /**
   * true: reachable only through a relay (behind NAT): reserve a slot on a relay among the peers,
   * announce the /p2p-circuit address, run the DHT in client mode, take Petals' relay penalty;
   * false: directly reachable, no check; unset (default): ask peers to dial back, then decide
   */
  useRelay?: boolean
  /** a private swarm's pre-shared key (see NodeOptions.swarmKey) */
  swarmKey?: Uint8Array
  /**
   * where progress and status lines go
   * @default nowhere
   */
  log?: (line: string) => void
}

export class BlockServer {
  readonly registry: Registry
  readonly stats: RecordStats
  readonly modelName: string
  /** the span was given (options.blocks): it never moves */
  readonly pinned: boolean
  span: BlockSpan | null = null
  state: SpanState = 'joining'
  throughput = 0
  /** tokens this server's span has processed for clients (the protocol handlers count them) */
  tokensServed = 0
  /** time spent computing those tokens */
  computeSeconds = 0
  private tokensAtLastStatus = 0
  private info: ServerInfo = {}
  private timers: NodeJS.Timeout[] = []
  private readonly pings = new Map<string, number>()
  private stopped = false
  /** the client sessions open now */
  readonly sessions = new SessionTracker()
  /** what each peer holds, and how often one was refused for holding too much */
  readonly peerLimits: PeerLimits
  /** the compute queue: one task at a time, turns shared fairly between subnets and peers */
  readonly queue = new TaskQueue()
  /** signs the receipt of every step this server answers, with its identity key */
  readonly signer: ReceiptSigner
  /** evidence against other servers that this one checked on its blocks and found holds */
  readonly disputes: Disputes

  private constructor (readonly node: BmrtNode, readonly config: ModelConfig, private readonly options: ServerOptions, stats: RecordStats) {
    this.registry = new Registry(node)
    this.signer = new ReceiptSigner(privateKeyOf(node))
    this.stats = stats
    this.modelName = options.modelName ?? swarmModelName(options.modelDir, options.load?.loadFormat)
    this.pinned = options.blocks !== undefined
    this.peerLimits = new PeerLimits(options.peerLimits)
    this.disputes = new Disputes({
      model: this.modelName,
      self: node.peerId.toString(),
      span: () => this.span,
      format: () => weightFormat(this.info) ?? 'f32',
      queue: this.queue,
      onChange: () => { this.announceDisputes() },
      log: message => { this.log(message) }
    })
  }

  static async start (startOptions: ServerOptions): Promise<BlockServer> {
    const log = startOptions.log ?? (() => {})
    const config = await loadConfig(startOptions.modelDir)
    if (startOptions.blocks !== undefined) checkBlocks(config, startOptions.blocks) // before anything starts
    const stats: RecordStats = { rejected: {} }
    const network = {
      listen: startOptions.listen ?? [`/ip4/${startOptions.host ?? '127.0.0.1'}/tcp/${startOptions.port ?? 0}`],
      announce: startOptions.announce,
      bootstrap: startOptions.initialPeers ?? [],
      swarmKey: startOptions.swarmKey
    }
    let useRelay = startOptions.useRelay ?? false
    if (startOptions.useRelay === undefined && network.bootstrap.length > 0) {
      log('checking whether peers can dial this machine...')
      const report = await checkReachability(network)
      log(describeReachability(report))
      useRelay = report.reachable === false
    }
    const options = { ...startOptions, useRelay }
    const node = await createNode({
      role: 'server',
      ...network,
      privateKey: options.privateKey,
      records: { stats, ttlMs: options.expirationMs, refreshMs: options.updatePeriodMs },
      useRelay
    })
    const server = new BlockServer(node, config, options, stats)
    await server.handleProtocols()
    if (useRelay) {
      reportDirectUpgrades(node, log)
    } else {
      await serveDirectly(node) // peers dialed back (or nobody could tell): announce the addresses
    }
    log(`peer id ${node.peerId.toString()}`)
    for (const addr of node.getMultiaddrs()) log(`  share as --initial-peers: ${addr.toString()}`)
    try {
      if ((options.initialPeers ?? []).length > 0) {
        log('joining the swarm...')
        await joinSwarm(node)
        // Clients learn a server's addresses from its provider records, so the relayed address
        // must exist before the first announcement.
        if (useRelay) log(`reachable through a relay: ${(await relayAddress(node)).toString()}`)
      } else {
        log('starting a new swarm')
      }
      await server.serve(await server.chooseSpan())
      server.schedule()
    } catch (err) {
      await server.stop()
      throw err
    }
    return server
  }

  /** Serves the block protocols: sessions are refused while the span loads. */
  private async handleProtocols (): Promise<void> {
    const options: HandlerOptions = {
      modelName: this.modelName,
      span: () => this.span,
      state: () => this.state,
      version: VERSION,
      dtype: modelWireDType(this.config.dtype),
      queue: this.queue,
      inferenceMaxLength: this.inferenceMaxLength,
      stepTimeoutMs: this.options.stepTimeoutMs,
      sessionTimeoutMs: this.options.sessionTimeoutMs,
      idleReclaimMs: this.options.idleReclaimMs,
      signer: this.signer,
      format: () => weightFormat(this.info) ?? 'f32',
      onStep: (tokens, seconds) => { this.tokensServed += tokens; this.computeSeconds += seconds },
      peerLimits: this.peerLimits
    }
    // Raised from libp2p's 32 streams per protocol per connection: one client may run many
    // sessions. The per-peer session limit (lower) is what refuses a greedy peer, with a reason.
    const limits = { maxInboundStreams: 256 }
    const owner = (connection: Connection): TaskOwner => {
      const peer = connection.remotePeer.toString()
      return { peer, group: peerGroup(connection.remoteAddr, peer) }
    }
    await this.node.handle(INFERENCE_PROTOCOL, async (stream, connection) => await serveSession(stream, owner(connection), 'inference', options, this.sessions), limits)
    await this.node.handle(FORWARD_PROTOCOL, async (stream, connection) => await serveSession(stream, owner(connection), 'forward', options, this.sessions), limits)
    // Info is a few hundred bytes, so it may run over relays that limit circuits: monitors and
    // clients still see the server there (sessions on such a relay are refused by the client).
    await this.node.handle(INFO_PROTOCOL, async stream => await serveInfo(stream, options, this.sessions), { ...limits, runOnLimitedConnection: true })
    // A few per connection: evidence frames are large, and checks run one at a time anyway.
    await this.node.handle(EVIDENCE_PROTOCOL, async (stream, connection) => await serveEvidence(stream, owner(connection), this.disputes, this.modelName), { maxInboundStreams: 4 })
  }

  /**
   * The longest session a client may open, as announced: options.inferenceMaxLength, but never
   * more than the model's context (max_position_embeddings). A longer session could hold no more
   * useful tokens, only reserve more cache.
   */
  get inferenceMaxLength (): number {
    return Math.min(this.options.inferenceMaxLength ?? DEFAULT_INFERENCE_MAX_LENGTH, this.config.maxPositionEmbeddings)
  }

  private log (line: string): void {
    this.options.log?.(line)
  }

  /** Everyone's spans, as block selection sees them (joining servers count). */
  private async swarmSpans (): Promise<ServedSpan[]> {
    const records = await this.registry.findSpans(this.modelName, this.config.numLayers, ['joining', 'online'])
    // A server this one holds evidence against serves nothing worth counting: its blocks are left
    // as uncovered, so this server does not move away from them (in the chaos bench with hostile
    // servers, honest ones moved off the blocks a hostile one held, which then had no honest server).
    const disproven = new Set(this.disputes.disproven)
    return records.filter((r: SpanRecord) => !disproven.has(r.peerId)).map((r: SpanRecord) => ({
      peerId: r.peerId,
      start: r.start,
      end: r.end,
      throughput: parseServerInfo(r.info).throughput ?? 0,
      state: r.state === 'online' ? ServerState.ONLINE : ServerState.JOINING
    }))
  }

  /** On a GPU, how many blocks fit in its free memory (Petals' rule); null on the CPU. */
  private gpuPlan (): MemoryPlan | null {
    const load = this.options.load ?? {}
    const backend = resolveBackend(load.backend)
    if (backend === 'js' && !['cpu', 'auto'].includes(load.device ?? 'cpu')) {
      throw new OptionError(['load.device'], name => `${name('load.device')} ${load.device ?? ''} needs the native backend, and it is not available here (${nativeUnavailableReason()})`)
    }
    if (backend !== 'native') return null
    const device = resolveNativeDevice(load.device)
    if (device.kind !== 'cuda') return null
    const plan = planBlocks(this.config, device.freeBytes, nativeFormat(this.config, device, load.format), load.maxCacheTokens ?? defaultCacheTokens(this.config))
    this.log(`${device.info.name} (cuda:${device.index}), counting its free memory: ${describePlan(plan)}`)
    return plan
  }

  /** options.blocks as given, or options.numBlocks (on a GPU: as many as fit) where the swarm is weakest. */
  private async chooseSpan (): Promise<{ start: number, end: number }> {
    const plan = this.gpuPlan()
    const fits = (count: number): void => {
      if (plan === null || count <= plan.blocks) return
      throw new OptionError(['numBlocks', 'load.maxCacheTokens'], name =>
        `${count} blocks do not fit on this GPU: ${describePlan(plan)}; ask for fewer (${name('numBlocks')} ${plan.blocks}), or a smaller ${name('load.maxCacheTokens')}`)
    }
    if (this.options.blocks !== undefined) {
      fits(this.options.blocks.end - this.options.blocks.start)
      return { start: this.options.blocks.start, end: this.options.blocks.end }
    }
    if (this.options.numBlocks === undefined && plan === null) {
      throw new OptionError(['blocks', 'numBlocks'], name => `give ${name('blocks')} or ${name('numBlocks')} (only a GPU server chooses how many by itself)`)
    }
    if (plan !== null && plan.blocks === 0) throw new Error(`not one block fits on this GPU: ${describePlan(plan)}`)
    const wanted = this.options.numBlocks ?? plan!.blocks
    fits(Math.min(wanted, this.config.numLayers))
    const length = Math.min(wanted, this.config.numLayers)
    const others = (await this.swarmSpans()).filter(s => s.peerId !== this.node.peerId.toString())
    return chooseBestBlocks(length, others, this.config.numLayers)
  }

  private async announce (state: SpanState, span: { start: number, end: number }): Promise<void> {
    this.state = state
    const ttlMs = this.options.expirationMs ?? DEFAULT_RECORD_TTL_MS
    await this.registry.announce(this.modelName, { ...span, state, info: serverInfoRecord(this.info) }, { ttlMs })
    await this.registry.announceModels(state === 'offline' ? [] : [{ name: this.modelName, blocks: this.config.numLayers }], { ttlMs })
  }

  /** `info.disproven`: the servers this one holds evidence against now, or not said when none. */
  private disprovenInfo (): string[] | undefined {
    const disproven = this.disputes.disproven
    return disproven.length > 0 ? disproven : undefined
  }

  /** Names the servers this one holds evidence against in its record, at once (not at the next refresh). */
  private announceDisputes (): void {
    this.info = { ...this.info, disproven: this.disprovenInfo() }
    if (this.span === null || this.stopped || this.state !== 'online') return
    this.announce(this.state, { start: this.span.start, end: this.span.end }).catch(err => this.log(`announce failed: ${(err as Error).message}`))
  }

  /** JOINING, load, measure, ONLINE. */
  private async serve (span: { start: number, end: number }): Promise<void> {
    checkSpan(this.config, span.start, span.end) // before announcing anything about it
    this.info = {
      version: VERSION,
      publicName: this.options.publicName,
      ...formatInfo(this.options.load?.format, this.config.dtype),
      throughput: 0,
      usingRelay: this.options.useRelay === true,
      inferenceMaxLength: this.inferenceMaxLength
    }
    await this.announce('joining', span)
    this.log(`loading blocks ${span.start}:${span.end} of ${this.modelName} (${this.config.numLayers} blocks)${this.options.load?.loadFormat === 'dummy' ? ' with dummy weights' : ''}`)
    const loadStarted = performance.now()
    this.span = await loadBlockSpan(this.options.modelDir, span.start, span.end, {
      ...this.options.load,
      maxCacheTokens: this.options.load?.maxCacheTokens ?? defaultCacheTokens(this.config),
      onBlock: b => this.log(`  block ${b} loaded`)
    })
    const loadSeconds = (performance.now() - loadStarted) / 1000
    const stored = this.span as { format?: WeightFormat, device?: string }
    if (stored.format !== undefined) this.info = { ...this.info, ...formatInfo(stored.format, this.config.dtype) } // bf16 on a GPU by default
    this.log(`loaded blocks ${span.start}:${span.end} in ${loadSeconds.toFixed(1)} s: ${(this.span.weightBytes / 2 ** 30).toFixed(2)} GiB of weights ` +
      `(${(this.span.weightBytes / 1e9 / loadSeconds).toFixed(2)} GB/s) on the ${this.span.backend} backend${stored.device !== undefined ? `, ${stored.device}` : ''}${stored.format !== undefined ? `, ${stored.format}` : ''}`)
    if (this.options.throughput === undefined || this.options.throughput === 'auto') {
      const measured = await measureThroughput(this.span, { modelName: this.modelName, usingRelay: this.options.useRelay })
      this.throughput = measured.throughput
      this.info = { ...this.info, throughput: measured.throughput, inferenceRps: measured.inferenceRps, forwardRps: measured.forwardRps, networkRps: measured.networkRps }
      this.log(`throughput ${measured.throughput.toFixed(1)} rps (inference ${measured.inferenceRps.toFixed(0)}, forward ${measured.forwardRps.toFixed(0)} tokens/s per block${measured.cached ? ', cached' : ''})`)
    } else {
      this.throughput = this.options.throughput
      this.info = { ...this.info, throughput: this.throughput }
    }
    const usage = this.span.cacheUsage()
    this.info = { ...this.info, cacheTokensLeft: usage.limit > 0 ? Math.floor(usage.limit - usage.reserved) : undefined }
    await this.announce('online', span)
    this.log(`online: serving blocks ${span.start}:${span.end} of ${this.modelName} (${this.span.backend} backend)`)
  }

  /** The refresh timer and, unless the span is pinned, the randomly spaced rebalancing checks. */
  private schedule (): void {
    const period = this.options.updatePeriodMs ?? DEFAULT_UPDATE_PERIOD_MS
    this.timers.push(setInterval(() => {
      if (this.span === null || this.stopped) return
      const usage = this.span.cacheUsage()
      const cacheLeft = usage.limit > 0 ? Math.floor(usage.limit - usage.reserved) : null
      const span = this.span
      this.pingNextServers(span.end)
        .then(nextPings => {
          this.info = { ...this.info, cacheTokensLeft: cacheLeft ?? undefined, nextPings, disproven: this.disprovenInfo() } // evidence kept too long drops out here
          return this.stopped ? undefined : this.announce(this.state, span)
        })
        .catch(err => this.log(`announce failed: ${(err as Error).message}`))
      const refused = Object.values(this.stats.rejected).reduce((a, b) => a + b, 0)
      const rate = (this.tokensServed - this.tokensAtLastStatus) / (period / 1000)
      this.tokensAtLastStatus = this.tokensServed
      const overLimit = this.peerLimits.refused
      this.log(`status: ${this.state}, blocks ${this.span.start}:${this.span.end}, ${usage.sessions} sessions, ${rate.toFixed(1)} tokens/s, cache left ${cacheLeft ?? 'unlimited'} tokens, records refused ${refused}, ` +
        `requests over per-peer limits ${overLimit.sessions + overLimit.pendingBytes} (sessions ${overLimit.sessions}, bytes ${overLimit.pendingBytes})`)
    }, period))
    const quality = this.options.balanceQuality ?? DEFAULT_BALANCE_QUALITY
    if (this.pinned || quality <= 0) return
    // Its own period, not the refresh's: each check reads every block's servers from the DHT, so
    // a short --update-period (records that vanish soon after a crash) must not multiply them.
    const checkPeriod = this.options.balanceCheckPeriodMs ?? DEFAULT_BALANCE_CHECK_PERIOD_MS
    const check = (): void => {
      // De-synchronised: a random delay of 0..2 periods, as Petals does.
      const timer = setTimeout(() => {
        this.rebalance(quality).catch(err => this.log(`rebalancing check failed: ${(err as Error).message}`)).finally(() => { if (!this.stopped) check() })
      }, Math.random() * 2 * checkPeriod)
      this.timers.push(timer)
    }
    check()
  }

  /**
   * Round-trip times (seconds, smoothed) to up to 5 servers of the block after this span: the
   * likeliest next hops, which clients weigh when routing (Petals' next_pings).
   */
  private async pingNextServers (block: number): Promise<Record<string, number>> {
    if (block >= this.config.numLayers) return {}
    const candidates = (await this.registry.findServers(this.modelName, block)).slice(0, 5)
    await Promise.all(candidates.map(async record => {
      try {
        const rtt = await this.node.services.ping.ping(peerIdFromString(record.peerId), { signal: AbortSignal.timeout(5000) }) / 1000
        const previous = this.pings.get(record.peerId)
        this.pings.set(record.peerId, previous === undefined ? rtt : 0.8 * previous + 0.2 * rtt)
      } catch {
        this.pings.delete(record.peerId) // unreachable now: let clients not count on it
      }
    }))
    return Object.fromEntries([...this.pings].filter(([peer]) => candidates.some(c => c.peerId === peer)))
  }

  /** Moves the span when the balance-quality test says so; returns whether it moved. */
  async rebalance (quality = this.options.balanceQuality ?? DEFAULT_BALANCE_QUALITY): Promise<boolean> {
    if (this.span === null || this.stopped) return false
    const spans = await this.swarmSpans()
    if (!spans.some(s => s.peerId === this.node.peerId.toString())) return false // our record is not visible yet
    if (!shouldChooseOtherBlocks(this.node.peerId.toString(), spans, this.config.numLayers, { balanceQuality: quality })) return false
    const old = { start: this.span.start, end: this.span.end }
    this.log(`moving: blocks ${old.start}:${old.end} would balance the swarm better elsewhere`)
    await this.announce('offline', old)
    this.sessions.endAll(new ProtocolError(ErrorCode.SHUTTING_DOWN, 'the server is moving to other blocks'))
    this.span.close()
    this.span = null
    await this.serve(await this.chooseSpan())
    return true
  }

  /** Announces OFFLINE (unless nothing was announced), then stops the node and frees the blocks. */
  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.timers.forEach(t => clearTimeout(t))
    this.sessions.endAll(new ProtocolError(ErrorCode.SHUTTING_DOWN, 'the server is shutting down'))
    try {
      if (this.span !== null) await this.registry.withdraw(this.modelName, { start: this.span.start, end: this.span.end, info: serverInfoRecord(this.info) })
    } finally {
      this.span?.close()
      await this.node.stop()
    }
  }
}

/** Throws an OptionError unless `blocks` (options.blocks) lie within the model's blocks. */
export function checkBlocks (config: ModelConfig, blocks: BlockRange): void {
  try {
    checkSpan(config, blocks.start, blocks.end)
  } catch (err) {
    throw new OptionError(['blocks'], name => `${name('blocks')}: ${(err as Error).message}`)
  }
}

/** The node's /p2p-circuit address, once a relay among its peers has given it a reservation. */
async function relayAddress (node: BmrtNode, timeoutMs = 30_000): Promise<Multiaddr> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const circuit = node.getMultiaddrs().find(a => a.toString().includes('/p2p-circuit'))
    if (circuit !== undefined) return circuit
    if (Date.now() > deadline) throw new Error(`no relay gave this node a reservation within ${timeoutMs / 1000} s: a server behind NAT needs an initial peer started with bmrt-node --relay-only`)
    await new Promise<void>(resolve => {
      const done = (): void => { clearTimeout(timer); node.removeEventListener('self:peer:update', done); resolve() }
      const timer = setTimeout(done, 250)
      node.addEventListener('self:peer:update', done)
    })
  }
}

/**
 * Logs when DCUtR replaces a relayed connection with a direct one: a direct connection opening to
 * a peer we reach through the relay (the relayed one closes right after).
 */
function reportDirectUpgrades (node: BmrtNode, log: (line: string) => void): void {
  const relayed = (c: Connection): boolean => c.remoteAddr.getComponents().some(p => p.name === 'p2p-circuit')
  node.addEventListener('connection:open', ({ detail: connection }) => {
    if (relayed(connection)) return
    if (node.getConnections(connection.remotePeer).some(c => c !== connection && relayed(c))) {
      log(`DCUtR: direct connection with ${connection.remotePeer.toString()} at ${connection.remoteAddr.toString()} (was relayed)`)
    }
  })
}
