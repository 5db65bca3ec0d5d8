// One compute task at a time, inference before forward work (Petals runs inference at priority 1
// and forward/backward at 2 in one runtime). Forward requests arrive as bounded chunks, so a long
// batch job never holds an interactive session back for more than one chunk.
//
// Within a priority, turns are shared fairly (a FairQueue): round robin between IP subnet groups
// (IPv4 /24, IPv6 /48), then between the peers of a group, then first come, first served within a
// peer. Petals' runtime is first come, first served: there, a peer that keeps many sessions busy
// with long prefills makes every other client wait behind all of its work. Here a client waits at
// most one turn per other active group (or peer of its group), however many sessions or
// identities the others run (BitTorrent's choking and Ethereum's per-subnet limits in the same
// spirit; PATCHES.md, "Fair compute turns").

import type { Multiaddr } from '@multiformats/multiaddr'

export type Priority = 'inference' | 'forward'

/** Who a task is for: its peer, and the group of peers it shares turns with (peerGroup). */
export interface TaskOwner {
  peer: string
  group: string
}

/** What TaskQueue.onStart hears as each task starts. */
export interface TaskTurn extends TaskOwner {
  priority: Priority
  /** tasks that started between this one's arrival and its start: the turns it waited */
  waited: number
}

export interface RunOptions {
  /** aborted: the task is dropped if it has not started (its client went away) */
  signal?: AbortSignal
  /**
   * whom the task is for
   * @default ANONYMOUS (every unnamed task shares one peer's turns)
   */
  owner?: TaskOwner
}

/** The owner of tasks that name none: they share one turn among themselves. */
export const ANONYMOUS: TaskOwner = { peer: '', group: '' }

interface Task {
  run: () => Promise<unknown>
  resolve: (value: unknown) => void
  reject: (err: unknown) => void
  signal?: AbortSignal
  owner: TaskOwner
  /** TaskQueue.started when it arrived */
  arrived: number
}

/**
 * Round robin over groups, then over the peers of a group, then first in, first out per peer.
 * A group or peer that comes back after its queue ran empty goes to the back of the line.
 */
export class FairQueue<T> {
  // Map keeps insertion order: the first entry is next, and a served one is moved to the back.
  private readonly groups = new Map<string, Map<string, T[]>>()
  private count = 0

  get length (): number { return this.count }

  push (owner: TaskOwner, item: T): void {
    let peers = this.groups.get(owner.group)
    if (peers === undefined) this.groups.set(owner.group, peers = new Map())
    let items = peers.get(owner.peer)
    if (items === undefined) peers.set(owner.peer, items = [])
    items.push(item)
    this.count++
  }

  shift (): T | undefined {
    const first = this.groups.entries().next()
    if (first.done === true) return undefined
    const [group, peers] = first.value
    const [peer, items] = peers.entries().next().value as [string, T[]]
    const item = items.shift() as T
    this.count--
    peers.delete(peer)
    if (items.length > 0) peers.set(peer, items)
    this.groups.delete(group)
    if (peers.size > 0) this.groups.set(group, peers)
    return item
  }
}

export class TaskQueue {
  private readonly queues: Record<Priority, FairQueue<Task>> = { inference: new FairQueue(), forward: new FairQueue() }
  private busy = false
  /** tasks started so far */
  private started = 0
  /** hears of every task as it starts, with the turns it waited (for status lines and tests) */
  onStart?: (turn: TaskTurn) => void

  /**
   * Runs `work` when every inference task and every earlier task of its priority whose turn comes
   * first (see FairQueue) are done.
   */
  async run<T> (priority: Priority, work: () => Promise<T>, options: RunOptions = {}): Promise<T> {
    options.signal?.throwIfAborted()
    return await new Promise<T>((resolve, reject) => {
      const owner = options.owner ?? ANONYMOUS
      this.queues[priority].push(owner, { run: work, resolve: resolve as (value: unknown) => void, reject, signal: options.signal, owner, arrived: this.started })
      this.next()
    })
  }

  /** Tasks waiting (not counting the one running). */
  get pending (): number {
    return this.queues.inference.length + this.queues.forward.length
  }

  private next (): void {
    if (this.busy) return
    const priority: Priority = this.queues.inference.length > 0 ? 'inference' : 'forward'
    const task = this.queues[priority].shift()
    if (task === undefined) return
    if (task.signal?.aborted === true) { // its client went away while it waited
      task.reject(task.signal.reason)
      this.next()
      return
    }
    this.busy = true
    this.onStart?.({ ...task.owner, priority, waited: this.started - task.arrived })
    this.started++
    task.run().then(task.resolve, task.reject).finally(() => {
      this.busy = false
      this.next()
    })
  }
}

/**
 * The group a peer shares compute turns with: its IPv4 /24 or IPv6 /48, read from the connection's
 * remote address; the peer alone when the address names no IP (a relayed circuit, where the IP is
 * the relay's).
 */
export function peerGroup (remoteAddr: Multiaddr, peer: string): string {
  const text = remoteAddr.toString()
  if (text.includes('/p2p-circuit')) return `peer ${peer}`
  const ip4 = /^\/ip4\/(\d+)\.(\d+)\.(\d+)\.\d+/.exec(text)
  if (ip4 !== null) return `${ip4[1]}.${ip4[2]}.${ip4[3]}.0/24`
  const ip6 = /^\/ip6\/([0-9a-fA-F:.]+)/.exec(text)
  if (ip6 !== null) {
    const parts = ipv6Groups(ip6[1])
    if (parts.slice(0, 5).every(p => p === 0) && parts[5] === 0xffff) { // an IPv4-mapped address
      return `${parts[6] >> 8}.${parts[6] & 0xff}.${parts[7] >> 8}.0/24`
    }
    return `${parts.slice(0, 3).map(p => p.toString(16)).join(':')}::/48`
  }
  return `peer ${peer}`
}

/** The eight 16-bit groups of an IPv6 address ('::' expanded, a dotted IPv4 tail read as two groups). */
function ipv6Groups (address: string): number[] {
  const words = (part: string): number[] => part === ''
    ? []
    : part.split(':').flatMap(w => w.includes('.') ? dottedWords(w) : [Number.parseInt(w, 16) || 0])
  const [head, tail] = address.split('::')
  const left = words(head)
  if (tail === undefined) return left
  const right = words(tail)
  return [...left, ...new Array<number>(Math.max(0, 8 - left.length - right.length)).fill(0), ...right]
}

function dottedWords (ip4: string): number[] {
  const [a, b, c, d] = ip4.split('.').map(Number)
  return [(a << 8) | b, (c << 8) | d]
}
