// Block servers on a loopback swarm: five servers with different spans found block by block (and by
// `bmrt swarm status`), a hole filled by --num-blocks, graceful stop, one end-to-end rebalancing move.

import assert from 'node:assert/strict'
import { join } from 'node:path'
import { createNode, joinSwarm, type BmrtNode } from '../src/p2p/node.js'
import { Registry } from '../src/p2p/registry.js'
import { BlockServer } from '../src/petals/server/server.js'
import { DEFAULT_BALANCE_QUALITY } from '../src/petals/server/block-selection.js'
import { OptionError } from '../src/util/errors.js'
import { makeTestModel } from '../src/inference/test-model.js'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { ROOT, scratchDir } from './helpers.js'

describe('block servers on a loopback swarm', function () {
  let cleanup: () => Promise<void>
  let modelDir: string
  let entry: BmrtNode
  let client: BmrtNode
  let initialPeers: string[]
  const servers: BlockServer[] = []
  const MODEL = 'tiny20'
  const QUALITY = DEFAULT_BALANCE_QUALITY // Petals' default balance quality

  // No rebalancing checks of their own (balanceQuality 0): a check comes after a random 0..2 periods,
  // and one that moved a --num-blocks server mid-test (as d and e below would justify) made the
  // expected layout a race. The move test calls rebalance() itself, with Petals' quality.
  const start = async (options: { blocks?: { start: number, end: number }, numBlocks?: number, throughput: number }): Promise<BlockServer> => {
    const server = await BlockServer.start({
      modelDir, modelName: MODEL, initialPeers, load: { backend: 'js' }, updatePeriodMs: 600_000, balanceQuality: 0, ...options
    })
    servers.push(server)
    return server
  }
  const holders = async (block: number): Promise<string[]> =>
    (await new Registry(client).findServers(MODEL, block)).map(r => r.peerId).sort()

  before(async () => {
    let dir: string
    ({ dir, cleanup } = await scratchDir())
    modelDir = join(dir, 'model')
    await makeTestModel(modelDir, { layers: 20, hidden: 16, intermediate: 32, heads: 2, vocab: 32 })
    entry = await createNode({ role: 'server' })
    initialPeers = entry.getMultiaddrs().map(a => a.toString())
    client = await createNode({ role: 'client', bootstrap: initialPeers })
    await joinSwarm(client)
  })
  // Each test's servers stop when it ends, passed or not, so one failure does not leave servers
  // that the next test would then find in the DHT.
  afterEach(async () => {
    await Promise.all(servers.splice(0).map(async s => await s.stop()))
  })
  after(async () => {
    await client.stop()
    await entry.stop()
    await cleanup()
  })

  it('serves pinned spans, fills the hole with --num-blocks, and drops a stopped server at once', async () => {
    const a = await start({ blocks: { start: 0, end: 8 }, throughput: 1 })
    const b = await start({ blocks: { start: 12, end: 20 }, throughput: 1 })
    const c = await start({ numBlocks: 4, throughput: 1 })
    assert.deepEqual([c.span?.start, c.span?.end], [8, 12], 'the new server took the uncovered blocks')
    const d = await start({ blocks: { start: 0, end: 10 }, throughput: 2 })
    const e = await start({ blocks: { start: 5, end: 15 }, throughput: 3 })
    const all = [a, b, c, d, e]
    const id = (s: BlockServer): string => s.node.peerId.toString()
    for (let block = 0; block < 20; block++) {
      const expected = all.filter(s => s.span!.start <= block && block < s.span!.end).map(id).sort()
      assert.deepEqual(await holders(block), expected, `block ${block}`)
    }

    // The same picture through `bmrt swarm status --json`, as a separate process would see it.
    const { stdout } = await promisify(execFile)(process.execPath, [join(ROOT, 'bin', 'bmrt.js'), 'swarm', 'status', '--initial-peers', initialPeers[0], '--json'])
    const [model] = JSON.parse(stdout).models
    assert.equal(model.name, MODEL)
    assert.equal(model.blocks, 20)
    assert.deepEqual(model.coverage, Array.from({ length: 20 }, (_, block) => all.filter(s => s.span!.start <= block && block < s.span!.end).length))
    assert.equal(model.complete, true)
    assert.deepEqual(model.servers.map((s: { peerId: string }) => s.peerId).sort(), all.map(id).sort())
    assert.equal(model.servers.find((s: { peerId: string }) => s.peerId === id(e)).throughput, 3)
    await d.stop()
    await e.stop()
    const record = await new Registry(client).lookup(MODEL, id(c))
    assert.equal(record?.info.throughput, 1)
    assert.equal(record?.info.version, '0.1.0')

    await b.stop()
    assert.deepEqual(await holders(15), [])
    assert.equal((await new Registry(client).lookup(MODEL, id(b)))?.state, 'offline')
    await a.stop()
    await c.stop()
  })

  it('moves a server when a stronger one arrives on its blocks, and not before', async () => {
    const a = await start({ blocks: { start: 0, end: 10 }, throughput: 1 })
    const m = await start({ numBlocks: 10, throughput: 1 })
    assert.deepEqual([m.span?.start, m.span?.end], [10, 20])
    assert.equal(await m.rebalance(QUALITY), false, 'the swarm is balanced')
    await start({ blocks: { start: 10, end: 20 }, throughput: 10 })
    assert.equal(await m.rebalance(QUALITY), true)
    assert.deepEqual([m.span?.start, m.span?.end], [0, 10])
    assert.deepEqual(await holders(5), [a.node.peerId.toString(), m.node.peerId.toString()].sort())
    assert.equal((await holders(15)).includes(m.node.peerId.toString()), false)
  })

  it('checks options.blocks against config.json before it starts a node, and names the option', async () => {
    const log: string[] = []
    await assert.rejects(BlockServer.start({ modelDir, initialPeers, blocks: { start: 18, end: 22 }, load: { backend: 'js' }, log: line => log.push(line) }),
      (err: unknown) => err instanceof OptionError && err.options.includes('blocks') &&
        /^options\.blocks: block span 18:22 is not within the model's 20 blocks/.test(err.message) &&
        err.render(option => `--${option}`).startsWith('--blocks: block span 18:22'))
    assert.deepEqual(log, [], 'nothing started, so nothing was logged')
  })

  it('pins the span it was given, and chooses one otherwise', async () => {
    const pinned = await start({ blocks: { start: 0, end: 4 }, throughput: 1 })
    const chosen = await start({ numBlocks: 4, throughput: 1 })
    assert.equal(pinned.pinned, true)
    assert.equal(chosen.pinned, false)
  })
})
