// Shared by the tests: where things are, scratch directories, and array comparison.

import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { loadAddon, nativeUnavailableReason } from '../src/inference/native-backend.js'

/**
 * Whether processes can be signalled POSIX-style. On Windows there is no SIGTERM, SIGINT or SIGSTOP
 * between processes: child.kill() terminates at once, so tests of graceful signals skip there.
 */
export const POSIX_SIGNALS = process.platform !== 'win32'

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

/**
 * Starts bmrt-node and resolves with the process once it prints its "online" line. `command` is
 * what runs the script (default: this process's Node.js; the Windows tests pass Wine's node.exe
 * wrapper, the NAT test `ip netns exec NS node`); `onSpawn` gets the process at once (to kill it
 * even while it starts), `onLine` every line it prints to stdout, before and after it is online.
 */
export async function startNode (args: string[], options: { command?: string[], env?: NodeJS.ProcessEnv, onLine?: (line: string) => void, onSpawn?: (child: ChildProcess) => void } = {}): Promise<{ process: ChildProcess, output: string[], peerId: string }> {
  const [program, ...leading] = options.command ?? [process.execPath]
  const child = spawn(program, [...leading, join(ROOT, 'bin', 'bmrt-node.js'), ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env })
  options.onSpawn?.(child)
  const output: string[] = []
  child.stderr!.on('data', (chunk: Buffer) => output.push(chunk.toString()))
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', line => {
      output.push(line)
      options.onLine?.(line)
      if (line.startsWith('online:')) resolve()
    })
    child.once('exit', code => reject(new Error(`bmrt-node exited with ${code} before going online:\n${output.join('\n')}`)))
  })
  const peerId = output.find(l => l.startsWith('peer id '))!.slice('peer id '.length)
  return { process: child, output, peerId }
}

/** Runs bin/bmrt.js or bin/bmrt-node.js to its end, from the repository root; resolves with its exit code and output. */
export async function runCommand (command: 'bmrt' | 'bmrt-node', args: string[], env: Record<string, string> = {}): Promise<{ code: number, stdout: string, stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [join(ROOT, 'bin', `${command}.js`), ...args], { cwd: ROOT, env: { ...process.env, ...env } })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code: number, stdout: string, stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

/** Polls `condition` until it holds; fails naming `what` if it has not within `timeoutMs`. */
export async function waitFor (what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
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
