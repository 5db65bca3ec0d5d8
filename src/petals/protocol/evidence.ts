// Evidence against a server that computed wrong (issue 21), and how anyone holding the same blocks
// checks it. A server signs a receipt for every step it answers (receipts.ts); a client that
// caught it (spot-check.ts) puts the receipts of the session from position 0 together with each
// step's input and the disputed outputs. A checker verifies the signatures and hashes, runs the
// inputs through its own blocks (or, on a client, another server's), and compares the outputs with the tolerance the two servers'
// weight formats allow: the same rule the spot checks use, so evidence a client acted on convinces
// every honest node that holds the blocks, and nothing a server did not sign can be pinned on it.

import type { BlockSpan } from '../../inference/backend.js'
import { DTYPE_BYTES, fromFloat32, toFloat32, type DType, type WeightFormat } from '../../inference/dtype.js'
import { concatTokens, sliceTokens } from '../../util/tensor.js'
import { Evidence, type EvidenceStep, type Receipt, type SignedReceipt } from './messages.js'
import { equalBytes, openReceipt, receiptDType, receiptFormat, ReceiptError, sha256 } from './receipts.js'
import { fitsWireDType } from './wire.js'

export { Evidence } from './messages.js'

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

/** Evidence that is malformed, or does not hold the accused to anything it signed. */
export class EvidenceError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'EvidenceError'
  }
}

/** A receipt a client kept for one step of a server session, with the step's place in the session. */
export interface KeptReceipt {
  signed: SignedReceipt
  position: number
  tokens: number
}

/**
 * The evidence of a session's steps on `accused`: its receipts (which must tile positions
 * 0..total and be signed by it), each step's input re-encoded from `input` ([batch, total, hidden],
 * fp32 values that were sent in `dtype`, so the bytes come out the same), and the outputs of the
 * steps from position `answer.from` on (`answer.output`: [batch, total - from, hidden]).
 * Throws EvidenceError when the receipts do not make a case (a gap, one not signed by `accused`).
 */
export function buildEvidence (accused: string, receipts: readonly KeptReceipt[], input: Float32Array, answer: { from: number, output: Float32Array },
  shape: { batch: number, total: number, hidden: number }, dtype: DType): Evidence {
  const { batch, total, hidden } = shape
  const steps: EvidenceStep[] = []
  let next = 0
  for (const kept of receipts) {
    if (kept.position !== next) throw new EvidenceError(`the receipts do not tile the session: one starts at ${kept.position}, after ${next} tokens`)
    try {
      openReceipt(kept.signed, accused)
    } catch (err) {
      throw new EvidenceError((err as Error).message)
    }
    const step: EvidenceStep = { receipt: kept.signed, input: fromFloat32(sliceTokens(input, batch, total, hidden, kept.position, kept.tokens), dtype) as Uint8Array<ArrayBuffer> }
    if (kept.position >= answer.from) {
      step.output = fromFloat32(sliceTokens(answer.output, batch, total - answer.from, hidden, kept.position - answer.from, kept.tokens), dtype) as Uint8Array<ArrayBuffer>
    }
    steps.push(step)
    next += kept.tokens
  }
  if (next !== total) throw new EvidenceError(`the receipts cover ${next} of the session's ${total} tokens`)
  if (!steps.some(s => s.output !== undefined)) throw new EvidenceError('no receipted step holds the disputed output')
  return { steps }
}

/** What checking evidence found: whether the accused's signed output is wrong, and by how much. */
export interface Verdict {
  accused: string
  model: string
  start: number
  end: number
  /** the largest relative distance between a disputed output and the checker's */
  distance: number
  /** what the accused's and the checker's formats allow */
  tolerance: number
  wrong: boolean
}

/** The most tokens (sequences × positions) evidence may hold: more than any session a server allows. */
const MAX_EVIDENCE_TOKENS = 1 << 20

/**
 * How a checker computes: blocks [start, end) of `model` over a session's inputs [batch, total,
 * hidden] from position 0, all at once and without keeping a cache, as a spot check's second
 * server does. Its own span on a server (spanRerun); another server on a client
 * (evidence-exchange.ts). `run` answers with the outputs, same shape, and the weight format they
 * were computed in.
 */
export interface Rerun {
  model: string
  hiddenSize: number
  run: (blocks: { start: number, end: number }, input: Float32Array, batch: number, total: number) => Promise<{ output: Float32Array, format: WeightFormat }>
}

/** A Rerun on `span` of `model`, computing in `format`; evidence about blocks it does not hold is an EvidenceError. */
export function spanRerun (span: BlockSpan, model: string, format: WeightFormat): Rerun {
  return {
    model,
    hiddenSize: span.config.hiddenSize,
    async run ({ start, end }, input, batch, total) {
      if (start < span.start || end > span.end) throw new EvidenceError(`the evidence is about blocks ${start}:${end}, which this span (${span.start}:${span.end}) does not hold`)
      const rows = total * span.config.hiddenSize
      const sessions: number[] = []
      try {
        for (let b = 0; b < batch; b++) sessions.push(span.openSession(total, { start, end }))
        const outputs = await span.forwardBatch(sessions.map((session, b) => ({ session, position: 0, hidden: input.subarray(b * rows, (b + 1) * rows) })))
        return { output: concatTokens(outputs), format }
      } finally {
        for (const session of sessions) span.closeSession(session)
      }
    }
  }
}

/**
 * Checks evidence against `accused` with `checker` (which must hold the blocks): every receipt
 * signed by the accused, one session, positions 0..total in order, inputs and outputs matching
 * their hashes; then the inputs run through the checker's blocks and the disputed outputs are
 * compared. Throws EvidenceError when the evidence proves nothing.
 */
export async function checkEvidence (evidence: Evidence, accused: string, checker: Rerun): Promise<Verdict> {
  const { steps } = evidence
  if (steps.length === 0) throw new EvidenceError('the evidence holds no steps')
  const receipts: Receipt[] = []
  for (const [i, step] of steps.entries()) {
    if (step.receipt === undefined) throw new EvidenceError(`step ${i} has no receipt`)
    try {
      receipts.push(openReceipt(step.receipt, accused))
    } catch (err) {
      throw new EvidenceError(`step ${i}: ${(err as Error).message}`)
    }
  }
  const first = receipts[0]
  const dtype = wrapped(() => receiptDType(first))
  const claimedFormat = wrapped(() => receiptFormat(first))
  const { start, end, batch, model } = first
  const hidden = checker.hiddenSize
  if (model !== checker.model) throw new EvidenceError(`the evidence is about model ${model}, not ${checker.model}`)
  if (start >= end) throw new EvidenceError(`the evidence is about blocks ${start}:${end}, which is no range`)
  if (batch < 1) throw new EvidenceError('the evidence holds no sequence')
  let total = 0
  for (const [i, r] of receipts.entries()) {
    if (r.model !== model || r.start !== start || r.end !== end || r.batch !== batch || r.dtype !== first.dtype || r.format !== first.format || !equalBytes(r.session, first.session)) {
      throw new EvidenceError(`step ${i}'s receipt is for another session, model, blocks or format than the first's`)
    }
    if (r.position !== total) throw new EvidenceError(`step ${i} starts at position ${r.position}, not ${total}: the steps must follow each other from 0`)
    if (r.tokens < 1) throw new EvidenceError(`step ${i} has no tokens`)
    total += r.tokens
    if (batch * total > MAX_EVIDENCE_TOKENS) throw new EvidenceError(`the evidence holds more than ${MAX_EVIDENCE_TOKENS} tokens`)
  }
  const decode = (bytes: Uint8Array, tokens: number, what: string): Float32Array => {
    if (bytes.byteLength !== batch * tokens * hidden * DTYPE_BYTES[dtype]) throw new EvidenceError(`${what} has ${bytes.byteLength} bytes, not [${batch}, ${tokens}, ${hidden}] in ${dtype}`)
    const values = toFloat32(bytes, dtype)
    if (!fitsWireDType(values, 'f32')) throw new EvidenceError(`${what} holds NaN or infinite values`)
    return values
  }
  for (const [i, step] of steps.entries()) {
    if (!equalBytes(sha256(step.input), receipts[i].inputSha256)) throw new EvidenceError(`step ${i}'s input is not the one its receipt hashes`)
    if (step.output !== undefined && !equalBytes(sha256(step.output), receipts[i].outputSha256)) throw new EvidenceError(`step ${i}'s output is not the one its receipt hashes`)
  }
  if (!steps.some(s => s.output !== undefined)) throw new EvidenceError('the evidence disputes no output')

  // The steps' inputs laid out as one session, [batch, total, hidden], rerun at once.
  const input = new Float32Array(batch * total * hidden)
  for (const [i, step] of steps.entries()) {
    const { position, tokens } = receipts[i]
    const values = decode(step.input, tokens, `step ${i}'s input`)
    for (let b = 0; b < batch; b++) input.set(values.subarray(b * tokens * hidden, (b + 1) * tokens * hidden), (b * total + position) * hidden)
  }
  const { output, format } = await checker.run({ start, end }, input, batch, total)
  let distance = 0
  for (const [i, step] of steps.entries()) {
    if (step.output === undefined) continue
    const { position, tokens } = receipts[i]
    const claimed = decode(step.output, tokens, `step ${i}'s output`)
    // The checker's outputs as they would travel, so both sides are rounded to the wire dtype alike.
    const computed = toFloat32(fromFloat32(sliceTokens(output, batch, total, hidden, position, tokens), dtype), dtype)
    distance = Math.max(distance, relativeDistance(claimed, computed))
  }
  const tolerance = verifyTolerance(claimedFormat, format)
  return { accused, model, start, end, distance, tolerance, wrong: distance > tolerance }
}

function wrapped<T> (read: () => T): T {
  try {
    return read()
  } catch (err) {
    throw err instanceof ReceiptError ? new EvidenceError(err.message) : err
  }
}


/** Evidence as bytes (to store or send), and back; a decode failure is an EvidenceError. */
export function encodeEvidence (evidence: Evidence): Uint8Array {
  return Evidence.encode(evidence)
}

export function decodeEvidence (bytes: Uint8Array): Evidence {
  try {
    return Evidence.decode(bytes)
  } catch (err) {
    throw new EvidenceError(`the evidence does not decode: ${(err as Error).message}`)
  }
}
