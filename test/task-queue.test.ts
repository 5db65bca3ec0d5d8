// The server's compute queue: one task at a time, inference steps ahead of waiting forward work,
// and work of a client that went away dropped before it runs.

import assert from 'node:assert/strict'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { peerGroup, TaskQueue, type TaskTurn } from '../src/petals/server/task-queue.js'

describe('task queue', () => {
  it('runs one task at a time, inference before forward work that waits', async () => {
    const queue = new TaskQueue()
    const order: string[] = []
    let release!: () => void
    const blocker = new Promise<void>(resolve => { release = resolve })
    let running = 0
    const task = (name: string, wait?: Promise<void>) => async () => {
      running++
      assert.equal(running, 1, 'tasks never overlap')
      order.push(name)
      await wait
      running--
      return name
    }
    const done = [
      queue.run('forward', task('forward 1', blocker)),
      queue.run('forward', task('forward 2')),
      queue.run('forward', task('forward 3')),
      queue.run('inference', task('inference 1')),
      queue.run('inference', task('inference 2'))
    ]
    assert.equal(queue.pending, 4)
    release()
    assert.deepEqual(await Promise.all(done), ['forward 1', 'forward 2', 'forward 3', 'inference 1', 'inference 2'])
    assert.deepEqual(order, ['forward 1', 'inference 1', 'inference 2', 'forward 2', 'forward 3'])
  })

  it('drops a waiting task whose client went away, and goes on with the rest', async () => {
    const queue = new TaskQueue()
    let release!: () => void
    const first = queue.run('inference', async () => await new Promise<void>(resolve => { release = resolve }))
    const gone = new AbortController()
    let ran = false
    const dropped = queue.run('inference', async () => { ran = true }, { signal: gone.signal })
    const after = queue.run('forward', async () => 'after')
    gone.abort(new Error('client closed the stream'))
    release()
    await first
    await assert.rejects(dropped, /client closed the stream/)
    assert.equal(await after, 'after')
    assert.equal(ran, false)
  })

  it('takes turns between subnet groups, then between the peers of a group, and reports the turns each task waited', async () => {
    const queue = new TaskQueue()
    const turns: TaskTurn[] = []
    queue.onStart = turn => turns.push(turn)
    let release!: () => void
    const blocker = queue.run('inference', async () => await new Promise<void>(resolve => { release = resolve }))
    // One subnet with three peers, four tasks each, queued first; then one peer of another subnet.
    const done: Array<Promise<unknown>> = []
    for (const peer of ['a1', 'a2', 'a3']) {
      for (let i = 0; i < 4; i++) done.push(queue.run('inference', async () => {}, { owner: { peer, group: '10.0.0.0/24' } }))
    }
    for (let i = 0; i < 3; i++) done.push(queue.run('inference', async () => {}, { owner: { peer: 'b', group: '10.9.9.0/24' } }))
    release()
    await Promise.all([blocker, ...done])
    assert.deepEqual(turns.slice(1).map(t => t.peer).join(' '), 'a1 b a2 b a3 b a1 a2 a3 a1 a2 a3 a1 a2 a3')
    // b's three tasks arrived at once behind 12 others: each waited for its own earlier ones and one
    // task of subnet a per turn of b (first come, first served: 13, 14 and 15 turns).
    assert.deepEqual(turns.filter(t => t.peer === 'b').map(t => t.waited), [1, 3, 5])
  })

  it('weighs turns by their cost: a peer asking for little goes ahead of one asking for much, and saves no credit while it has nothing queued', async () => {
    const queue = new TaskQueue()
    const order: string[] = []
    queue.onStart = turn => order.push(turn.peer)
    let release!: () => void
    const blocker = queue.run('inference', async () => await new Promise<void>(resolve => { release = resolve }))
    const group = '10.0.0.0/24'
    const done: Array<Promise<unknown>> = []
    for (let i = 0; i < 4; i++) done.push(queue.run('inference', async () => {}, { owner: { peer: 'prefills', group }, cost: 256 }))
    for (let i = 0; i < 4; i++) done.push(queue.run('inference', async () => {}, { owner: { peer: 'decodes', group }, cost: 1 }))
    release()
    await Promise.all([blocker, ...done])
    // Both start at 0: the prefill first (it came first), then the decodes, all within its 256.
    assert.deepEqual(order.slice(1).join(' '), 'prefills decodes decodes decodes decodes prefills prefills prefills')

    // The decoding peer turns to prefills after a pause: it saved no credit while it had nothing
    // queued (it would have had 700 tokens' worth), so the two now take turns.
    order.length = 0
    const again = queue.run('inference', async () => await new Promise<void>(resolve => { release = resolve }), { owner: { peer: 'prefills', group }, cost: 256 })
    const next = [
      ...Array.from({ length: 2 }, async () => await queue.run('inference', async () => {}, { owner: { peer: 'prefills', group }, cost: 256 })),
      ...Array.from({ length: 4 }, async () => await queue.run('inference', async () => {}, { owner: { peer: 'decodes', group }, cost: 256 }))
    ]
    release()
    await Promise.all([again, ...next])
    assert.deepEqual(order.join(' '), 'prefills decodes prefills decodes prefills decodes decodes')
  })

  it('groups peers by IPv4 /24 and IPv6 /48; a relayed peer is a group of its own', () => {
    assert.equal(peerGroup(multiaddr('/ip4/192.168.7.42/tcp/4001'), 'p'), '192.168.7.0/24')
    assert.equal(peerGroup(multiaddr('/ip4/192.168.7.9/udp/4001/quic-v1'), 'q'), '192.168.7.0/24')
    assert.equal(peerGroup(multiaddr('/ip6/2001:db8:abcd:12::1/tcp/4001'), 'p'), '2001:db8:abcd::/48')
    assert.equal(peerGroup(multiaddr('/ip6/2001:db8::1/tcp/4001'), 'p'), '2001:db8:0::/48')
    assert.equal(peerGroup(multiaddr('/ip6/::ffff:10.1.2.3/tcp/1'), 'p'), '10.1.2.0/24')
    assert.equal(peerGroup(multiaddr('/ip4/10.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit'), 'p'), 'peer p')
  })

  it('reads an IPv6 address in any written form, and gives an address it cannot read a group of its own', () => {
    const group = (address: string): string => peerGroup(multiaddr(address), 'p')
    // full, with leading zeros, and compressed forms of the same /48
    assert.equal(group('/ip6/2001:0db8:00ab:0001:0000:0000:0000:0001/tcp/4001'), '2001:db8:ab::/48')
    assert.equal(group('/ip6/2001:db8:ab:ffff::2/tcp/4001'), '2001:db8:ab::/48')
    assert.equal(group('/ip6/2001:db8:ac::/tcp/4001'), '2001:db8:ac::/48')
    assert.equal(group('/ip6/::1/tcp/4001'), '0:0:0::/48')
    // IPv4-mapped in its dotted, hexadecimal and full forms: the IPv4 /24
    for (const mapped of ['::ffff:10.1.2.3', '::ffff:a01:203', '0:0:0:0:0:ffff:0a01:0203']) {
      assert.equal(group(`/ip6/${mapped}/tcp/1`), '10.1.2.0/24', mapped)
    }
    assert.equal(group('/ip6/::fffe:a01:203/tcp/1'), '0:0:0::/48', 'not IPv4-mapped')
    // no IP first: a zoned link-local address, a DNS name
    assert.equal(group('/ip6zone/eth0/ip6/fe80::1/tcp/1'), 'peer p')
    assert.equal(group('/dns4/example.com/tcp/1'), 'peer p')
    // multiaddr() refuses a malformed address; one that gets past it anyway is its peer's alone
    assert.throws(() => multiaddr('/ip6/2001:db8::zz/tcp/1'))
    for (const [name, value] of [['ip6', '2001:db8::zz'], ['ip6', '1:2:3'], ['ip6', '1.2.3.4'], ['ip4', '10.1.2'], ['ip4', '10.1.2.300']]) {
      const malformed = { getComponents: () => [{ code: name === 'ip4' ? 4 : 41, name, value }, { code: 6, name: 'tcp', value: '1' }], toString: () => `/${name}/${value}/tcp/1` }
      assert.equal(peerGroup(malformed as unknown as Multiaddr, 'p'), 'peer p', value)
    }
  })
})
