// What the chaos does next: a seeded choice among killing a server (SIGKILL), hanging one (SIGSTOP,
// resumed later) and starting a killed one again. It never takes away the last live server of a
// block, so that the swarm always has the capacity to finish every generation ("when capacity
// allows"); a block can still lose its servers for a moment when one moves by rebalancing, and
// clients then wait and retry as they would on any swarm. Pure logic: no processes, no clock.

import type { NodeState } from './fleet.js'

/** What the schedule needs to know about one server. */
export interface NodeView {
  state: NodeState
  /** blocks [start, end) it serves while online */
  span: { start: number, end: number } | null
  /** on the route of a generation running now */
  busy: boolean
}

export type Action =
  | { kind: 'kill', node: number }
  | { kind: 'stop', node: number, forMs: number }
  | { kind: 'restart', node: number }

/** Online servers per block, leaving out server `except`. */
export function coverage (nodes: ReadonlyArray<Pick<NodeView, 'state' | 'span'>>, blocks: number, except = -1): number[] {
  const counts = new Array<number>(blocks).fill(0)
  nodes.forEach((n, i) => {
    if (i === except || n.state !== 'online' || n.span === null) return
    for (let b = n.span.start; b < Math.min(n.span.end, blocks); b++) counts[b]++
  })
  return counts
}

/**
 * The next action, or null when none is possible (every online server is the last of some block,
 * and none is dead, or one is starting). Each possible kind is equally likely; a kill or hang
 * takes a server on some generation's route when one can go, so that every such action hits live
 * traffic. A hang lasts one to three intervals.
 */
export function nextAction (nodes: readonly NodeView[], blocks: number, random: () => number, intervalMs: number): Action | null {
  const removable = nodes.flatMap((n, i) => (n.state === 'online' && coverage(nodes, blocks, i).every(c => c > 0) ? [i] : []))
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
