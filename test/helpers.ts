// Shared by the tests: where things are, scratch directories, and array comparison.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root (tests run from dist/test/). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
export const BUNDLED_MODEL = join(ROOT, 'models', 'stories260K')

/** A fresh scratch directory, removed by the returned cleanup. */
export async function scratchDir (): Promise<{ dir: string, cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'bmrt-test-'))
  return { dir, cleanup: async () => await rm(dir, { recursive: true, force: true }) }
}

export function maxAbsDiff (a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`)
  let max = 0
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]))
  return max
}

/** Deterministic pseudo-random hidden states of [n, width]. */
export function randomHidden (n: number, width: number, seed = 7): Float32Array {
  const out = new Float32Array(n * width)
  let state = seed
  for (let i = 0; i < out.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0
    out[i] = (state / 2 ** 32) * 2 - 1
  }
  return out
}
