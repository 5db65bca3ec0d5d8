// Sybils against an honest client (issue 20, rows 1 and 2): identities that cost nothing sign
// records "online 0:5, inferenceRps 1e6" (so routing prefers them to any honest chain) and then
// refuse every session, or accept it and never answer. The honest client, on a loopback swarm with a
// healthy chain of real BlockServers, routes around them: each sybil costs it one failover, none
// costs it a retry of its budget, and a stalling one costs a step timeout derived from the steps it
// measured rather than 60 s. Its tokens equal the reference's.

import assert from 'node:assert/strict'
import { collect } from '../src/inference/generate.js'
import { createNode, joinSwarm, type BmrtNode } from '../src/p2p/node.js'
import { blockGroupCid, Registry, type FindSpansOptions } from '../src/p2p/registry.js'
import { DistributedModel, type DistributedModelOptions } from '../src/petals/client/distributed-model.js'
import { DEFAULT_CLIENT_STEP_TIMEOUT_MS, MIN_STEP_TIMEOUT_MS } from '../src/petals/client/remote-span.js'
import { BlockServer } from '../src/petals/server/server.js'
import { Sybil, type SybilBehaviour } from '../src/testing/sybil.js'
import { EXPECTED } from './expected.js'
import { BUNDLED_MODEL, waitFor } from './helpers.js'
import { TARGET_BACKEND } from './raw-peer.js'

describe('sybils against an honest client', function () {
  let entry: BmrtNode
  let initialPeers: string[]
  let servers: BlockServer[] = []
  let sybils: Sybil[] = []
  let clients: DistributedModel[] = []
  let nodes: BmrtNode[] = []

  before(async () => {
    entry = await createNode({ role: 'server' })
    initialPeers = entry.getMultiaddrs().map(String)
  })
  afterEach(async () => {
    await Promise.all(clients.map(async c => await c.close()))
    await Promise.all(sybils.map(async s => await s.node.stop()))
    await Promise.all(nodes.map(async n => await n.stop()))
    nodes = []
    await Promise.all(servers.map(async s => await s.stop()))
    clients = []
    sybils = []
    servers = []
  })
  after(async () => {
    await entry.stop()
  })

  /** The honest chain: blocks 0:2 and 2:5 on two real servers. */
  const honestChain = async (model: string): Promise<string[]> => {
    for (const [start, end] of [[0, 2], [2, 5]]) {
      servers.push(await BlockServer.start({ modelDir: BUNDLED_MODEL, modelName: model, blocks: { start, end }, initialPeers, listen: ['/ip4/127.0.0.1/tcp/0'], throughput: 1, updatePeriodMs: 600_000, load: { backend: TARGET_BACKEND } }))
    }
    return servers.map(s => s.node.peerId.toString())
  }
  const connect = async (model: string, options: Partial<DistributedModelOptions> = {}): Promise<DistributedModel> => {
    const client = await DistributedModel.load(BUNDLED_MODEL, { initialPeers, modelName: model, ...options })
    clients.push(client)
    return client
  }
  const startSybils = async (model: string, behaviour: SybilBehaviour, count: number): Promise<string[]> => {
    sybils.push(...await Promise.all(Array.from({ length: count }, async () => await Sybil.start(model, behaviour, initialPeers))))
    return sybils.map(s => s.peerId)
  }
  /** Refreshes until the client knows every server and sybil. */
  const seesAll = async (client: DistributedModel, peers: readonly string[]): Promise<void> => {
    await waitFor(`the client to see ${peers.length} servers`, async () => {
      await client.manager.update()
      return peers.every(p => client.manager.servers.some(s => s.peerId === p))
    }, 60_000)
  }
  /** Generates 10 tokens of EXPECTED[0] and returns the seconds it took. */
  const answer = async (client: DistributedModel): Promise<number> => {
    const { promptIds, ids } = EXPECTED[0]
    const started = performance.now()
    const result = await collect(client.generate(promptIds, { maxNewTokens: 10 }))
    assert.deepEqual(result.ids, ids.slice(0, 10), 'the tokens of the reference')
    return (performance.now() - started) / 1000
  }

  it('routes around sybils that refuse every session, without spending its retries on them', async function () {
    this.timeout(180_000)
    const model = 'stories-sybils-refuse'
    const honest = await honestChain(model)
    const quiet = await answer(await connect(model))

    const count = 8
    const liars = await startSybils(model, 'refuse', count)
    const failovers: string[] = []
    // Two retries, where the default is 8: each sybil would use one up unless a failover to a server
    // not banned is free.
    const client = await connect(model, { maxRetries: 2, onRoute: (_route, reason) => { if (reason !== 'open') failovers.push(reason) } })
    await seesAll(client, [...honest, ...liars])
    const attacked = await answer(client)
    console.log(`      time to answer: ${quiet.toFixed(2)} s quiet, ${attacked.toFixed(2)} s with ${count} refusing sybils; ${failovers.length} failovers`)

    assert.equal(failovers.length, count, `one failover per sybil:\n${failovers.join('\n')}`)
    const failed = failovers.map(f => /failed on (\S+) /.exec(f)?.[1])
    assert.deepEqual(new Set(failed), new Set(liars), `each failover left a sybil:\n${failovers.join('\n')}`)
    assert.ok(sybils.every(s => s.sessions <= 1), `each sybil was tried once: ${sybils.map(s => s.sessions).join(', ')} sessions`)
    assert.ok(liars.every(p => client.manager.bans.isBanned(p)), 'every sybil is banned')
    assert.ok(honest.every(p => !client.manager.bans.isBanned(p)))
  })

  it('gives up on sybils that accept a session and never answer after a timeout from measured steps', async function () {
    this.timeout(300_000)
    const model = 'stories-sybils-stall'
    const honest = await honestChain(model)
    const failovers: string[] = []
    const client = await connect(model, { onRoute: (_route, reason) => { if (reason !== 'open') failovers.push(reason) } })
    const quiet = await answer(client) // measures its steps

    const count = 2
    const stallers = await startSybils(model, 'stall', count)
    await seesAll(client, [...honest, ...stallers])
    const attacked = await answer(client)
    console.log(`      time to answer: ${quiet.toFixed(2)} s quiet, ${attacked.toFixed(2)} s with ${count} stalling sybils; ${failovers.length} failovers`)

    assert.equal(failovers.length, count, `one failover per sybil:\n${failovers.join('\n')}`)
    assert.deepEqual(new Set(failovers.map(f => /failed on (\S+) /.exec(f)?.[1])), new Set(stallers), `each failover left a sybil:\n${failovers.join('\n')}`)
    // The wait is the measured one (5 s at least), not the 60 s a client waits before it measured.
    const waits = failovers.map(f => Number(/no answer within ([\d.]+) s/.exec(f)?.[1]))
    assert.ok(waits.every(w => w >= MIN_STEP_TIMEOUT_MS / 1000 && w < DEFAULT_CLIENT_STEP_TIMEOUT_MS / 1000), `each stall cost a timeout from measured steps:\n${failovers.join('\n')}`)
    assert.deepEqual(sybils.map(s => s.sessions), new Array(count).fill(1), 'each sybil was tried once')
  })

  it('finds the honest servers among 40 advertisers that publish no record, asking each once and none in the DHT', async function () {
    this.timeout(300_000)
    const model = 'stories-sybils-advertise'
    const honest = await honestChain(model)
    const loadAndAnswer = async (): Promise<number> => {
      const started = performance.now()
      await answer(await connect(model))
      return (performance.now() - started) / 1000
    }
    const quiet = await loadAndAnswer()

    // Identities that provide the block group and sign nothing, as in the attack run: half stay up
    // (and speak no bmrt protocol), half leave once they have provided (their provider records stay).
    const count = 40
    const group = await blockGroupCid(model, 0)
    const advertisers: BmrtNode[] = []
    for (let i = 0; i < count; i++) { // one at a time: libp2p takes 5 new connections a second per host
      const node = await createNode({ role: 'server', bootstrap: [...initialPeers, ...servers.map(s => s.node.getMultiaddrs()[0].toString())] })
      nodes.push(node)
      advertisers.push(node)
      await joinSwarm(node)
      await node.contentRouting.provide(group)
    }
    const gone = advertisers.slice(count / 2)
    await Promise.all(gone.map(async node => { await node.stop() }))
    // The honest servers provide again, as they do every update period: their first provider records
    // went to the 3 nodes there were, which a query in the grown swarm may not visit.
    await Promise.all(servers.map(async s => { await s.node.contentRouting.provide(group) }))
    const client = await createNode({ role: 'client', bootstrap: initialPeers })
    nodes.push(client)
    await joinSwarm(client)
    const providers = new Set<string>()
    for await (const provider of client.contentRouting.findProviders(group)) providers.add(provider.id.toString())

    let gets = 0
    const get = client.contentRouting.get.bind(client.contentRouting)
    client.contentRouting.get = async (key, options) => { gets++; return await get(key, options) }
    const lookups: string[] = []
    const find = async (registry: Registry, options: FindSpansOptions): Promise<number> => {
      gets = 0
      const started = performance.now()
      const spans = await registry.findSpans(model, 5, ['online'], options)
      lookups.push(`${options.ownersOnly === true ? 'owners only' : 'DHT for the unreachable'}: ${((performance.now() - started) / 1000).toFixed(2)} s, ${gets} DHT record lookups`)
      assert.deepEqual(spans.map(s => s.peerId).sort(), [...honest].sort(), `the honest servers, every time (${lookups.at(-1)})`)
      return gets
    }
    // As routing looks (SequenceManager): each advertiser is asked once, directly, and the DHT not at all.
    const routing = new Registry(client)
    assert.equal(await find(routing, { ownersOnly: true }), 0, 'no DHT lookup of a record')
    assert.equal(await find(routing, { ownersOnly: true }), 0)
    // As the monitor looks: the advertisers that left are looked up in the DHT, once.
    const monitor = new Registry(client)
    assert.ok(await find(monitor, {}) <= gone.length, 'only the advertisers that could not be asked are looked up in the DHT')
    assert.equal(await find(monitor, {}), 0, 'the advertisers without a record are not looked up again')
    const attacked = await loadAndAnswer()
    console.log(`      a new client saw ${providers.size} providers of the group, ${honest.filter(h => providers.has(h)).length} of the ${honest.length} honest servers among them; findSpans: ${lookups.join('; ')}`)
    console.log(`      load and answer: ${quiet.toFixed(2)} s quiet, ${attacked.toFixed(2)} s with ${count} such advertisers`)
  })
})
