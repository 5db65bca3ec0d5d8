// The gateway's credit ledger (issue 21): what each server earned by the work it did for this
// gateway's traffic of every kind (API, chat, jobs), counted from the receipts it signed, never
// from what it announces. A receipt earns tokens × blocks × sequences once its signature checks
// out against the server's peer id; a server a spot check found wrong loses the credit of the
// receipts the evidence holds (its session up to the wrong step). Credits live in the job store's
// file (append-only lines, totals when it is compacted), so they survive restarts; the contributors
// leaderboard shows them.

import type { WorkListener } from '../petals/client/distributed-model.js'
import type { Evidence } from '../petals/protocol/evidence.js'
import { checkSignature, decodeReceipt, ReceiptError, type Receipt, type SignedReceipt } from '../petals/protocol/receipts.js'
import { addCredits, type Credit } from './job-store.js'

/** How often received receipts are checked and written: one line per interval, not per step. */
export const LEDGER_FLUSH_MS = 1000

/** Where a ledger keeps its lines (the job store). */
export interface LedgerStore {
  readonly credits: readonly Credit[]
  addCredits: (credits: readonly Credit[], disproven?: boolean) => Promise<void>
}

export interface CreditLedgerOptions {
  /**
   * how long received receipts wait before they are checked and written
   * @default LEDGER_FLUSH_MS (1 s)
   */
  flushMs?: number
  /** called after each write (the gateway compacts the file there when it has grown) */
  onWritten?: () => Promise<void>
  log?: (line: string) => void
}

/** A step's worth of credit: tokens × sequences, and that × blocks. */
function creditOf (peerId: string, receipt: Receipt): Credit {
  const tokens = receipt.tokens * receipt.batch
  return { peer_id: peerId, receipts: 1, tokens, block_tokens: tokens * Math.max(0, receipt.end - receipt.start) }
}

export class CreditLedger implements WorkListener {
  private pending: Array<{ peerId: string, signed: SignedReceipt, receipt: Receipt }> = []
  private timer: NodeJS.Timeout | null = null
  private writing: Promise<void> = Promise.resolve()
  /** receipts refused since start, per server: not signed by it */
  readonly refused = new Map<string, number>()

  constructor (private readonly store: LedgerStore, private readonly options: CreditLedgerOptions = {}) {}

  /** Credit per server: receipted work that held up, minus disproven work. */
  get credits (): readonly Credit[] {
    return this.store.credits
  }

  /** WorkListener: a receipt (decoded by the client) whose signature is checked, and credited, at the next flush. */
  readonly receipt = (peerId: string, signed: SignedReceipt, receipt: Receipt): void => {
    this.pending.push({ peerId, signed, receipt })
    this.timer ??= setTimeout(() => { this.timer = null; this.flush().catch(err => this.options.log?.(`credits: ${(err as Error).message}`)) }, this.options.flushMs ?? LEDGER_FLUSH_MS)
  }

  /**
   * WorkListener: `peerId` was found wrong: the receipts the evidence holds (its signed steps of that
   * session, credited when they arrived) are taken back. Without evidence nothing is proven, and
   * nothing taken back.
   */
  readonly disproven = (peerId: string, evidence: Evidence | null): void => {
    if (evidence === null) return
    const credits: Credit[] = []
    for (const step of evidence.steps) {
      if (step.receipt === undefined) continue
      try {
        credits.push(creditOf(peerId, decodeReceipt(step.receipt)))
      } catch (err) {
        if (!(err instanceof ReceiptError)) throw err
      }
    }
    const total = credits.reduce((sum, c) => sum + c.block_tokens, 0)
    this.options.log?.(`credits: ${peerId} computed wrong; its ${credits.length} receipts of that session (${total} block-tokens) are taken back`)
    // After what is pending, so that a receipt credited later is not left standing.
    this.write(async () => {
      await this.flushPending()
      await this.store.addCredits(addCredits([], credits, 1), true)
    })
  }

  /** Checks and writes the receipts received so far; resolves once they are on disk. */
  async flush (): Promise<void> {
    await this.write(async () => await this.flushPending())
  }

  /** Writes what is pending and stops the timer (the gateway is closing). */
  async close (): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    await this.flush()
  }

  private async write (step: () => Promise<void>): Promise<void> {
    const next = this.writing.catch(() => {}).then(step)
    this.writing = next
    await next
  }

  private async flushPending (): Promise<void> {
    const batch = this.pending
    this.pending = []
    if (batch.length === 0) return
    const earned: Credit[] = []
    for (const { peerId, signed, receipt } of batch) {
      try {
        checkSignature(signed, peerId)
        earned.push(creditOf(peerId, receipt))
      } catch (err) {
        if (!(err instanceof ReceiptError)) throw err
        const refused = (this.refused.get(peerId) ?? 0) + 1
        this.refused.set(peerId, refused)
        if (refused === 1) this.options.log?.(`credits: a receipt from ${peerId} earns nothing: ${err.message}`)
      }
    }
    await this.store.addCredits(addCredits([], earned, 1))
    await this.options.onWritten?.()
  }
}
