// The DHT registry on a real loopback swarm: servers announce spans, a client (DHT client mode)
// finds them per block; withdrawals, forged and expired records, newest-wins, persistent identity.

import assert from 'node:assert/strict'
import { chmod, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { generateKeyPair, privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { createNode, joinSwarm, type BmrtNode } from '../src/p2p/node.js'
import { Registry, recordKey, verifyRecord, type RecordStats } from '../src/p2p/registry.js'
import { IdentityError, loadOrCreateIdentity } from '../src/p2p/identity.js'
import { scratchDir } from './helpers.js'

describe('DHT registry on a loopback swarm', function () {
  const stats: RecordStats[] = []
  const nodes: BmrtNode[] = []
  let bootstrap: BmrtNode
  let servers: BmrtNode[]
  let client: BmrtNode

  const make = async (dhtServer: boolean, bootstrapAddrs: string[] = []): Promise<BmrtNode> => {
    const s: RecordStats = { rejected: {} }
    stats.push(s)
    const node = await createNode({ role: dhtServer ? 'server' : 'client', bootstrap: bootstrapAddrs, records: { stats: s } })
    nodes.push(node)
    return node
  }

  before(async () => {
    bootstrap = await make(true)
    const addrs = bootstrap.getMultiaddrs().map(a => a.toString())
    servers = [await make(true, addrs), await make(true, addrs), await make(true, addrs)]
    client = await make(false, addrs)
    await Promise.all([...servers, client].map(async n => await joinSwarm(n)))
    await joinSwarm(bootstrap)
  })
  after(async () => { await Promise.all(nodes.map(async n => await n.stop())) })

  it('finds the online servers of each block, from a client in DHT client mode', async () => {
    const [a, b] = servers.map(s => new Registry(s))
    await a.announce('org/model-7b', { start: 0, end: 4, state: 'online', info: { throughput: 10 } })
    await b.announce('org/model-7b', { start: 2, end: 6, state: 'online', info: { throughput: 5 } })
    const registry = new Registry(client)
    const peers = async (block: number): Promise<string[]> => (await registry.findServers('org/model-7b', block)).map(r => r.peerId).sort()
    assert.deepEqual(await peers(0), [servers[0].peerId.toString()])
    assert.deepEqual(await peers(3), [servers[0].peerId.toString(), servers[1].peerId.toString()].sort())
    assert.deepEqual(await peers(5), [servers[1].peerId.toString()])
    assert.deepEqual(await peers(6), [])
    const record = await registry.lookup('org/model-7b', servers[1].peerId.toString())
    assert.deepEqual(record?.info, { throughput: 5 })
  })

  it('finds every server of an 80-block model in one findSpans, and a server by block after it moves to other groups of blocks', async () => {
    const spans = [[0, 30], [25, 55], [50, 80]]
    await Promise.all(servers.map(async (s, i) => await new Registry(s).announce('org/model-70b', { start: spans[i][0], end: spans[i][1], state: 'online' })))
    const registry = new Registry(client)
    const found = await registry.findSpans('org/model-70b', 80)
    assert.deepEqual(found.map(r => [r.peerId, r.start, r.end]).sort(), servers.map((s, i) => [s.peerId.toString(), ...spans[i]]).sort())
    const peers = async (block: number): Promise<string[]> => (await registry.findServers('org/model-70b', block)).map(r => r.peerId).sort()
    const [first, second, third] = servers.map(s => s.peerId.toString())
    assert.deepEqual(await peers(16), [first], 'block 16 shares a provider key with 25:55, which does not serve it')
    assert.deepEqual(await peers(27), [first, second].sort())

    await new Registry(servers[0]).announce('org/model-70b', { start: 60, end: 80, state: 'online' }) // moves: 0:30 -> 60:80
    assert.deepEqual(await peers(16), [])
    assert.deepEqual(await peers(70), [first, third].sort())
    const moved = await registry.findSpans('org/model-70b', 80)
    assert.deepEqual(moved.map(r => [r.peerId, r.start, r.end]).sort(), [[first, 60, 80], [second, 25, 55], [third, 50, 80]].sort())
  })

  it('drops a withdrawn server at once, and the newest record of a server wins', async () => {
    const registry = new Registry(servers[2])
    await registry.announce('m', { start: 0, end: 2, state: 'joining' })
    const reader = new Registry(client)
    assert.deepEqual(await reader.findServers('m', 1), [], 'joining servers are not routed to')
    await registry.announce('m', { start: 0, end: 2, state: 'online', info: { round: 2 } })
    assert.deepEqual((await reader.findServers('m', 1)).map(r => r.info), [{ round: 2 }])
    await registry.withdraw('m', { start: 0, end: 2 })
    assert.deepEqual(await reader.findServers('m', 1), [])
    assert.equal((await reader.lookup('m', servers[2].peerId.toString()))?.state, 'offline')
  })

  it('storing peers refuse a record signed by another key, and the genuine one stays', async () => {
    const victim = servers[0].peerId.toString()
    const key = recordKey('org/model-7b', victim)
    const forged = new TextEncoder().encode(JSON.stringify({ model: 'org/model-7b', peerId: victim, start: 0, end: 80, state: 'online', ts: Date.now() + 1e6, expiresAt: Date.now() + 1e6, info: {} }))
    const attacker = await generateKeyPair('Ed25519')
    const signature = await attacker.sign(new Uint8Array([...key, ...forged]))
    await client.contentRouting.put(key, new Uint8Array([...forged, ...signature]))
    const refused = stats.reduce((sum, s) => sum + (s.rejected['bad-signature'] ?? 0), 0)
    assert.ok(refused >= 1, 'no storing peer refused the forged record')
    const record = await new Registry(client).lookup('org/model-7b', victim)
    assert.equal(record?.end, 4)
  })

  it('a peer sending garbage on the DHT protocol does not stop a node from serving', async () => {
    const target = servers[0]
    for (const size of [1, 7, 300, 70_000]) {
      const garbage = new Uint8Array(size).map((_, i) => (i * 7919 + size) % 256)
      const stream = await client.dialProtocol(target.getMultiaddrs()[0], '/bmrt/kad/1.0.0')
      stream.send(garbage)
      await stream.close().catch(() => {}) // the node may reset the stream: that is its right
    }
    const record = await new Registry(client).lookup('org/model-7b', target.peerId.toString())
    assert.equal(record?.state, 'online')
    assert.deepEqual((await new Registry(client).findServers('org/model-7b', 0)).map(r => r.peerId), [target.peerId.toString()])
  })
})

describe('a replayed older record', function () {
  this.timeout(60_000)
  it('does not replace the newer one on the peer that stores it: after the server moves and stops, a client still reads its new span', async () => {
    const nodes: BmrtNode[] = []
    try {
      const entry = await createNode({ role: 'server' })
      nodes.push(entry)
      const addrs = entry.getMultiaddrs().map(a => a.toString())
      const server = await createNode({ role: 'server', bootstrap: addrs })
      const attacker = await createNode({ role: 'client', bootstrap: addrs })
      const client = await createNode({ role: 'client', bootstrap: addrs })
      nodes.push(server, attacker, client)
      await Promise.all([server, attacker, client].map(async n => await joinSwarm(n)))
      await joinSwarm(entry)

      const peerId = server.peerId.toString()
      const key = recordKey('m', peerId)
      const registry = new Registry(server)
      await registry.announce('m', { start: 0, end: 2, state: 'online' })
      const old = await attacker.contentRouting.get(key) // anyone can read, and keep, the signed record
      await registry.announce('m', { start: 2, end: 4, state: 'online' }) // the server moves
      assert.deepEqual((await verifyRecord(key, await entry.contentRouting.get(key))).start, 2)

      await attacker.contentRouting.put(key, old) // replays the old one: it is validly signed, not expired
      await server.stop() // the server, which held the newer copy itself, is gone
      const record = await new Registry(client).lookup('m', peerId)
      assert.deepEqual([record?.start, record?.end], [2, 4], 'the entry node kept the newer record')
    } finally {
      await Promise.all(nodes.map(async n => await n.stop()))
    }
  })
})

describe('span records', () => {
  it('are refused when expired, mismatched with their key, or malformed', async () => {
    const privateKey = await generateKeyPair('Ed25519')
    const peerId = peerIdFromPrivateKey(privateKey).toString()
    const sign = async (model: string, record: object): Promise<[Uint8Array, Uint8Array]> => {
      const key = recordKey(model, peerId)
      const payload = new TextEncoder().encode(JSON.stringify(record))
      return [key, new Uint8Array([...payload, ...await privateKey.sign(new Uint8Array([...key, ...payload]))])]
    }
    const good = { model: 'm', peerId, start: 0, end: 2, state: 'online', ts: 1000, expiresAt: 5000, info: {} }
    assert.equal((await verifyRecord(...await sign('m', good), 2000)).end, 2)
    await assert.rejects(verifyRecord(...await sign('m', good), 6000), /record expired/)
    await assert.rejects(verifyRecord(...await sign('other', good), 2000), /do not match its key/)
    await assert.rejects(verifyRecord(...await sign('m', { ...good, start: 3 }), 2000), /wrong type/)
    await assert.rejects(verifyRecord(...await sign('m', { ...good, state: 'dancing' }), 2000), /wrong type/)
    const [key, value] = await sign('m', good)
    value[3] ^= 1
    await assert.rejects(verifyRecord(key, value, 2000), /not signed by the peer it names/)
    await assert.rejects(verifyRecord(key, value.subarray(0, 40), 2000), /has no room for a signature/)
    await assert.rejects(verifyRecord(...await sign('m', { ...good, info: { padding: 'x'.repeat(20_000) } }), 2000), /exceeds 16384/)
  })
})

describe('node identity', () => {
  it('is created once with permissions 0600 and keeps the peer id across restarts', async () => {
    const { dir, cleanup } = await scratchDir()
    try {
      const path = join(dir, 'sub', 'identity.key')
      const first = await loadOrCreateIdentity(path)
      assert.equal(first.created, true)
      if (process.platform !== 'win32') assert.equal((await stat(path)).mode & 0o777, 0o600)
      const second = await loadOrCreateIdentity(path)
      assert.equal(second.created, false)
      assert.equal(peerIdFromPrivateKey(second.privateKey).toString(), peerIdFromPrivateKey(first.privateKey).toString())
      await writeFile(path, 'not a key')
      await assert.rejects(loadOrCreateIdentity(path), /is not a bmrt identity file .*move it away/)
    } finally {
      await cleanup()
    }
  })

  it('with one flipped bit in its private seed is refused on load, though it gives the same peer id; one others can read is reported', async () => {
    const { dir, cleanup } = await scratchDir()
    try {
      const path = join(dir, 'identity.key')
      const { privateKey } = await loadOrCreateIdentity(path)
      const bytes = await readFile(path)
      // The protobuf: type (2 bytes), then the 64 key bytes behind a 2-byte header: 32 of seed, 32 of public key.
      assert.equal(bytes.length, 68)
      bytes[4 + 5] ^= 0x10
      const damaged = join(dir, 'damaged.key')
      await writeFile(damaged, bytes, { mode: 0o600 })
      assert.equal(peerIdFromPrivateKey(privateKeyFromProtobuf(bytes)).toString(), peerIdFromPrivateKey(privateKey).toString(), 'libp2p alone takes the damaged key, with the same peer id')
      await assert.rejects(loadOrCreateIdentity(damaged), (err: Error) => {
        assert.ok(err instanceof IdentityError, `${err.name}: ${err.message}`)
        assert.match(err.message, /damaged\.key is damaged: its private key does not make its public key/)
        return true
      })
      if (process.platform !== 'win32') {
        assert.equal((await loadOrCreateIdentity(path)).exposedMode, null)
        await chmod(path, 0o644)
        assert.equal((await loadOrCreateIdentity(path)).exposedMode, 0o644)
      }
    } finally {
      await cleanup()
    }
  })
})
