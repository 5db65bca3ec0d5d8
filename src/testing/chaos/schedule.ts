// What the chaos does next: a seeded choice among killing a server (SIGKILL), hanging one (SIGSTOP,
// resumed later) and starting a killed one again. It never takes away the last live server of a
// block, so that the swarm always has the capacity to finish every generation ("when capacity
// allows"); a block can still lose its servers for a moment when one moves by rebalancing, and
// clients then wait and retry as they would on any swarm. Hostile servers (which compute wrong)
// are never touched and count for no block; where one serves a block, the schedule leaves two
// honest servers of it when it can, so that a spot check can always find a third opinion, and
// with `minServers` 2 (clients that check every step need a second server) it leaves two on every
// block that has them.
// Pure logic: no processes, no clock.

import type { NodeState } from './fleet.js'

/** What the schedule needs to know about one server. */
export interface NodeView {
  state: NodeState
  /** blocks [start, end) it serves while online */
  span: { start: number, end: number } | null
  /** on the route of a generation running now */
  busy: boolean
  /**
   * computes wrong on purpose (a chaos run's attacker)
   * @default false
   */
  hostile?: boolean
}

export type Action =
  | { kind: 'kill', node: number }
  | { kind: 'stop', node: number, forMs: number }
  | { kind: 'restart', node: number }

/** Online honest servers per block, leaving out server `except`. */
export function coverage (nodes: ReadonlyArray<Pick<NodeView, 'state' | 'span' | 'hostile'>>, blocks: number, except = -1): number[] {
  const counts = new Array<number>(blocks).fill(0)
  nodes.forEach((n, i) => {
    if (i === except || n.state !== 'online' || n.span === null || n.hostile === true) return
    for (let b = n.span.start; b < Math.min(n.span.end, blocks); b++) counts[b]++
  })
  return counts
}

/**
 * The next action, or null when none is possible (every online server is the last of some block,
 * and none is dead, or one is starting). Each possible kind is equally likely; a kill or hang
 * takes a server on some generation's route when one can go, so that every such action hits live
 * traffic. A hang lasts one to three intervals. `minServers`: the fewest honest servers the action
 * leaves on a block of its victim's (1, or 2 for clients that check every step).
 */
export function nextAction (nodes: readonly NodeView[], blocks: number, random: () => number, intervalMs: number, minServers = 1): Action | null {
  const attacked = new Array<boolean>(blocks).fill(false) // blocks a hostile server serves
  for (const n of nodes) if (n.hostile === true && n.state === 'online' && n.span !== null) for (let b = n.span.start; b < Math.min(n.span.end, blocks); b++) attacked[b] = true
  const inSpan = (i: number, b: number): boolean => nodes[i].span!.start <= b && b < nodes[i].span!.end
  const leaves = (i: number): boolean => coverage(nodes, blocks, i).every((c, b) => c >= (inSpan(i, b) ? Math.max(minServers, attacked[b] ? 2 : 1) : 1))
  const removable = nodes.flatMap((n, i) => (n.state === 'online' && n.hostile !== true && leaves(i) ? [i] : []))
  const busy = removable.filter(i => nodes[i].busy)
  const victims = busy.length > 0 ? busy : removable
  // One start at a time: servers that start together choose their spans without seeing each
  // other's, and all take the same weakest window.
  const starting = nodes.some(n => n.state === 'starting')
  const dead = starting ? [] : nodes.flatMap((n, i) => (n.state === 'dead' ? [i] : []))
  const kinds = [...(victims.length > 0 ? ['kill', 'stop'] as const : []), ...(dead.length > 0 ? ['restart'] as const : [])]
  if (kinds.length === 0) return null
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]
  const kind = pick(kinds)
  if (kind === 'restart') return { kind, node: pick(dead) }
  const node = pick(victims)
  return kind === 'kill' ? { kind, node } : { kind, node, forMs: Math.round(intervalMs * (1 + 2 * random())) }
}
