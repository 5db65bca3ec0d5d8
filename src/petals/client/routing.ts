// Routing over a swarm's servers (Petals' RemoteSequenceManager, client/routing/sequence_manager.py):
// which chain of servers runs blocks [start, end). Pure logic: the caller supplies the spans, the
// round-trip times it measured and a random source; nothing here touches the network.
//
// - minLatencyRoute: inference sessions, Petals' "min_latency" Dijkstra.
// - maxThroughputRoute: forward/batch work, Petals' "max_throughput" random greedy choice.

import type { SpanRecord } from '../../p2p/registry.js'
import { shortPeerId } from '../../p2p/identity.js'
import type { WeightFormat } from '../../inference/dtype.js'
import { parseServerInfo, weightFormat } from '../protocol/server-info.js'

/** What routing knows about one server. */
export interface ServerSpan {
  peerId: string
  /** blocks [start, end) */
  start: number
  end: number
  /** announced throughput, Petals' "rps" (0 if unknown) */
  throughput: number
  /** decode speed, tokens per second per block; absent or invalid: DEFAULT_INFERENCE_RPS */
  inferenceRps?: number
  /** tokens per block a new session could still reserve; null: unlimited */
  cacheTokensLeft: number | null
  /** the server's own round trips to likely next servers, seconds (Petals' next_pings) */
  nextPings: Record<string, number>
  inferenceMaxLength?: number
  /** how its weights are held: the quantisation when quantised, else the dtype; absent: not said */
  format?: WeightFormat
  /** servers it holds checked evidence against (ServerInfo.disproven); absent: none */
  disproven?: string[]
}

/** One server's part of a route: it runs blocks [start, end). */
export interface RouteHop {
  peerId: string
  start: number
  end: number
}

/** Petals' defaults for the min-latency graph (_build_inference_graph and _rtt_to_delay). */
export const DEFAULT_INFERENCE_RPS = 300
const OVERHEAD_SECONDS = 0.018 // serialization overhead per hop, "empirically measured" in Petals
const CACHE_PENALTY_SECONDS = 10 // Petals' alloc_delay: a server short of cache is a last resort
const MAX_HALF_RTT_SECONDS = 5 // an unreachable server keeps an (expensive) edge rather than none
// Petals charges default_delay = 0.15 s one way for an unknown RTT (not halved), so the RTT that
// stands for "unknown" is twice that.
const DEFAULT_RTT_SECONDS = 0.3

// ---------------------------------------------------------------------------------------------
// Announcements

/**
 * The routing view of a span record, read through parseServerInfo: what a garbage announcement
 * leaves unsaid falls back to the neutral default (throughput 0, unlimited cache, no pings).
 */
export function serverSpanFromRecord (record: SpanRecord): ServerSpan {
  const info = parseServerInfo(record.info)
  const span: ServerSpan = {
    peerId: record.peerId,
    start: record.start,
    end: record.end,
    throughput: info.throughput ?? 0,
    cacheTokensLeft: info.cacheTokensLeft ?? null,
    nextPings: info.nextPings ?? {}
  }
  if (info.inferenceRps !== undefined) span.inferenceRps = info.inferenceRps
  if (info.inferenceMaxLength !== undefined) span.inferenceMaxLength = info.inferenceMaxLength
  const format = weightFormat(info)
  if (format !== undefined) span.format = format
  if (info.disproven !== undefined && info.disproven.length > 0) span.disproven = info.disproven
  return span
}

// ---------------------------------------------------------------------------------------------
// Coverage

/** Some blocks of the requested range have no server. */
export class MissingBlocksError extends Error {
  readonly blocks: number[]

  constructor (blocks: readonly number[], model?: string) {
    const sorted = [...new Set(blocks)].sort((a, b) => a - b)
    const which = sorted.length === 1 ? `block ${sorted[0]}` : `blocks ${compactBlocks(sorted)}`
    const of = model !== undefined ? ` of model ${model}` : ''
    super(`${which}${of} ${sorted.length === 1 ? 'is' : 'are'} not served by any reachable server`)
    this.name = 'MissingBlocksError'
    this.blocks = sorted
  }
}

/** [3, 4, 9] → "3:5, 9": runs of consecutive blocks as start:end (end exclusive, like spans). */
function compactBlocks (sorted: readonly number[]): string {
  const parts: string[] = []
  for (let i = 0; i < sorted.length;) {
    let j = i
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++
    parts.push(j === i ? `${sorted[i]}` : `${sorted[i]}:${sorted[j] + 1}`)
    i = j + 1
  }
  return parts.join(', ')
}

/** Blocks of [start, end) that no span holds. */
export function missingBlocks (spans: readonly ServerSpan[], start: number, end: number): number[] {
  const missing: number[] = []
  for (let b = start; b < end; b++) {
    if (!spans.some(s => holds(s, b))) missing.push(b)
  }
  return missing
}

function holds (span: ServerSpan, block: number): boolean {
  return span.start <= block && block < span.end
}

function checkRange (start: number, end: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start >= end) {
    throw new RangeError(`cannot route blocks ${start}:${end}: need integers 0 <= start < end`)
  }
}

/**
 * Well-formed spans overlapping [start, end), sorted by peer id then start so that routes do not
 * depend on the order the DHT returned them in. Throws MissingBlocksError for uncovered blocks.
 */
function candidates (spans: readonly ServerSpan[], start: number, end: number, model?: string): ServerSpan[] {
  checkRange(start, end)
  const usable = spans
    .filter(s => Number.isSafeInteger(s.start) && Number.isSafeInteger(s.end) && s.start < s.end && s.start < end && s.end > start)
    .sort((a, b) => a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : a.start - b.start)
  const missing = missingBlocks(usable, start, end)
  if (missing.length > 0) throw new MissingBlocksError(missing, model)
  return usable
}

// ---------------------------------------------------------------------------------------------
// Min-latency routing (inference)

export interface MinLatencyOptions {
  /** client→server round trips, seconds; missing: defaultRttSeconds, Infinity: unreachable */
  rtts?: ReadonlyMap<string, number>
  /**
   * tokens per block the session will reserve (batch × maxLength)
   * @default 0
   */
  cacheTokensNeeded?: number
  /**
   * per hop
   * @default OVERHEAD_SECONDS (0.018 s, Petals)
   */
  overheadSeconds?: number
  /**
   * RTT assumed when none is known
   * @default DEFAULT_RTT_SECONDS (0.3 s, i.e. Petals' 0.15 s one-way default delay)
   */
  defaultRttSeconds?: number
  /**
   * added to entering a server short of cache
   * @default CACHE_PENALTY_SECONDS (10 s, Petals)
   */
  cachePenaltySeconds?: number
  /**
   * cap on the one-way delay of an edge
   * @default MAX_HALF_RTT_SECONDS (5 s, Petals)
   */
  maxHalfRttSeconds?: number
  /** named in MissingBlocksError messages */
  model?: string
}

/** The cost model shared by the Dijkstra search and routeCostSeconds. */
class LatencyModel {
  private readonly overhead: number
  private readonly defaultRtt: number
  private readonly penalty: number
  private readonly maxHalfRtt: number
  private readonly cacheTokensNeeded: number

  constructor (private readonly options: MinLatencyOptions) {
    this.overhead = options.overheadSeconds ?? OVERHEAD_SECONDS
    this.defaultRtt = options.defaultRttSeconds ?? DEFAULT_RTT_SECONDS
    this.penalty = options.cachePenaltySeconds ?? CACHE_PENALTY_SECONDS
    this.maxHalfRtt = options.maxHalfRttSeconds ?? MAX_HALF_RTT_SECONDS
    this.cacheTokensNeeded = options.cacheTokensNeeded ?? 0
  }

  /** One-way delay for a measured RTT (Petals' _rtt_to_delay): unknown → default, capped. */
  private halfRtt (rtt: number | undefined): number {
    const known = rtt !== undefined && !Number.isNaN(rtt) && rtt >= 0 ? rtt : this.defaultRtt
    return Math.min(known / 2, this.maxHalfRtt) // Infinity (unreachable) lands on the cap
  }

  /**
   * Petals compares cache_tokens_needed × 2 × span_length with a server-wide count; bmrt announces
   * cacheTokensLeft per block (BlockSpan.cacheUsage), so the comparison is per block.
   */
  private cachePenalty (span: ServerSpan): number {
    const left = span.cacheTokensLeft
    return left !== null && this.cacheTokensNeeded > left ? this.penalty : 0
  }

  enter (span: ServerSpan): number {
    return this.halfRtt(this.options.rtts?.get(span.peerId)) + this.overhead + this.cachePenalty(span)
  }

  /** From `from` to `to`, with the RTT `from` announced to `to` (Petals: the origin's next_pings). */
  switch (from: ServerSpan, to: ServerSpan): number {
    const announced = Object.hasOwn(from.nextPings, to.peerId) ? from.nextPings[to.peerId] : undefined
    return this.halfRtt(announced) + this.overhead + this.cachePenalty(to)
  }

  /** One block of one decoding step. */
  compute (span: ServerSpan): number {
    const rps = span.inferenceRps
    return 1 / (rps !== undefined && Number.isFinite(rps) && rps > 0 ? rps : DEFAULT_INFERENCE_RPS)
  }

  leave (span: ServerSpan): number {
    return this.halfRtt(this.options.rtts?.get(span.peerId))
  }
}

/**
 * The route over blocks [start, end) with the least expected time per decoding step: Petals'
 * min_latency Dijkstra, over any sub-range (a whole route, or the range of a failed span).
 *
 * Nodes are (server, block b) for b in its span ∩ [start, end], plus START and END. Edges:
 * START → (p, start) costs entering p; (p, b) → (p, b + 1) one block of compute; (p, b) → (q, b)
 * a hop, only where p's span ends at b (a server is left only at its span's end, as in Petals,
 * which keeps the graph linear in the number of servers); (p, end) → END the way back.
 */
export function minLatencyRoute (spans: readonly ServerSpan[], start: number, end: number, options: MinLatencyOptions = {}): RouteHop[] {
  const servers = candidates(spans, start, end, options.model)
  const graph = new BlockGraph(servers, start, end)
  const cost = new LatencyModel(options)
  const path = shortestPath(graph.size, graph.startNode, graph.endNode, (node, visit) => {
    if (node === graph.startNode) {
      servers.forEach((s, i) => { if (holds(s, start)) visit(graph.node(i, start), cost.enter(s)) })
      return
    }
    const { server, block } = graph.locate(node)
    const s = servers[server]
    if (block === end) { visit(graph.endNode, cost.leave(s)); return }
    if (block < s.end) visit(graph.node(server, block + 1), cost.compute(s))
    if (block === s.end) {
      servers.forEach((q, j) => { if (j !== server && holds(q, block)) visit(graph.node(j, block), cost.switch(s, q)) })
    }
  })
  return collapse(path.slice(1, -1).map(node => graph.locate(node)), servers)
}

/** Numbers the (server, block) nodes: server i holds blocks lo[i]..hi[i] inclusive of the range. */
class BlockGraph {
  readonly size: number
  readonly startNode: number
  readonly endNode: number
  private readonly offsets: number[] = []
  private readonly lows: number[] = []

  constructor (servers: readonly ServerSpan[], start: number, end: number) {
    let next = 0
    for (const s of servers) {
      const lo = Math.max(s.start, start)
      const hi = Math.min(s.end, end)
      this.offsets.push(next)
      this.lows.push(lo)
      next += hi - lo + 1
    }
    this.startNode = next
    this.endNode = next + 1
    this.size = next + 2
  }

  node (server: number, block: number): number {
    return this.offsets[server] + block - this.lows[server]
  }

  locate (node: number): { server: number, block: number } {
    let server = 0
    while (server + 1 < this.offsets.length && this.offsets[server + 1] <= node) server++
    return { server, block: this.lows[server] + node - this.offsets[server] }
  }
}

/** Node path (server, block) … → per-server hops; each hop runs [entry block, exit block). */
function collapse (path: ReadonlyArray<{ server: number, block: number }>, servers: readonly ServerSpan[]): RouteHop[] {
  const hops: Array<RouteHop & { server: number }> = []
  for (const { server, block } of path) {
    const last = hops.at(-1)
    if (last !== undefined && last.server === server) last.end = block
    else hops.push({ server, peerId: servers[server].peerId, start: block, end: block })
  }
  // Empty hops cannot arise when servers are left only at span ends; dropped anyway, as Petals does.
  return hops.filter(h => h.end > h.start).map(({ peerId, start, end }) => ({ peerId, start, end }))
}

/**
 * Dijkstra from `source` to `target` over nodes 0..size-1; `edges(node, visit)` lists a node's
 * out-edges. Ties go to the lower-numbered node, so equal-cost routes come out the same each time.
 * Returns the node path, source and target included.
 */
function shortestPath (size: number, source: number, target: number,
  edges: (node: number, visit: (to: number, cost: number) => void) => void): number[] {
  const dist = new Float64Array(size).fill(Infinity)
  const previous = new Int32Array(size).fill(-1)
  const done = new Uint8Array(size)
  const heap = new MinHeap()
  dist[source] = 0
  heap.push(0, source)
  while (heap.size > 0) {
    const { node } = heap.pop()
    if (done[node] === 1) continue
    done[node] = 1
    if (node === target) break
    edges(node, (to, cost) => {
      const d = dist[node] + cost
      if (d < dist[to]) {
        dist[to] = d
        previous[to] = node
        heap.push(d, to)
      }
    })
  }
  if (done[target] !== 1) throw new Error('no route: the block graph is disconnected') // coverage was checked; a bug if reached
  const path = [target]
  while (path[0] !== source) path.unshift(previous[path[0]])
  return path
}

/** A binary heap of (priority, node), smallest priority first, then smallest node. */
class MinHeap {
  private readonly items: Array<{ priority: number, node: number }> = []

  get size (): number {
    return this.items.length
  }

  push (priority: number, node: number): void {
    const items = this.items
    items.push({ priority, node })
    for (let i = items.length - 1; i > 0;) {
      const parent = (i - 1) >> 1
      if (!this.less(i, parent)) break
      ;[items[i], items[parent]] = [items[parent], items[i]]
      i = parent
    }
  }

  pop (): { priority: number, node: number } {
    const items = this.items
    const top = items[0]
    const last = items.pop() as { priority: number, node: number }
    if (items.length > 0) {
      items[0] = last
      for (let i = 0; ;) {
        const left = 2 * i + 1
        const right = left + 1
        let smallest = i
        if (left < items.length && this.less(left, smallest)) smallest = left
        if (right < items.length && this.less(right, smallest)) smallest = right
        if (smallest === i) break
        ;[items[i], items[smallest]] = [items[smallest], items[i]]
        i = smallest
      }
    }
    return top
  }

  private less (a: number, b: number): boolean {
    const x = this.items[a]
    const y = this.items[b]
    return x.priority < y.priority || (x.priority === y.priority && x.node < y.node)
  }
}

/**
 * Expected seconds per decoding step of `hops` under the min-latency cost model (Petals logs
 * 1 / this as "expected speed, steps/s"). Each hop's server is looked up in `spans` by peer id.
 */
export function routeCostSeconds (spans: readonly ServerSpan[], hops: readonly RouteHop[], options: MinLatencyOptions = {}): number {
  if (hops.length === 0) throw new RangeError('an empty route has no cost')
  const cost = new LatencyModel(options)
  const servers = hops.map(hop => {
    const span = spans.find(s => s.peerId === hop.peerId && s.start <= hop.start && hop.end <= s.end)
    if (span === undefined) throw new RangeError(`no span of ${hop.peerId} holds blocks ${hop.start}:${hop.end}`)
    return span
  })
  let seconds = cost.enter(servers[0]) + cost.leave(servers[servers.length - 1])
  servers.forEach((s, i) => {
    seconds += (hops[i].end - hops[i].start) * cost.compute(s)
    if (i > 0) seconds += cost.switch(servers[i - 1], s)
  })
  return seconds
}

// ---------------------------------------------------------------------------------------------
// Max-throughput routing (forward and batch work)

const MIN_WEIGHT = 1e-6 // Petals' weight for servers it cannot rank: possible, but rarely chosen

/**
 * A route over [start, end) that spreads load: from the current block, pick one of the servers
 * holding it at random and run it to the end of its span (or to `end`), then repeat.
 *
 * The pick's probability is ∝ throughput × blocks the server would cover from here (within
 * `end`). Petals weighted by span length in early versions and by throughput later; the product
 * favours fast servers while still preferring fewer hops. Unknown throughput (0) counts as a tiny
 * weight, so with no throughput known anywhere this is exactly Petals' original ∝-length rule.
 */
export function maxThroughputRoute (spans: readonly ServerSpan[], start: number, end: number, random: () => number = Math.random): RouteHop[] {
  const servers = candidates(spans, start, end)
  const hops: RouteHop[] = []
  for (let block = start; block < end;) {
    const here = servers.filter(s => holds(s, block))
    const weights = here.map(s => Math.max(finiteOr(s.throughput, 0), MIN_WEIGHT) * (Math.min(s.end, end) - block))
    const chosen = here[pickWeighted(weights, random)]
    const stop = Math.min(chosen.end, end)
    hops.push({ peerId: chosen.peerId, start: block, end: stop })
    block = stop
  }
  return hops
}

function finiteOr (value: number, fallback: number): number {
  return Number.isFinite(value) ? value : fallback
}

/** Index i with probability weights[i] / Σ weights (weights positive). */
function pickWeighted (weights: readonly number[], random: () => number): number {
  const total = weights.reduce((a, b) => a + b, 0)
  let r = random() * total
  for (let i = 0; i < weights.length; i++) {
    r -= weights[i]
    if (r < 0) return i
  }
  return weights.length - 1 // rounding left r at 0 or just above
}

// ---------------------------------------------------------------------------------------------
// Display

/** "0:3 via 12D3KooW…abcdef → 3:8 via 12D3KooW…uvwxyz"; `names` may label peers (e.g. public names). */
export function formatRoute (hops: readonly RouteHop[], names: (peerId: string) => string = shortPeerId): string {
  if (hops.length === 0) return '(empty route)'
  return hops.map(h => `${h.start}:${h.end} via ${names(h.peerId)}`).join(' → ')
}
