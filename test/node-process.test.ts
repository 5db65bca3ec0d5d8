// bmrt-node as a user runs it: real processes joining a loopback swarm; a killed one disappears
// within its expiry, a stopped one (SIGTERM) at once.

import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { createNode, joinSwarm, type BmrtNode } from '../src/p2p/node.js'
import { Registry } from '../src/p2p/registry.js'
import { parseServerInfo } from '../src/petals/protocol/server-info.js'
import { BUNDLED_MODEL, POSIX_SIGNALS, startNode } from './helpers.js'

describe('bmrt-node processes', function () {
  let entry: BmrtNode
  let client: BmrtNode
  let args: string[]
  const children: ChildProcess[] = []

  before(async () => {
    entry = await createNode({ role: 'server' })
    client = await createNode({ role: 'client', bootstrap: entry.getMultiaddrs().map(String) })
    await joinSwarm(client)
    args = ['--model', BUNDLED_MODEL, '--initial-peers', entry.getMultiaddrs()[0].toString(), '--host-addrs', '/ip4/127.0.0.1/tcp/0',
      '--backend', 'js', '--throughput', '1', '--update-period', '1', '--expiration', '3']
  })
  after(async () => {
    children.forEach(c => c.kill('SIGKILL'))
    await client.stop()
    await entry.stop()
  })

  it('are found by block; a SIGKILLed node expires, a SIGTERMed one leaves at once', async () => {
    const first = await startNode([...args, '--blocks', '0:2'])
    const second = await startNode([...args, '--blocks', '2:5', '--public-name', 'second'])
    children.push(first.process, second.process)
    assert.match(first.output.join('\n'), /share as --initial-peers: \/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/12D3KooW/)
    const registry = new Registry(client)
    const names = async (block: number): Promise<unknown[]> => (await registry.findServers('stories260K', block)).map(r => parseServerInfo(r.info).publicName ?? null)
    assert.deepEqual(await names(1), [null])
    assert.deepEqual(await names(4), ['second'])

    // Refreshing every second, the first node measures its round trip to the next hop (block 2's server).
    const secondId = second.output.find(l => l.startsWith('peer id '))!.slice(8)
    const firstId = first.output.find(l => l.startsWith('peer id '))!.slice(8)
    for (;;) {
      const pings = (await registry.lookup('stories260K', firstId))?.info.nextPings as Record<string, number> | undefined
      if (pings?.[secondId] !== undefined) { assert.ok(pings[secondId] >= 0 && pings[secondId] < 5, 'RTT in seconds'); break }
      await new Promise(resolve => setTimeout(resolve, 250))
    }

    assert.match(first.output.join('\n'), /status: online, blocks 0:2, 0 sessions, 0\.0 tokens\/s, cache left 16384 tokens, records refused 0, requests over per-peer limits 0 \(sessions 0, bytes 0\)/)

    first.process.kill('SIGKILL')
    const killedAt = Date.now()
    // Its record stays valid until it expires (3 s after its last refresh), then no lookup returns it.
    while ((await names(1)).length > 0) {
      assert.ok(Date.now() - killedAt < 20_000, 'a killed node was still listed 20 s later')
      await new Promise(resolve => setTimeout(resolve, 250))
    }
    assert.ok(Date.now() - killedAt <= 3_000 + 5_000, `gone after ${Date.now() - killedAt} ms, expiry is 3 s`)

    if (!POSIX_SIGNALS) return // Windows: no SIGTERM between processes (kill() is TerminateProcess)
    const exited = new Promise<number | null>(resolve => second.process.once('exit', resolve))
    second.process.kill('SIGTERM')
    assert.equal(await exited, 0)
    assert.match(second.output.join('\n'), /SIGTERM: announcing offline and stopping\noffline/)
    assert.deepEqual(await names(4), [])
  })
})
