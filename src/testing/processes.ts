// Child processes for the tests and the benches: where the repository and its bundled model are,
// bmrt-node started until it is online, a command run to its end, and a condition polled until it
// holds. Here, not under test/, so that bench/ need not import test/.

import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

/** The repository root (this module runs from dist/src/testing/). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const BUNDLED_MODEL = join(ROOT, 'models', 'stories260K')

/**
 * Starts bmrt-node and resolves with the process once it prints its "online" line. `command` is
 * what runs the script (default: this process's Node.js; the Windows tests pass Wine's node.exe
 * wrapper, the NAT test `ip netns exec NS node`), `script` what it runs with its own leading
 * arguments (default: bin/bmrt-node.js; the chaos run's hostile servers: hostile-node.js); `onSpawn` gets the process at once (to kill it
 * even while it starts), `onLine` every line it prints to stdout, before and after it is online.
 */
export async function startNode (args: string[], options: { command?: string[], script?: string[], env?: NodeJS.ProcessEnv, onLine?: (line: string) => void, onSpawn?: (child: ChildProcess) => void } = {}): Promise<{ process: ChildProcess, output: string[], peerId: string }> {
  const [program, ...leading] = options.command ?? [process.execPath]
  const script = options.script ?? [join(ROOT, 'bin', 'bmrt-node.js')]
  const child = spawn(program, [...leading, ...script, ...args],
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
