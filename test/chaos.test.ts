// The test-sized chaos run (src/testing/chaos/run.ts, which npm run bench:chaos runs at full size):
// 5 bmrt-node processes serve a 16-block model of Llama-2-70B's layout with --num-blocks spans, 2
// clients generate all along, and a seeded schedule takes 8 actions (SIGKILL, SIGSTOP then SIGCONT,
// restart) that never take the last server of a block. Then every server is resumed or restarted
// and the swarm must settle.

import assert from 'node:assert/strict'
import { runChaos } from '../src/testing/chaos/run.js'

/** Growth of a long-lived process's resident memory over the run that counts as a leak. */
const RSS_GROWTH_LIMIT_MIB = 200

describe('chaos on a loopback swarm', function () {
  it('5 servers, 2 clients, 8 kills, hangs and restarts: no generation lost or wrong, no session or memory leaked, every block covered after', async function () {
    if (process.platform !== 'linux') this.skip() // SIGSTOP and /proc
    this.timeout(170_000)
    const report = await runChaos({
      nodes: 5, clients: 2, seed: 7, actions: 8, intervalMs: 2000, layers: 16, updatePeriodS: 5, bucketMs: 5000, sampleMs: 10_000
    })

    assert.ok(report.actions.kill + report.actions.stop > 0, 'the schedule took servers away')
    assert.ok(report.failovers > 0, 'the chaos hit generations under way')
    assert.deepEqual(report.generations.notEqual, [], 'every generation completed with the reference\'s tokens')
    assert.ok(report.generations.equal >= 2, `${report.generations.equal} generations`)

    assert.deepEqual(report.settled.problems, [], 'after the chaos: every server online with its record, every block covered, no session open')
    for (const node of report.nodes.slice(1)) assert.equal(node.sessionsAtEnd, 0, `${node.name}'s sessions`)
    assert.deepEqual(report.nodes.flatMap(n => n.crashes), [], 'no server exited by itself')

    const longLived = report.nodes.filter(n => n.starts === 1)
    assert.ok(longLived.length > 0, 'some process lived through the whole run')
    for (const node of longLived) {
      assert.ok(node.rssEndMiB! - node.rssStartMiB! < RSS_GROWTH_LIMIT_MIB, `${node.name}: ${node.rssStartMiB} -> ${node.rssEndMiB} MiB`)
    }
  })
})
