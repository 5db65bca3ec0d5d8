// Spot checks (issue 21): a client re-runs a random sample of its inference steps on a second server
// that holds the same blocks and compares the outputs. A server that computes wrong (broken
// hardware, a lazy server skipping layers, a hostile one steering answers) is caught, banned, and
// replaced (inference-session.ts: at rate 1 before the step reaches the caller, below it from the
// next step on). Petals trusts every hop.
//
// A check sends the hop's whole input so far (the history the client keeps for failover) to the
// second server as cache-less forward work and compares the new tokens' outputs. Which steps are
// checked is drawn after the server answered, from this process's CSPRNG: the server cannot tell a
// checked step from another. Two servers that disagree get a third opinion; the one the third
// agrees with is right, and a server found wrong comes with the evidence of its own signed receipts
// (evidence.ts). Without a third server the dispute stays open: nobody is banned (one word against
// another). Below rate 1 the output is kept (unchecked steps reach the caller anyway); at rate 1,
// where the caller asked that no unchecked step reach it, the step is not delivered: it waits and
// is tried again, as when no server is left (UncheckedStepError), and so is a step no second
// server could check.

import { randomInt } from 'node:crypto'
import { FORWARD_PROTOCOL } from '../protocol/wire.js'
import { buildEvidence, EvidenceError, relativeDistance, verifyTolerance, type Evidence, type KeptReceipt } from '../protocol/evidence.js'
import { DEFAULT_MAX_BAN_MS } from './ban-list.js'
import { HopError, RemoteSpan } from './remote-span.js'
import { sliceTokens } from '../../util/tensor.js'
import type { WeightFormat } from '../../inference/dtype.js'
import type { RouteHop, ServerSpan } from './routing.js'
import type { SessionContext } from './inference-session.js'

/** The share of inference steps checked on a second server when the caller says nothing: 1 in 20. */
export const DEFAULT_VERIFY_RATE = 0.05

/**
 * A server whose output two others agreed was wrong: its step is recomputed elsewhere. `evidence`:
 * its signed receipts and the inputs, which any holder of the blocks can check (evidence.ts); null
 * when its receipts do not make a case.
 */
export class WrongOutputError extends HopError {
  constructor (peerId: string, message: string, readonly evidence: Evidence | null) {
    super(peerId, message)
    this.name = 'WrongOutputError'
  }
}

/**
 * At rate 1, a step that could not be checked: no second server answered, or two servers disagree
 * with no third to settle it. Its output is not delivered, nobody is banned, and the step is tried
 * again after a wait (another server may have joined by then), up to the session's maxRetries.
 */
export class UncheckedStepError extends HopError {
  constructor (peerId: string, message: string) {
    super(peerId, message)
    this.name = 'UncheckedStepError'
  }
}

/** What one check found. */
export type SpotCheckResult =
  | { outcome: 'agreed', verifier: string, distance: number }
  | { outcome: 'server wrong', why: string, evidence: Evidence | null }
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
  /** the hop's signed receipts for its session so far, this step's included */
  receipts: readonly KeptReceipt[]
  /** the hop's whole answer to this step: outputs for positions [from, total) */
  answer: { from: number, output: Float32Array }
}

/** A check that finds no other server looks at the swarm again if its last look is older than this. */
const RECHECK_SWARM_MS = 5000

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
      if (err instanceof WrongOutputError) this.options.onSpotCheck?.({ outcome: 'server wrong', why: err.message, evidence: err.evidence }, step.hop)
      throw err
    }
    this.options.onSpotCheck?.(result, step.hop)
    return result
  }

  private async settle (step: CheckedStep): Promise<SpotCheckResult> {
    const { manager } = this.context
    const server = step.hop.peerId
    const first = await this.opinion(step, [server])
    if (first === null) return { outcome: 'unchecked', why: `no second server holds blocks ${step.hop.start}:${step.hop.end}` }
    const tolerance = (a: string, b: string): number => verifyTolerance(manager.formatOf(a), manager.formatOf(b))
    const distance = relativeDistance(step.output, first.output)
    if (distance <= tolerance(server, first.peerId)) return { outcome: 'agreed', verifier: first.peerId, distance }

    const third = await this.opinion(step, [server, first.peerId])
    const described = `blocks ${step.hop.start}:${step.hop.end} on ${server} and on ${first.peerId} differ by ${distance.toExponential(2)} (tolerance ${tolerance(server, first.peerId)})`
    if (third === null) {
      this.context.log?.(`${described}, and no third server holds them: banned nobody`)
      return { outcome: 'unsettled', verifier: first.peerId, why: 'no third server' }
    }
    const serverRight = relativeDistance(step.output, third.output) <= tolerance(server, third.peerId)
    const verifierRight = relativeDistance(first.output, third.output) <= tolerance(first.peerId, third.peerId)
    if (verifierRight && !serverRight) {
      manager.bans.convict(server, WRONG_OUTPUT_BAN_MS)
      throw new WrongOutputError(server, `${described}; ${third.peerId} agrees with ${first.peerId}: ${server} computed wrong and is banned for ${WRONG_OUTPUT_BAN_MS / 60_000} min`,
        this.evidence(step))
    }
    if (serverRight && !verifierRight) {
      manager.bans.convict(first.peerId, WRONG_OUTPUT_BAN_MS)
      this.context.log?.(`${described}; ${third.peerId} agrees with ${server}: ${first.peerId} computed wrong and is banned`)
      return { outcome: 'verifier wrong', verifier: first.peerId, referee: third.peerId }
    }
    this.context.log?.(`${described}, and ${third.peerId} does not settle it: banned nobody`)
    return { outcome: 'unsettled', verifier: first.peerId, why: `${third.peerId} agrees with ${serverRight ? 'both' : 'neither'}` }
  }

  /** The evidence of `step` against its server, or null (logged) when its receipts make no case. */
  private evidence (step: CheckedStep): Evidence | null {
    const { hiddenSize, dtype } = this.context
    try {
      return buildEvidence(step.hop.peerId, step.receipts, step.input, step.answer, { batch: step.batch, total: step.total, hidden: hiddenSize }, dtype)
    } catch (err) {
      if (!(err instanceof EvidenceError)) throw err
      this.context.log?.(`no evidence against ${step.hop.peerId}: ${err.message}`)
      return null
    }
  }

  /**
   * The outputs of one more server that holds the hop's blocks (not one of `exclude`, not banned),
   * chosen at random; a server that fails is banned and another tried. null: none left.
   */
  private async opinion (step: CheckedStep, exclude: readonly string[]): Promise<{ peerId: string, output: Float32Array } | null> {
    const { hop, batch, total, tokens } = step
    const found = await rerunElsewhere(this.context, hop, step.input, batch, total, exclude, this.options)
    return found === null ? null : { peerId: found.peerId, output: sliceTokens(found.output, batch, total, this.context.hiddenSize, total - tokens, tokens) }
  }
}

/**
 * Runs `input` ([batch, total, hidden], positions 0..total) through blocks [start, end) as
 * cache-less forward work on a server that holds them, chosen at random among those known (not one
 * of `exclude`, not convicted), servers not banned first, then those banned for failing (a server
 * that timed out under load still computes right); a server that fails is banned and another
 * tried. null: none left. Spot checks ask it for a second and third opinion, the evidence exchange
 * for a check.
 */
export async function rerunElsewhere (context: SessionContext, blocks: { start: number, end: number }, input: Float32Array, batch: number, total: number,
  exclude: readonly string[], timeouts: { connectTimeoutMs?: number, stepTimeoutMs?: number } = {}): Promise<{ peerId: string, format: WeightFormat | undefined, output: Float32Array } | null> {
  const { manager, node, model, hiddenSize, dtype } = context
  const holders = (): ServerSpan[] => manager.servers.filter((s: ServerSpan) => s.start <= blocks.start && blocks.end <= s.end &&
    !exclude.includes(s.peerId) && !manager.bans.isConvicted(s.peerId))
  let candidates = holders()
  if (!candidates.some(s => !manager.bans.isBanned(s.peerId))) {
    // The servers known may be old news (a client that joined while records were still spreading
    // knew only some, and its steps went unchecked in the chaos bench): look again first.
    await manager.updateIfOlder(RECHECK_SWARM_MS)
    candidates = holders()
  }
  while (candidates.length > 0) {
    const unbanned = candidates.filter(s => !manager.bans.isBanned(s.peerId))
    const pool = unbanned.length > 0 ? unbanned : candidates
    const verifier = pool[randomInt(pool.length)]
    candidates.splice(candidates.indexOf(verifier), 1)
    let remote: RemoteSpan | null = null
    try {
      remote = await RemoteSpan.open(node, { peerId: verifier.peerId, start: blocks.start, end: blocks.end }, {
        protocol: FORWARD_PROTOCOL, model, maxLength: total, batch, hiddenSize, dtype,
        connectTimeoutMs: timeouts.connectTimeoutMs, stepTimeoutMs: timeouts.stepTimeoutMs, stepTimes: manager.stepTimes, // a verifier that stalls costs what a hop would
        speeds: manager.speeds,
        onReceipt: context.onReceipt,
        format: verifier.format
      })
      const output = await remote.step(input, total, 0)
      manager.onSuccess(verifier.peerId)
      return { peerId: verifier.peerId, format: verifier.format, output }
    } catch (err) {
      if (!(err instanceof HopError)) throw err
      manager.onFailure(verifier.peerId)
    } finally {
      remote?.close()
    }
  }
  return null
}
