// Shared by the tests: where things are, child processes (src/testing/processes.ts, which the
// benches use too), scratch directories, array comparison, and skipping what this machine lacks.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadAddon, nativeUnavailableReason } from '../src/inference/native-backend.js'
import { runCommand } from '../src/testing/processes.js'

export { BUNDLED_MODEL, ROOT, runCommand, startNode, waitFor } from '../src/testing/processes.js'

/** A command line that must fail before it starts anything: its exit code and what stderr says. */
export interface FailingCommand { args: string[], code: number, stderr: RegExp }

/**
 * Runs each command line of `cases`, checking its exit code, its message and an empty stdout.
 * Under Windows only the first case of each exit code runs: there (Wine in CI) a bmrt process takes
 * about 7 s to start against 0.7 s on Linux, node.exe opening the CLI's 750 modules through Wine, and
 * tables like these cost 60-80 s a test. The messages come from the same JS, checked in full on
 * Linux; what is Windows' own, the exit code and stderr reaching the parent, one case each shows.
 */
export async function expectFailures (command: 'bmrt' | 'bmrt-node', cases: FailingCommand[]): Promise<void> {
  const codes = new Set<number>()
  for (const { args, code: expected, stderr: message } of cases) {
    if (process.platform === 'win32' && codes.has(expected)) continue
    codes.add(expected)
    const { code, stdout, stderr } = await runCommand(command, args)
    const line = `${command} ${args.join(' ')}`
    assert.equal(code, expected, `${line}: ${stderr}`)
    assert.equal(stdout, '', line)
    assert.match(stderr, message, line)
  }
}

/**
 * Whether processes can be signalled POSIX-style. On Windows there is no SIGTERM, SIGINT or SIGSTOP
 * between processes: child.kill() terminates at once, so tests of graceful signals skip there.
 */
export const POSIX_SIGNALS = process.platform !== 'win32'

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

/**
 * For a mocha `before` hook of tests that need the native addon: skips them (saying why) where it
 * did not build, unless BMRT_REQUIRE_NATIVE=1 (CI), which fails instead.
 */
export function skipWithoutAddon (context: Mocha.Context): void {
  if (loadAddon() !== null) return
  if (process.env.BMRT_REQUIRE_NATIVE === '1') throw new Error(`BMRT_REQUIRE_NATIVE=1 but the addon does not load: ${nativeUnavailableReason()}`)
  console.log(`    (skipped: the native addon is not available: ${nativeUnavailableReason()})`)
  context.skip()
}

/**
 * The Python interpreter with torch for the torch backend's tests: $BMRT_PYTHON, else python3.
 * Null (tests skip) when it cannot import torch, unless BMRT_REQUIRE_TORCH=1 (CI), which fails.
 */
export function torchPython (): string | null {
  if (cachedTorchPython !== undefined) return cachedTorchPython
  const python = process.env.BMRT_PYTHON ?? 'python3'
  const probe = spawnSync(python, ['-c', 'import torch'], { stdio: 'ignore' })
  if (probe.status === 0) return (cachedTorchPython = python)
  if (process.env.BMRT_REQUIRE_TORCH === '1') throw new Error(`BMRT_REQUIRE_TORCH=1 but ${python} cannot import torch`)
  console.log(`    (skipped: ${python} cannot import torch; set BMRT_PYTHON to a Python with torch and transformers)`)
  return (cachedTorchPython = null)
}
let cachedTorchPython: string | null | undefined
