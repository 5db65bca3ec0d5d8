// Petals' block selection: where a new server goes, and when a running one should move.

import assert from 'node:assert/strict'
import { chooseBestBlocks, chooseBestStart, ServerState, shouldChooseOtherBlocks, throughputProfile, type ServedSpan } from '../src/petals/server/block-selection.js'
import { seededRandom } from '../src/inference/sampling.js'

const span = (peerId: string, start: number, end: number, throughput = 1, state = ServerState.ONLINE): ServedSpan =>
  ({ peerId, start, end, throughput, state })

describe('block selection', () => {
  it('sums the throughput of online and joining servers per block, ignoring offline ones', () => {
    const profile = throughputProfile([span('a', 0, 3, 2), span('b', 2, 5, 1, ServerState.JOINING), span('c', 0, 5, 9, ServerState.OFFLINE)], 6)
    assert.deepEqual([...profile], [2, 2, 3, 1, 1, 0])
  })

  it('a new server takes the weakest window, ties going to the first', () => {
    assert.deepEqual(chooseBestBlocks(4, [], 10), { start: 0, end: 4 })
    assert.deepEqual(chooseBestBlocks(4, [span('a', 0, 5)], 10), { start: 5, end: 9 })
    // The window holding the single weakest block wins over windows of uniformly low ones.
    assert.equal(chooseBestStart([3, 3, 1, 3, 0.5, 2, 2, 2], 3), 2) // [0.5,1,3] at 2 beats [2,2,2] at 5
    assert.equal(chooseBestStart([1, 1, 1, 1], 4), 0)
    assert.throws(() => chooseBestStart([1, 1], 3), /cannot place 3 blocks in a model of 2/)
  })

  it('a server duplicating another moves where the swarm is weak or broken', () => {
    // Block 6 has no server: b leaving its duplicate span for 3..6 closes the gap.
    assert.equal(shouldChooseOtherBlocks('b', [span('a', 0, 4), span('b', 0, 4), span('c', 4, 6), span('d', 7, 8)], 8, { random: seededRandom(1) }), true)
    // Blocks 4..7 are served ten times more weakly than 0..3, which a and b both hold.
    assert.equal(shouldChooseOtherBlocks('b', [span('a', 0, 4), span('b', 0, 4), span('c', 4, 8, 0.1)], 8, { random: seededRandom(1) }), true)
  })

  it('a server stays when the swarm is balanced, or when leaving would uncover a block', () => {
    const balanced = [span('a', 0, 4), span('b', 4, 8), span('c', 0, 4), span('d', 4, 8)]
    assert.equal(shouldChooseOtherBlocks('a', balanced, 8, { random: seededRandom(2) }), false)
    const chain = [span('a', 0, 4), span('b', 4, 8, 5), span('c', 4, 8, 5)]
    assert.equal(shouldChooseOtherBlocks('a', chain, 8, { random: seededRandom(3) }), false) // a alone holds 0..3
  })

  it('balance quality 0 never moves, above 1 always moves', () => {
    const spans = [span('a', 0, 4), span('b', 0, 4), span('c', 4, 8, 0.1)]
    assert.equal(shouldChooseOtherBlocks('b', spans, 8, { balanceQuality: 0 }), false)
    assert.equal(shouldChooseOtherBlocks('a', [span('a', 0, 4), span('b', 4, 8)], 8, { balanceQuality: 1.5 }), true)
  })

  it('refuses to judge a server whose span is not announced', () => {
    assert.throws(() => shouldChooseOtherBlocks('zz', [span('a', 0, 4)], 4), /this server's own span \(zz\) is not among the announced ones/)
  })
})
