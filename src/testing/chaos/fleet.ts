// The bmrt-node processes of a chaos run. Each slot (n0, n1, ...) keeps one identity file, so a
// server started again after a kill comes back under the same peer id, as a rebooted machine
// would. What a server serves is read from its own output ("online: serving blocks a:b",
// "moving: ..."), so the run knows the swarm's true coverage without asking the DHT.

import type { ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startNode } from '../processes.js'

/**
 * starting: launched, not yet online; online: serving its span; moving: rebalancing to another
 * span; stopped: hung by SIGSTOP; dead: killed by the run, or exited by itself (a crash).
 */
export type NodeState = 'starting' | 'online' | 'moving' | 'stopped' | 'dead'

/** Every process started here and still running, so that an exit handler can kill them all. */
const running = new Set<ChildProcess>()
/** Processes the run killed on purpose (their exits are not crashes). */
const killed = new WeakSet<ChildProcess>()

/** SIGKILLs every process started here that is still running (synchronous: fit for an exit handler). */
export function killEveryNode (): void {
  for (const child of running) child.kill('SIGKILL')
}

export class FleetNode {
  state: NodeState = 'dead'
  span: { start: number, end: number } | null = null
  /** the process running now (from its spawn) */
  process: ChildProcess | null = null
  peerId = ''
  /** what the running process printed (stdout lines and stderr chunks), once it was online */
  output: string[] = []
  /** times started (the first start included) */
  starts = 0
  /** times it moved to other blocks (rebalancing) */
  moves = 0
  /** exits the run did not cause, with the end of the output that came before */
  crashes: string[] = []
  /** VmRSS in bytes when it last came online, and at the end of the run */
  rssAtStart: number | null = null
  rssAtEnd: number | null = null
  /** client sessions open on it when the run last asked (/bmrt/info); null: it did not answer */
  sessionsAtEnd: number | null = null

  /**
   * @param args bmrt-node's arguments
   * @param onChange hears of every change of state or span; `event` tells of those the run did
   *   not cause itself (coming online, moving, exiting by itself)
   */
  /**
   * @param attack how the server computes wrong (hostile-node.js's flags), or null for an honest one
   */
  constructor (readonly name: string, readonly args: string[], private readonly onChange: (node: FleetNode, event?: string) => void = () => {},
    readonly attack: string[] | null = null) {}

  /** Starts the process and resolves once it is online (at once if the run kills it meanwhile). */
  async start (): Promise<void> {
    this.state = 'starting'
    this.span = null
    this.starts++
    this.onChange(this)
    let child: ChildProcess | null = null
    try {
      const started = await startNode(this.args, {
        script: this.attack !== null ? [HOSTILE_NODE, ...this.attack, '--'] : undefined,
        onSpawn: spawned => {
          child = spawned
          this.process = spawned
          running.add(spawned)
          spawned.once('exit', (code, signal) => this.exited(spawned, signal ?? `code ${code ?? '?'}`))
        },
        onLine: line => { if (this.process === child) this.hear(line) } // not a killed predecessor's last words
      })
      this.output = started.output
      this.peerId = started.peerId
    } catch (err) {
      if (child !== null && killed.has(child)) return
      this.crashes.push(`could not start: ${(err as Error).message}`)
      this.onChange(this, `CRASHED: ${this.crashes.at(-1)!}`)
      throw err
    }
    this.rssAtStart = this.rss()
  }

  private exited (child: ChildProcess, how: string): void {
    running.delete(child)
    if (this.process !== child) return // killed by the run
    const wasStarting = this.state === 'starting'
    this.process = null
    this.state = 'dead'
    this.span = null
    if (wasStarting) return // start() reports it, with the output
    this.crashes.push(`exited by itself (${how}):\n${this.output.slice(-20).join('\n')}`)
    this.onChange(this, `CRASHED: ${this.crashes.at(-1)!}`)
  }

  private hear (line: string): void {
    if (line.startsWith('online:')) {
      const span = /^online: serving blocks (\d+):(\d+) /.exec(line) // a relay-only node serves none
      this.span = span === null ? null : { start: Number(span[1]), end: Number(span[2]) }
      if (this.state !== 'stopped') this.state = 'online'
    } else if (line.startsWith('moving:')) {
      this.state = 'moving'
      this.span = null
      this.moves++
    } else {
      return
    }
    this.onChange(this, this.span !== null ? `online: blocks ${this.span.start}:${this.span.end}` : line)
  }

  /** SIGKILL: dead from now on (it cannot survive it), though its exit is reported a little later. */
  kill (): void {
    const child = this.process
    if (child === null) return
    killed.add(child)
    this.process = null
    this.state = 'dead'
    this.span = null
    child.kill('SIGKILL')
    this.onChange(this)
  }

  stop (): void {
    if (this.state !== 'online' || this.process === null) return
    this.process.kill('SIGSTOP')
    this.state = 'stopped'
    this.onChange(this)
  }

  resume (): void {
    if (this.state !== 'stopped' || this.process === null) return
    this.process.kill('SIGCONT')
    this.state = this.span !== null ? 'online' : 'moving'
    this.onChange(this)
  }

  /** Resident memory in bytes (VmRSS from /proc; Linux), null when the process is gone. */
  rss (): number | null {
    if (this.process?.pid === undefined) return null
    try {
      const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${this.process.pid}/status`, 'utf8'))
      return match === null ? null : Number(match[1]) * 1024
    } catch {
      return null
    }
  }
}

export interface FleetOptions {
  modelDir: string
  modelName: string
  /** multiaddr of the swarm's bootstrap peer */
  bootstrap: string
  numBlocks: number
  /** where the identity files go */
  scratch: string
  backend: string
  /** bmrt-node --update-period and --expiration, seconds */
  updatePeriodS: number
  expirationS: number
  /** bmrt-node --mean-balance-check-period, seconds */
  balanceCheckPeriodS: number
  /**
   * how many of the servers (the last ones) are hostile, each as HOSTILE_KINDS says in turn
   * @default 0
   */
  hostile?: number
}

/** The hostile servers' ways, in turn: noise while claiming ten times its speed, then skipped layers, then zeros. */
export const HOSTILE_KINDS: ReadonlyArray<readonly string[]> = [['--corrupt', 'noise:0.1', '--claim-speed', '10'], ['--corrupt', 'skip'], ['--corrupt', 'zeros']]
/** The hostile bmrt-node (this module runs from dist/src/testing/chaos/). */
const HOSTILE_NODE = fileURLToPath(new URL('../hostile-node.js', import.meta.url))

/** `count` servers, each choosing `numBlocks` blocks where the swarm is weakest (--num-blocks). */
export function makeFleet (count: number, o: FleetOptions, onChange?: (node: FleetNode, event?: string) => void): FleetNode[] {
  const firstHostile = count - (o.hostile ?? 0)
  return Array.from({ length: count }, (_, i) => new FleetNode(`n${i}`, [
    '--model', o.modelDir, '--model-name', o.modelName, '--num-blocks', String(o.numBlocks),
    '--initial-peers', o.bootstrap, '--host-addrs', '/ip4/127.0.0.1/tcp/0', '--identity', join(o.scratch, `n${i}.key`),
    // Equal throughputs, so placement is about coverage alone; one kernel thread each, since
    // many servers share this machine's cores.
    '--throughput', '1', '--threads', '1', '--backend', o.backend,
    '--update-period', String(o.updatePeriodS), '--expiration', String(o.expirationS), '--mean-balance-check-period', String(o.balanceCheckPeriodS),
    // A hostile server stays where it is: a move would load fresh blocks, which compute right.
    ...(i >= firstHostile ? ['--balance-quality', '0'] : [])
  ], onChange, i >= firstHostile ? [...HOSTILE_KINDS[(i - firstHostile) % HOSTILE_KINDS.length]] : null))
}
