// Spot checks (issue 21): a client re-runs a random sample of its inference steps on a second server
// that holds the same blocks and compares the outputs. A server that computes wrong (broken
// hardware, a lazy server skipping layers, a hostile one steering answers) is caught, banned, and
// its step recomputed elsewhere, so the user's output is the honest one. Petals trusts every hop.
//
// A check sends the hop's whole input so far (the history the client keeps for failover) to the
// second server as cache-less forward work and compares the new tokens' outputs. Which steps are
// checked is drawn after the server answered, from this process's CSPRNG: the server cannot tell a
// checked step from another. Two servers that disagree get a third opinion; the one the third
// agrees with is right. Without a third server the dispute stays open: nobody is banned (one word
// against another), and the output is kept.

import { randomInt } from 'node:crypto'
import type { WeightFormat } from '../../inference/dtype.js'
import { FORWARD_PROTOCOL } from '../protocol/wire.js'
import { DEFAULT_MAX_BAN_MS } from './ban-list.js'
import { HopError, RemoteSpan, sliceTokens } from './remote-span.js'
import type { RouteHop, ServerSpan } from './routing.js'
import type { SessionContext } from './inference-session.js'

/** The share of inference steps checked on a second server when the caller says nothing: 1 in 20. */
export const DEFAULT_VERIFY_RATE = 0.05

/**
 * How far one format's honest outputs may drift from exact fp32 ones, as the relative L2 distance
 * ‖a − b‖ / ‖b‖ of the checked tokens' outputs; two servers may differ by the sum of their formats'
 * bounds (verifyTolerance). Measured on the bundled model against the native f32 span (40 tokens
 * through blocks 0:1, 0:5 and 2:5): the JS backend 7.4e-7, f16 8.0e-4, bf16 7.0e-3, int8 2.4e-2,
 * int4 3.9e-1; the largest over 10,000 checked steps of sampled generations (npm run bench:verify)
 * were JS 2.5e-6, bf16 1.7e-2 and int8 8.0e-2. The bounds are about twice those. Output noise of
 * 0.1 × RMS measures 0.1, zeros 1, a span that returns its input 0.57 (one block) to 0.99 (five):
 * noise is caught between any two of f32, f16 and bf16, not where an int8 or int4 server is one of
 * the two (on this 64-wide model their honest drift is as large); the rest is caught against all.
 */
export const VERIFY_TOLERANCE: Readonly<Record<WeightFormat, number>> = { f32: 5e-4, f16: 2.5e-3, bf16: 3e-2, int8: 0.16, int4: 0.8 }

/** How far apart servers of formats `a` and `b` may be (an unannounced format counts as f32). */
export function verifyTolerance (a: WeightFormat | undefined, b: WeightFormat | undefined): number {
  return VERIFY_TOLERANCE[a ?? 'f32'] + VERIFY_TOLERANCE[b ?? 'f32']
}

/** ‖a − b‖ / ‖b‖ (0 when both are all zeros; Infinity when only b is). */
export function relativeDistance (a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity
  let diff = 0
  let norm = 0
  for (let i = 0; i < a.length; i++) {
    diff += (a[i] - b[i]) ** 2
    norm += b[i] ** 2
  }
  return norm === 0 ? (diff === 0 ? 0 : Infinity) : Math.sqrt(diff / norm)
}

/** A server whose output two others agreed was wrong: its step is recomputed elsewhere. */
export class WrongOutputError extends HopError {
  constructor (peerId: string, message: string) {
    super(peerId, message)
    this.name = 'WrongOutputError'
  }
}

/** What one check found. */
export type SpotCheckResult =
  | { outcome: 'agreed', verifier: string, distance: number }
  | { outcome: 'server wrong', why: string }
  | { outcome: 'verifier wrong', verifier: string, referee: string }
  | { outcome: 'unsettled', verifier: string, why: string }
  | { outcome: 'unchecked', why: string }

/** A step a hop answered, as a check needs it. */
export interface CheckedStep {
  hop: RouteHop
  /** the hop's input for every position so far: [batch, total, hidden] */
  input: Float32Array
  total: number
  /** the hop's outputs for the last `tokens` positions: [batch, tokens, hidden] */
  output: Float32Array
  tokens: number
  batch: number
}

/** How long a server found wrong is banned: the longest ban a failing server gets. */
export const WRONG_OUTPUT_BAN_MS = DEFAULT_MAX_BAN_MS

export class SpotChecker {
  /**
   * @param rate the share of steps checked, 0..1
   * @param options the connect and step timeouts of the session's own hops, and who hears of each check
   */
  constructor (private readonly context: SessionContext, readonly rate: number,
    private readonly options: { connectTimeoutMs?: number, stepTimeoutMs?: number, onSpotCheck?: (result: SpotCheckResult, hop: RouteHop) => void } = {}) {
    if (!(rate >= 0 && rate <= 1)) throw new RangeError(`verify rate must be 0..1, got ${rate}`)
  }

  /** Whether to check the step just answered: drawn after the answer, so the server cannot know. */
  due (): boolean {
    return this.rate > 0 && randomInt(1_000_000) < this.rate * 1_000_000
  }

  /**
   * Checks `step` on a second server (and a third when they disagree). Throws WrongOutputError when
   * the hop's server is found wrong (it is banned by then); otherwise returns what was found.
   */
  async check (step: CheckedStep): Promise<SpotCheckResult> {
    let result: SpotCheckResult
    try {
      result = await this.settle(step)
    } catch (err) {
      if (err instanceof WrongOutputError) this.options.onSpotCheck?.({ outcome: 'server wrong', why: err.message }, step.hop)
      throw err
    }
    this.options.onSpotCheck?.(result, step.hop)
    return result
  }

  private async settle (step: CheckedStep): Promise<SpotCheckResult> {
    const { manager } = this.context
    const server = step.hop.peerId
    const formatOf = (peerId: string): WeightFormat | undefined => manager.servers.find(s => s.peerId === peerId)?.format
    const first = await this.opinion(step, [server])
    if (first === null) return { outcome: 'unchecked', why: `no second server holds blocks ${step.hop.start}:${step.hop.end}` }
    const tolerance = (a: string, b: string): number => verifyTolerance(formatOf(a), formatOf(b))
    const distance = relativeDistance(step.output, first.output)
    if (distance <= tolerance(server, first.peerId)) return { outcome: 'agreed', verifier: first.peerId, distance }

    const third = await this.opinion(step, [server, first.peerId])
    const described = `blocks ${step.hop.start}:${step.hop.end} on ${server} and on ${first.peerId} differ by ${distance.toExponential(2)} (tolerance ${tolerance(server, first.peerId)})`
    if (third === null) {
      this.context.log?.(`${described}, and no third server holds them: kept the output, banned nobody`)
      return { outcome: 'unsettled', verifier: first.peerId, why: 'no third server' }
    }
    const serverRight = relativeDistance(step.output, third.output) <= tolerance(server, third.peerId)
    const verifierRight = relativeDistance(first.output, third.output) <= tolerance(first.peerId, third.peerId)
    if (verifierRight && !serverRight) {
      manager.bans.ban(server, WRONG_OUTPUT_BAN_MS)
      throw new WrongOutputError(server, `${described}; ${third.peerId} agrees with ${first.peerId}: ${server} computed wrong and is banned for ${WRONG_OUTPUT_BAN_MS / 60_000} min`)
    }
    if (serverRight && !verifierRight) {
      manager.bans.ban(first.peerId, WRONG_OUTPUT_BAN_MS)
      this.context.log?.(`${described}; ${third.peerId} agrees with ${server}: ${first.peerId} computed wrong and is banned`)
      return { outcome: 'verifier wrong', verifier: first.peerId, referee: third.peerId }
    }
    this.context.log?.(`${described}, and ${third.peerId} does not settle it: kept the output, banned nobody`)
    return { outcome: 'unsettled', verifier: first.peerId, why: `${third.peerId} agrees with ${serverRight ? 'both' : 'neither'}` }
  }

  /**
   * The outputs of one more server that holds the hop's blocks (not one of `exclude`, not banned),
   * chosen at random; a server that fails is banned and another tried. null: none left.
   */
  private async opinion (step: CheckedStep, exclude: readonly string[]): Promise<{ peerId: string, output: Float32Array } | null> {
    const { manager, node, model, hiddenSize, dtype } = this.context
    const { hop, batch, total, tokens } = step
    const candidates = manager.servers.filter((s: ServerSpan) => s.start <= hop.start && hop.end <= s.end &&
      !exclude.includes(s.peerId) && !manager.bans.isBanned(s.peerId))
    while (candidates.length > 0) {
      const [verifier] = candidates.splice(randomInt(candidates.length), 1)
      let remote: RemoteSpan | null = null
      try {
        remote = await RemoteSpan.open(node, { peerId: verifier.peerId, start: hop.start, end: hop.end }, {
          protocol: FORWARD_PROTOCOL, model, maxLength: total, batch, hiddenSize, dtype,
          connectTimeoutMs: this.options.connectTimeoutMs, stepTimeoutMs: this.options.stepTimeoutMs, stepTimes: manager.stepTimes // a verifier that stalls costs what a hop would
        })
        const out = await remote.step(step.input, total, 0)
        manager.onSuccess(verifier.peerId)
        return { peerId: verifier.peerId, output: sliceTokens(out, batch, total, hiddenSize, total - tokens, tokens) }
      } catch (err) {
        if (!(err instanceof HopError)) throw err
        manager.onFailure(verifier.peerId)
      } finally {
        remote?.close()
      }
    }
    return null
  }
}
