// Servers that compute wrong (issue 21), for the spot-check tests: a real BlockServer whose span's
// outputs are corrupted after it computed them, and whose record then claims a decode speed it does
// not have, so that routing chooses it over every honest server (as in the attack run, where a noisy
// server was chosen on 10 of 10 routes).

import { Registry } from '../p2p/registry.js'
import { seededRandom } from '../inference/sampling.js'
import type { BlockServer } from '../petals/server/server.js'

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
}

/** Corrupts the outputs of `server`'s span from now on, after the first `rightSteps` (default 0). */
export function corrupt (server: BlockServer, how: Corruption, rightSteps = 0): CorruptionCounts {
  const span = server.span
  if (span === null) throw new Error('the server has no span loaded yet')
  const random = seededRandom(21)
  const counts: CorruptionCounts = { outputs: 0, wrong: 0 }
  const spoil = (input: Float32Array, output: Float32Array): Float32Array => {
    if (++counts.outputs <= rightSteps) return output
    counts.wrong++
    if (how === 'skip layers') return input.slice()
    if (how === 'zeros') return new Float32Array(output.length)
    let square = 0
    for (const v of output) square += v * v
    const scale = how.noise * Math.sqrt(square / output.length) * Math.sqrt(3) // uniform on [-1, 1] has RMS 1/√3
    return output.map(v => v + scale * (2 * random() - 1))
  }
  const forward = span.forward.bind(span)
  const forwardBatch = span.forwardBatch.bind(span)
  span.forward = async (session, hidden, position) => spoil(hidden, await forward(session, hidden, position))
  span.forwardBatch = async steps => (await forwardBatch(steps)).map((out, i) => spoil(steps[i].hidden, out))
  return counts
}

/** Re-announces `server`'s record with a decode speed of `inferenceRps` tokens/s per block (default: more than any honest server). */
export async function claimSpeed (server: BlockServer, model: string, inferenceRps = 1e6): Promise<void> {
  const registry = new Registry(server.node)
  const record = await registry.lookup(model, server.node.peerId.toString())
  if (record === null) throw new Error('the server has no record to re-announce')
  await registry.announce(model, { start: record.start, end: record.end, state: record.state, info: { ...record.info, inferenceRps } })
}
