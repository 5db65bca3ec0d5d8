// Servers that compute wrong or slowly (issue 21), for the spot-check tests: a real BlockServer whose
// span's outputs are corrupted after it computed them (or delayed), and whose record then claims a
// decode speed it does not have, so that routing chooses it over every honest server (as in the
// attack run, where a noisy server was chosen on 10 of 10 routes).

import { setTimeout as delay } from 'node:timers/promises'
import { privateKeyOf } from '../p2p/identity.js'
import type { BmrtNode } from '../p2p/node.js'
import { Registry } from '../p2p/registry.js'
import { ReceiptSigner, type SignedReceipt } from '../petals/protocol/receipts.js'
import type { Evidence } from '../petals/protocol/evidence.js'
import { seededRandom } from '../inference/sampling.js'
import type { BlockServer } from '../petals/server/server.js'
import type { ServerInfo } from '../petals/protocol/server-info.js'
import type { SpanStep } from '../inference/backend.js'

/**
 * How a hostile server's outputs go wrong: noise of `noise` × the outputs' RMS added (broken
 * hardware, or steering), the input handed back unchanged (a server that skips its layers), or zeros.
 */
export type Corruption = { noise: number } | 'skip layers' | 'zeros'

/** What a corrupted span has done since `outputs` and `wrong` were last set to 0. */
export interface CorruptionCounts {
  /** outputs computed (one per step) */
  outputs: number
  /** of them, corrupted */
  wrong: number
  /** the number of the output that was corrupted first (1-based), null until one was */
  firstWrong: number | null
}

/** When a hostile server's outputs are wrong. */
export interface CorruptionSchedule {
  /**
   * right outputs before the first wrong one
   * @default 0
   */
  rightSteps?: number
  /**
   * the share of steps made wrong, drawn at random: a server that guesses which steps are not
   * checked. The client draws whether to check a step after the answer, from its own CSPRNG, so
   * every guess is independent of the draw, and a random one is as good as any.
   * @default 1
   */
  share?: number
  /**
   * wrong only in this session (0: the first span session that steps after corrupt(), 1: the
   * second…): a server that targets one user; undefined: every session
   */
  onlySession?: number
}

/** Corrupts the outputs of `server`'s span from now on, as `how` says and when `schedule` says. */
export function corrupt (server: BlockServer, how: Corruption, schedule: CorruptionSchedule = {}): CorruptionCounts {
  const { rightSteps = 0, share = 1, onlySession } = schedule
  const random = seededRandom(21)
  const counts: CorruptionCounts = { outputs: 0, wrong: 0, firstWrong: null }
  const sessions: number[] = [] // span sessions in the order they first stepped
  const spoil = (session: number, input: Float32Array, output: Float32Array): Float32Array => {
    if (!sessions.includes(session)) sessions.push(session)
    if (onlySession !== undefined && sessions.indexOf(session) !== onlySession) return output
    if (++counts.outputs <= rightSteps || random() >= share) return output
    counts.wrong++
    counts.firstWrong ??= counts.outputs
    if (how === 'skip layers') return input.slice()
    if (how === 'zeros') return new Float32Array(output.length)
    let square = 0
    for (const v of output) square += v * v
    const scale = how.noise * Math.sqrt(square / output.length) * Math.sqrt(3) // uniform on [-1, 1] has RMS 1/√3
    return output.map(v => v + scale * (2 * random() - 1))
  }
  wrapSteps(server, async (steps, run) => (await run()).map((out, i) => spoil(steps[i].session, steps[i].hidden, out)))
  return counts
}

/**
 * Puts `around` around every step of `server`'s span, single (forward) or batched (forwardBatch):
 * it gets the steps and a function that computes them, and returns the outputs.
 */
function wrapSteps (server: BlockServer, around: (steps: SpanStep[], run: () => Promise<Float32Array[]>) => Promise<Float32Array[]>): void {
  const span = server.span
  if (span === null) throw new Error('the server has no span loaded yet')
  const forward = span.forward.bind(span)
  const forwardBatch = span.forwardBatch.bind(span)
  span.forward = async (session, hidden, position) => (await around([{ session, hidden, position }], async () => [await forward(session, hidden, position)]))[0]
  span.forwardBatch = async steps => await around(steps, async () => await forwardBatch(steps))
}

/** Makes each step of `server`'s span take `ms` longer: a slow server (that may then claim to be fast). */
export function slowDown (server: BlockServer, ms: number): void {
  wrapSteps(server, async (_steps, run) => { await delay(ms); return await run() })
}

/**
 * Makes `server` sign its receipts with another key than its own (`forgeWith`, another node's), or,
 * with 'replay', send each step the receipt of its session's first step again: work that earns
 * nothing. Its outputs stay right.
 */
export function lieInReceipts (server: BlockServer, how: { forgeWith: BmrtNode } | 'replay'): void {
  const signer = server.signer
  const sign = signer.sign.bind(signer)
  if (how === 'replay') {
    const first = new Map<string, SignedReceipt>() // per session nonce
    signer.sign = receipt => {
      const key = Buffer.from(receipt.session).toString('hex')
      const signed = first.get(key) ?? sign(receipt)
      first.set(key, signed)
      return signed
    }
    return
  }
  const forger = new ReceiptSigner(privateKeyOf(how.forgeWith))
  signer.sign = receipt => forger.sign(receipt)
}

/**
 * Re-announces `server`'s record with a decode speed of `inferenceRps` tokens/s per block (default:
 * more than any honest server) and, if given, a `throughput`; the server's own refreshes announce
 * the same from then on (the harness sets the server's private announcement, as a modified build
 * would).
 */
export async function claimSpeed (server: BlockServer, model: string, inferenceRps = 1e6, throughput?: number): Promise<void> {
  await announceAs(server, model, { inferenceRps, ...(throughput !== undefined ? { throughput } : {}) })
}

/**
 * Puts `said` into `server`'s announcement (its private `info`, as a modified build would, so its
 * own refreshes say it too) and re-announces its record of `model` with it now.
 */
async function announceAs (server: BlockServer, model: string, said: ServerInfo): Promise<void> {
  const own = server as unknown as { info: ServerInfo }
  own.info = { ...own.info, ...said }
  const registry = new Registry(server.node)
  const record = await registry.lookup(model, server.node.peerId.toString())
  if (record === null) throw new Error('the server has no record to re-announce')
  await registry.announce(model, { start: record.start, end: record.end, state: record.state, info: { ...record.info, ...said } })
}

/**
 * Makes `server` name `accused` as disproven in its record and send `evidence` against it to whoever
 * asks, without having checked it: a server lying about another (or holding evidence that proves
 * nothing). Its real checks of evidence handed to it stop counting.
 */
export async function accuse (server: BlockServer, model: string, accused: string, evidence: Evidence): Promise<void> {
  Object.defineProperty(server.disputes, 'disproven', { get: () => [accused] })
  server.disputes.evidenceAgainst = peerId => peerId === accused ? evidence : undefined
  await announceAs(server, model, { disproven: [accused] })
}
