// Evidence against other servers (issue 21), as a server keeps it. A client whose spot check caught
// a server computing wrong hands the evidence to other servers of the same blocks
// (EVIDENCE_PROTOCOL, client/evidence-exchange.ts). Each checks it on its own blocks, in its compute
// queue like any forward work, and keeps what holds: it names the accused in its record
// (ServerInfo.disproven) and sends the evidence to any client that asks, which checks it once more
// before it avoids the accused. Nothing is kept on a peer's word: only evidence that this server's
// own blocks found wrong, and only as long as a client that caught the accused bans it.

import type { Stream } from '@libp2p/interface'
import type { BlockSpan } from '../../inference/backend.js'
import type { WeightFormat } from '../../inference/dtype.js'
import { FrameStream } from '../../p2p/frames.js'
import { checkEvidence, EvidenceError, spanRerun, type Evidence, type Verdict } from '../protocol/evidence.js'
import { EvidenceRequest, EvidenceResponse } from '../protocol/messages.js'
import { MAX_DISPROVEN } from '../protocol/server-info.js'
import { MAX_EVIDENCE_FRAME_BYTES } from '../protocol/wire.js'
import type { TaskOwner, TaskQueue } from './task-queue.js'

/**
 * How long checked evidence is kept and its accused named: 15 min, as long as a client that
 * caught the accused bans it (WRONG_OUTPUT_BAN_MS). A server that was fixed is not named forever.
 */
export const EVIDENCE_KEEP_MS = 15 * 60_000

/** How long a request may take to arrive: evidence is up to MAX_EVIDENCE_FRAME_BYTES. */
const EVIDENCE_READ_TIMEOUT_MS = 30_000

/** A request this server cannot take now or at all: the requester hears the message. */
export class DisputeError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'DisputeError'
  }
}

export interface DisputesOptions {
  /** the model this server's blocks belong to, as it announces it */
  model: string
  /** this server's peer id: evidence against itself is not checked here */
  self: string
  /** the span evidence is checked on (null while it loads) */
  span: () => BlockSpan | null
  /** the weight format the span computes in */
  format: () => WeightFormat
  /** the compute queue: a check waits its turn as forward work of the peer that sent it */
  queue: TaskQueue
  /** hears when the list of servers disproven changes (the server announces it) */
  onChange: () => void
  log?: (message: string) => void
}

export class Disputes {
  /** checked evidence by accused, oldest first, each with when it stops being named */
  private readonly kept = new Map<string, { evidence: Evidence, until: number }>()
  private checking = false

  constructor (private readonly options: DisputesOptions) {}

  /** The servers this one holds checked evidence against now (at most MAX_DISPROVEN). */
  get disproven (): string[] {
    const now = Date.now()
    for (const [accused, { until }] of this.kept) if (until <= now) this.kept.delete(accused)
    return [...this.kept.keys()]
  }

  /** The evidence kept against `accused`, if any. */
  evidenceAgainst (accused: string): Evidence | undefined {
    const kept = this.kept.get(accused)
    return kept !== undefined && kept.until > Date.now() ? kept.evidence : undefined
  }

  /**
   * Checks `evidence` against `accused` on this server's blocks, one check at a time, and keeps it
   * when the accused's signed output is wrong. Throws EvidenceError when it proves nothing, and
   * DisputeError when this server cannot check it (no blocks yet, busy, or accused itself).
   */
  async submit (accused: string, evidence: Evidence, owner: TaskOwner): Promise<Verdict> {
    const span = this.options.span()
    if (span === null) throw new DisputeError('this server has no blocks loaded yet')
    if (accused === this.options.self) throw new DisputeError('evidence against this server is not checked by it')
    if (this.checking) throw new DisputeError('this server is checking other evidence; ask again later')
    this.checking = true
    try {
      const cost = evidence.steps.length * (span.end - span.start)
      const verdict = await this.options.queue.run('forward', async () => await checkEvidence(evidence, accused, spanRerun(span, this.options.model, this.options.format())), { owner, cost })
      this.options.log?.(`evidence from ${owner.peer} against ${accused} (blocks ${verdict.start}:${verdict.end}): its signed output is ${verdict.distance.toExponential(2)} from this server's ` +
        `(tolerance ${verdict.tolerance}): ${verdict.wrong ? 'wrong; naming it in this server\'s record' : 'holds up; not kept'}`)
      if (verdict.wrong) {
        this.kept.delete(accused) // re-inserted last: the newest evidence is the last to go
        this.kept.set(accused, { evidence, until: Date.now() + EVIDENCE_KEEP_MS })
        for (const oldest of this.kept.keys()) {
          if (this.kept.size <= MAX_DISPROVEN) break
          this.kept.delete(oldest)
        }
        this.options.onChange()
      }
      return verdict
    } finally {
      this.checking = false
    }
  }
}

/**
 * One EVIDENCE_PROTOCOL request: evidence to check (answered with the verdict), or a fetch of the
 * evidence kept against a server (answered with it, or with none). A request this server cannot
 * serve is answered with the reason; a frame the peer got wrong ends the stream.
 */
export async function serveEvidence (stream: Stream, owner: TaskOwner, disputes: Disputes, model: string): Promise<void> {
  const frames = new FrameStream(stream, MAX_EVIDENCE_FRAME_BYTES)
  try {
    const request = await frames.read(EvidenceRequest, { signal: AbortSignal.timeout(EVIDENCE_READ_TIMEOUT_MS) })
    if (request === null) { // the peer closed without asking anything
      await stream.close()
      return
    }
    let response: EvidenceResponse
    if (request.model !== model) {
      response = { error: `this server serves ${model}, not ${request.model}` }
    } else if (request.evidence === undefined) {
      response = { evidence: disputes.evidenceAgainst(request.accused) }
    } else {
      try {
        const { wrong, distance, tolerance } = await disputes.submit(request.accused, request.evidence, owner)
        response = { verdict: { wrong, distance, tolerance } }
      } catch (err) {
        if (!(err instanceof EvidenceError || err instanceof DisputeError)) throw err
        response = { error: err.message }
      }
    }
    await frames.write(EvidenceResponse, response)
    await stream.close()
  } catch (err) {
    stream.abort(err as Error)
  }
}
