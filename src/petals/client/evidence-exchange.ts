// Evidence between clients (issue 21), through the servers that hold the same blocks. A client
// whose spot check caught a server publishes the evidence: it hands it to up to PUBLISH_TO other
// servers of those blocks, which check it on their own blocks and, when it holds, name the accused
// in their records (server/disputes.ts). Every client reads those records whenever it looks at the
// swarm. For each named server it could route to, it fetches the evidence from a server that named
// it and checks it on another (neither the accused nor the one that named it), and bans the accused
// only when that check finds its signed output wrong too. One peer's word evicts nobody: a server
// that names an honest one costs each client one cache-less forward pass of the evidence, once.

import { peerIdFromString } from '@libp2p/peer-id'
import type { Stream } from '@libp2p/interface'
import { FrameStream } from '../../p2p/frames.js'
import { shuffled } from '../../util/random.js'
import { checkEvidence, EvidenceError, type Evidence, type Rerun } from '../protocol/evidence.js'
import { EvidenceRequest, EvidenceResponse } from '../protocol/messages.js'
import { decodeReceipt } from '../protocol/receipts.js'
import { EVIDENCE_PROTOCOL, MAX_EVIDENCE_FRAME_BYTES } from '../protocol/wire.js'
import { rerunElsewhere, WRONG_OUTPUT_BAN_MS } from './spot-check.js'
import type { SessionContext } from './inference-session.js'

/** How many other servers of the blocks a client hands its evidence to. */
export const PUBLISH_TO = 3
/** How long handing evidence to a server, and its check there, may take. */
const SUBMIT_TIMEOUT_MS = 60_000
/** How long fetching evidence may take. */
const FETCH_TIMEOUT_MS = 30_000

/** What a server answered when handed evidence. */
export type Submitted = { peerId: string, kept: boolean, distance: number, tolerance: number } | { peerId: string, error: string }

/** No server other than the accused and the one that named it holds the blocks: the evidence waits. */
class NoCheckerError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'NoCheckerError'
  }
}

export interface EvidenceExchangeOptions {
  /** opening a stream to a server, and its answer to a forward step (a check) */
  connectTimeoutMs?: number
  stepTimeoutMs?: number
  /** hears of every server this client banned on evidence another client published */
  onDisproven?: (peerId: string, evidence: Evidence) => void
}

export class EvidenceExchange {
  /** "lister accused" pairs this client has looked at (a pair is looked at once) */
  private readonly reviewed = new Set<string>()
  private reviewing: Promise<void> | null = null

  constructor (private readonly context: SessionContext, private readonly options: EvidenceExchangeOptions = {}) {}

  /**
   * Hands `evidence` against `accused` to up to PUBLISH_TO other servers that hold its blocks (not
   * banned), and resolves with what each answered. Evidence too large for one frame is not sent.
   */
  async publish (accused: string, evidence: Evidence): Promise<Submitted[]> {
    const { manager, model, log } = this.context
    const bytes = EvidenceRequest.encode({ model, accused, evidence })
    if (bytes.byteLength > MAX_EVIDENCE_FRAME_BYTES) {
      log?.(`evidence against ${accused} is ${bytes.byteLength} bytes, over the ${MAX_EVIDENCE_FRAME_BYTES} a server takes: not published`)
      return []
    }
    const blocks = blocksOf(evidence)
    const servers = shuffled(manager.servers.filter(s => s.peerId !== accused && !manager.bans.isBanned(s.peerId) && blocks !== null && s.start <= blocks.start && blocks.end <= s.end))
      .slice(0, PUBLISH_TO)
    return await Promise.all(servers.map(async ({ peerId }): Promise<Submitted> => {
      try {
        const response = await this.ask(peerId, { model, accused, evidence }, SUBMIT_TIMEOUT_MS)
        if (response.verdict === undefined) return { peerId, error: response.error ?? 'no verdict' }
        const { wrong, distance, tolerance } = response.verdict
        log?.(`handed the evidence against ${accused} to ${peerId}: ${wrong ? 'it found it holds and names it' : `it found it does not hold (${distance.toExponential(2)}, tolerance ${tolerance})`}`)
        return { peerId, kept: wrong, distance, tolerance }
      } catch (err) {
        log?.(`could not hand the evidence against ${accused} to ${peerId}: ${(err as Error).message}`)
        return { peerId, error: (err as Error).message }
      }
    }))
  }

  /**
   * Checks the evidence the known servers name in their records against servers this client could
   * route to, one piece at a time, each (naming server, accused) pair once. Resolves when done;
   * a review already under way is joined.
   */
  async review (): Promise<void> {
    this.reviewing ??= this.reviewAll().finally(() => { this.reviewing = null })
    await this.reviewing
  }

  private async reviewAll (): Promise<void> {
    const { manager } = this.context
    const known = new Set(manager.servers.map(s => s.peerId))
    for (const lister of manager.servers) {
      for (const accused of lister.disproven ?? []) {
        const pair = `${lister.peerId} ${accused}`
        if (!known.has(accused) || accused === lister.peerId || manager.bans.isBanned(accused) || this.reviewed.has(pair)) continue
        this.reviewed.add(pair)
        if (!await this.reviewOne(lister.peerId, accused)) this.reviewed.delete(pair) // could not be checked: again next time
      }
    }
  }

  /** Fetches `lister`'s evidence against `accused` and checks it on a third server; false: it could not be checked. */
  private async reviewOne (lister: string, accused: string): Promise<boolean> {
    const { manager, model, hiddenSize, log } = this.context
    let evidence: Evidence | undefined
    try {
      evidence = (await this.ask(lister, { model, accused }, FETCH_TIMEOUT_MS)).evidence
    } catch (err) {
      log?.(`could not fetch the evidence ${lister} names against ${accused}: ${(err as Error).message}`)
      return false
    }
    if (evidence === undefined) {
      log?.(`${lister} names ${accused} as disproven but sends no evidence: ignored`)
      return true
    }
    let checker = ''
    const rerun: Rerun = {
      model,
      hiddenSize,
      run: async (blocks, input, batch, total) => {
        const found = await rerunElsewhere(this.context, blocks, input, batch, total, [accused, lister], this.options)
        if (found === null) throw new NoCheckerError(`no server other than ${accused} and ${lister} holds blocks ${blocks.start}:${blocks.end} to check the evidence on`)
        checker = found.peerId
        return { output: found.output, format: found.format ?? 'f32' }
      }
    }
    try {
      const verdict = await checkEvidence(evidence, accused, rerun)
      if (!verdict.wrong) {
        log?.(`${lister} names ${accused} as disproven, but on ${checker} its signed output holds up (${verdict.distance.toExponential(2)}, tolerance ${verdict.tolerance}): not banned`)
        return true
      }
      manager.bans.convict(accused, WRONG_OUTPUT_BAN_MS)
      log?.(`${lister} holds evidence against ${accused}; checked on ${checker}, its signed output is ${verdict.distance.toExponential(2)} off ` +
        `(tolerance ${verdict.tolerance}): banned for ${WRONG_OUTPUT_BAN_MS / 60_000} min`)
      this.options.onDisproven?.(accused, evidence)
      return true
    } catch (err) {
      if (err instanceof EvidenceError) {
        log?.(`${lister} names ${accused} as disproven, but its evidence proves nothing: ${err.message}`)
        return true
      }
      if (!(err instanceof NoCheckerError)) throw err
      log?.(`could not check the evidence against ${accused}: ${err.message}`)
      return false
    }
  }

  /** One EVIDENCE_PROTOCOL request to `peerId` and its answer. */
  private async ask (peerId: string, request: EvidenceRequest, timeoutMs: number): Promise<EvidenceResponse> {
    const signal = AbortSignal.timeout(timeoutMs)
    const stream: Stream = await this.context.node.dialProtocol(peerIdFromString(peerId), EVIDENCE_PROTOCOL, { signal })
    try {
      const frames = new FrameStream(stream, MAX_EVIDENCE_FRAME_BYTES)
      await frames.write(EvidenceRequest, request, { signal })
      const response = await frames.read(EvidenceResponse, { signal })
      await stream.close({ signal })
      if (response === null) throw new Error('it closed the stream without an answer')
      if (response.error !== undefined && response.verdict === undefined && response.evidence === undefined) throw new Error(response.error)
      return response
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }
}

/** The blocks evidence is about, from its first receipt as it claims them (checked later); null: none. */
function blocksOf (evidence: Evidence): { start: number, end: number } | null {
  const first = evidence.steps[0]?.receipt
  if (first === undefined) return null
  try {
    const { start, end } = decodeReceipt(first)
    return { start, end }
  } catch {
    return null
  }
}
