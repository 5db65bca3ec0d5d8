// One compute task at a time, inference before forward work (Petals runs inference at priority 1
// and forward/backward at 2 in one runtime). Forward requests arrive as bounded chunks, so a long
// batch job never holds an interactive session back for more than one chunk.
//
// Within a priority, compute is shared fairly (a FairQueue): between IP subnet groups (IPv4 /24,
// IPv6 /48), then between the peers of a group, then first come, first served within a peer, each
// level a round robin weighted by the work of each turn (start-time fair queueing). Petals'
// runtime is first come, first served: there, a peer that keeps many sessions busy with long
// prefills makes every other client wait behind all of its work. Here a client waits at most about
// one turn per other active group (or peer of its group), and one that asks for little goes ahead
// of those that ask for much, however many sessions or identities they run (BitTorrent's choking
// and Ethereum's per-subnet limits in the same spirit; PATCHES.md, "Compute is shared fairly").

import { parseIPv4, parseIPv6 } from '@chainsafe/is-ip/parse'
import { iPv4FromIPv6, isIPv4mappedIPv6 } from '@chainsafe/netmask'
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
  /**
   * the work the task will take, in any unit the caller uses for all its tasks (the handler: tokens ×
   * sequences × blocks): turns are shared by it
   * @default 1
   */
  cost?: number
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
 * One level of start-time fair queueing (Goyal, Vin and Cheng, SIGCOMM 1996): each key with work
 * queued has the virtual time its next turn starts; the earliest goes next (the first queued among
 * equals), and its next turn starts when this one ends, `cost` later. A key that arrives starts at
 * the virtual time of the turn taken last, or where its own last turn ended if that is later: it
 * saves no credit while it has nothing queued. With equal costs this is plain round robin.
 */
class FairLevel<C> {
  private readonly queued = new Map<string, { start: number, child: C }>()
  /** where the last turn of keys with nothing queued now ended, while that is ahead of `virtual` */
  private readonly ended = new Map<string, number>()
  /** the start of the turn taken last */
  private virtual = 0

  get size (): number { return this.queued.size }

  /** The child of `key`, made by `make` if the key has nothing queued. */
  enter (key: string, make: () => C): C {
    let entry = this.queued.get(key)
    if (entry === undefined) {
      entry = { start: Math.max(this.virtual, this.ended.get(key) ?? 0), child: make() }
      this.ended.delete(key)
      this.queued.set(key, entry)
    }
    return entry.child
  }

  /** The key whose turn starts first, and its child. */
  next (): [string, C] | undefined {
    let best: [string, { start: number, child: C }] | undefined
    for (const entry of this.queued) if (best === undefined || entry[1].start < best[1].start) best = entry
    return best === undefined ? undefined : [best[0], best[1].child]
  }

  /** `key` (from next()) took a turn of `cost`; `more`: it still has work queued. */
  served (key: string, cost: number, more: boolean): void {
    const entry = this.queued.get(key)!
    this.virtual = entry.start
    const end = entry.start + cost
    if (more) {
      entry.start = end
      return
    }
    this.queued.delete(key)
    this.ended.set(key, end)
    if (this.ended.size > 1024) { // forget keys whose credit has run out: they would start at `virtual` anyway
      for (const [k, t] of this.ended) if (t <= this.virtual) this.ended.delete(k)
    }
  }
}

/**
 * Fair turns between groups, then between the peers of a group (FairLevel: round robin weighted by
 * each turn's cost), then first in, first out per peer.
 */
export class FairQueue<T> {
  private readonly groups = new FairLevel<FairLevel<Array<{ item: T, cost: number }>>>()
  /** each group's peer level, kept while the group has nothing queued, so that its peers keep their places */
  private readonly peerLevels = new Map<string, FairLevel<Array<{ item: T, cost: number }>>>()
  private count = 0

  get length (): number { return this.count }

  /** Queues `item` for `owner`; `cost` is the work it will take (tokens × blocks), at least 1. */
  push (owner: TaskOwner, item: T, cost = 1): void {
    const peers = this.groups.enter(owner.group, () => {
      let level = this.peerLevels.get(owner.group)
      if (level === undefined) this.peerLevels.set(owner.group, level = new FairLevel())
      return level
    })
    peers.enter(owner.peer, () => []).push({ item, cost: Math.max(1, cost) })
    this.count++
  }

  shift (): T | undefined {
    const group = this.groups.next()
    if (group === undefined) return undefined
    const [groupKey, peers] = group
    const [peerKey, items] = peers.next()!
    const { item, cost } = items.shift()!
    this.count--
    peers.served(peerKey, cost, items.length > 0)
    this.groups.served(groupKey, cost, peers.size > 0)
    if (this.peerLevels.size > 1024) { // forget idle groups' peer levels, a thousand at a time
      for (const [key, level] of this.peerLevels) if (level.size === 0) this.peerLevels.delete(key)
    }
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
      this.queues[priority].push(owner, { run: work, resolve: resolve as (value: unknown) => void, reject, signal: options.signal, owner, arrived: this.started }, options.cost)
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
 * remote address (an IPv4-mapped IPv6 address counts as its IPv4 address); the peer alone when the
 * address names no IP (a relayed circuit, where the IP is the relay's) or one that does not parse.
 */
export function peerGroup (remoteAddr: Multiaddr, peer: string): string {
  const components = remoteAddr.getComponents()
  const [first] = components
  if (components.some(c => c.name === 'p2p-circuit') || (first?.name !== 'ip4' && first?.name !== 'ip6')) return `peer ${peer}`
  const ip = first.name === 'ip4' ? parseIPv4(first.value ?? '') : parseIPv6(first.value ?? '')
  if (ip === undefined) return `peer ${peer}`
  const ip4 = ip.length === 4 ? ip : isIPv4mappedIPv6(ip) ? iPv4FromIPv6(ip) : undefined
  if (ip4 !== undefined) return `${ip4[0]}.${ip4[1]}.${ip4[2]}.0/24`
  const view = new DataView(ip.buffer, ip.byteOffset, ip.byteLength)
  return `${[0, 2, 4].map(at => view.getUint16(at).toString(16)).join(':')}::/48`
}
