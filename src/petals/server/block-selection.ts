// Which blocks a server should serve, as Petals decides it (petals/server/block_selection.py):
// a new server takes the window of blocks where the swarm's throughput is weakest, and a running
// server moves when simulating everyone's greedy moves would raise the swarm's weakest block
// enough (the "balance quality" check).

import { shuffled } from '../../util/random.js'

/** Server states as Petals numbers them (the order matters: JOINING servers count for selection). */
export enum ServerState { OFFLINE = 0, JOINING = 1, ONLINE = 2 }

/** What block selection needs to know about one server. */
export interface ServedSpan {
  peerId: string
  /** first block served */
  start: number
  /** one past the last block served */
  end: number
  /** the server's announced throughput (requests per second) */
  throughput: number
  state: ServerState
}

const EPSILON = 1e-3

/**
 * Throughput per block: the sum over spans (of servers at least JOINING) covering it. Spans are
 * added in peer-id order so every server computes the same floats from the same records.
 */
export function throughputProfile (spans: readonly ServedSpan[], totalBlocks: number): Float64Array {
  const profile = new Float64Array(totalBlocks)
  const counted = spans.filter(s => s.state >= ServerState.JOINING).sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0))
  for (const span of counted) {
    for (let b = Math.max(0, span.start); b < Math.min(totalBlocks, span.end); b++) profile[b] += span.throughput
  }
  return profile
}

/**
 * The start of the window of `length` blocks whose throughputs, sorted ascending, are
 * lexicographically smallest: the weakest stretch first, then the next weakest. Ties go to the
 * smallest start.
 */
export function chooseBestStart (profile: ArrayLike<number>, length: number): number {
  if (!Number.isInteger(length) || length < 1 || length > profile.length) {
    throw new RangeError(`cannot place ${length} blocks in a model of ${profile.length}`)
  }
  let best = 0
  let bestWindow: number[] | null = null
  for (let start = 0; start + length <= profile.length; start++) {
    const window = Array.from({ length }, (_, i) => profile[start + i]).sort((a, b) => a - b)
    if (bestWindow === null || compareSorted(window, bestWindow) < 0) {
      best = start
      bestWindow = window
    }
  }
  return best
}

function compareSorted (a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i]
  return 0
}

/** The blocks [start, start + length) a new server should take, given the swarm's spans. */
export function chooseBestBlocks (length: number, spans: readonly ServedSpan[], totalBlocks: number): { start: number, end: number } {
  const start = chooseBestStart(throughputProfile(spans, totalBlocks), length)
  return { start, end: start + length }
}

/**
 * Petals' balance_quality: a server moves when the swarm's weakest block, after the simulated
 * moves, would gain a third or more of its throughput (before / after below this).
 */
export const DEFAULT_BALANCE_QUALITY = 0.75

export interface RebalanceOptions {
  /**
   * move when the swarm's weakest block would improve by more than this ratio; 0 disables
   * @default DEFAULT_BALANCE_QUALITY
   */
  balanceQuality?: number
  /**
   * random numbers in [0, 1) for the simulated servers' order
   * @default Math.random
   */
  random?: () => number
}

/**
 * Whether the server `localPeerId` should move to other blocks. It simulates every server greedily
 * re-choosing its best start (in random order) until nothing moves, and says yes when the weakest
 * block's throughput before, divided by after, is below `balanceQuality`. The 1 + ε terms bias
 * servers towards staying where they are.
 */
export function shouldChooseOtherBlocks (localPeerId: string, spans: readonly ServedSpan[], totalBlocks: number,
  options: RebalanceOptions = {}): boolean {
  const balanceQuality = options.balanceQuality ?? DEFAULT_BALANCE_QUALITY
  const random = options.random ?? Math.random
  if (balanceQuality > 1) return true // always move: a debugging setting, as in Petals

  const profile = throughputProfile(spans, totalBlocks)
  const initial = Math.min(...profile)
  const simulated = new Map(spans.filter(s => s.state >= ServerState.JOINING).map(s => [s.peerId, { ...s }]))
  const local = simulated.get(localPeerId)
  if (local === undefined) throw new Error(`this server's own span (${localPeerId}) is not among the announced ones`)
  const add = (span: ServedSpan, amount: number): void => {
    for (let b = Math.max(0, span.start); b < Math.min(totalBlocks, span.end); b++) profile[b] += amount
  }

  add(local, -local.throughput * (1 + EPSILON))
  if (initial > EPSILON && Math.min(...profile) <= 0) return false // moving would leave a block uncovered
  const length = local.end - local.start
  const newStart = chooseBestStart(profile, length)
  if (newStart === local.start) return false // already in its best place
  add(local, local.throughput * EPSILON)
  local.start = newStart
  local.end = newStart + length
  add(local, local.throughput)

  for (let moved = true; moved;) {
    moved = false
    for (const span of shuffled([...simulated.values()], random)) {
      const spanLength = span.end - span.start
      add(span, -span.throughput * (1 + EPSILON))
      const start = chooseBestStart(profile, spanLength)
      add(span, span.throughput * EPSILON)
      if (start !== span.start) {
        span.start = start
        span.end = start + spanLength
        moved = true
      }
      add(span, span.throughput)
    }
  }

  const after = Math.min(...profile)
  if (after < initial || after < EPSILON) return false
  return initial / after < balanceQuality - EPSILON
}
