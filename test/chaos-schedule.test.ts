// The chaos schedule's choices (src/testing/chaos/schedule.ts), as pure logic: it never takes the
// last honest server of a block, never touches a hostile server, and where a hostile server serves
// a block (or clients check every step) it leaves two honest ones, so a spot check can always find
// a second and third opinion.

import assert from 'node:assert/strict'
import { coverage, nextAction, type NodeView } from '../src/testing/chaos/schedule.js'

const online = (start: number, end: number, more: Partial<NodeView> = {}): NodeView => ({ state: 'online', span: { start, end }, busy: false, ...more })
/** Every node the schedule would kill or hang, over many draws (leaving `minServers` as nextAction takes it). */
function victims (nodes: NodeView[], blocks: number, minServers = 1): Set<number> {
  const seen = new Set<number>()
  for (let i = 0; i < 200; i++) {
    const draw = (i + 0.5) / 200
    const action = nextAction(nodes, blocks, () => draw, 1000, minServers)
    if (action !== null && action.kind !== 'restart') seen.add(action.node)
  }
  return seen
}

describe('the chaos schedule', () => {
  it('counts only honest servers, never touches a hostile one, and keeps two honest servers where a hostile one serves', () => {
    // Blocks 0:4 on two honest servers and a hostile one; 4:8 on two honest ones.
    const nodes = [online(0, 4), online(0, 4), online(0, 4, { hostile: true }), online(4, 8), online(4, 8)]
    assert.deepEqual(coverage(nodes, 8), [2, 2, 2, 2, 2, 2, 2, 2], 'the hostile server covers nothing')
    // 0:4 has a hostile server: neither honest one there may go; on 4:8, either may.
    assert.deepEqual([...victims(nodes, 8)].sort(), [3, 4])
    // Were it honest, any of the five could go.
    assert.deepEqual([...victims(nodes.map(n => ({ ...n, hostile: false })), 8)].sort(), [0, 1, 2, 3, 4])
    // A block whose only honest server is the last: it stays, whoever else serves the block.
    assert.deepEqual([...victims([online(0, 8), online(0, 8, { hostile: true })], 8)], [])
    // For clients that check every step (minServers 2), two honest servers stay on every block.
    const three = [online(0, 4), online(0, 4), online(0, 4), online(4, 8), online(4, 8)]
    assert.deepEqual([...victims(three, 8)].sort(), [0, 1, 2, 3, 4])
    assert.deepEqual([...victims(three, 8, 2)].sort(), [0, 1, 2])
  })
})
