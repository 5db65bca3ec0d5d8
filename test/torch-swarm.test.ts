// A mixed swarm: the middle span of the bundled model served by a `bmrt-node --backend torch`
// process (a Python worker running transformers' own Llama layers), the ends by the native or JS
// backend; greedy generation through it reproduces EXPECTED.md.

import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { collect } from '../src/inference/generate.js'
import { loadAddon } from '../src/inference/native-backend.js'
import { createNode, type BmrtNode } from '../src/p2p/node.js'
import { DistributedModel } from '../src/petals/client/distributed-model.js'
import { BlockServer } from '../src/petals/server/server.js'
import { EXPECTED } from './expected.js'
import { BUNDLED_MODEL, startNode, torchPython } from './helpers.js'

describe('a swarm with a torch-backend server', function () {
  let entry: BmrtNode
  const servers: BlockServer[] = []
  const children: ChildProcess[] = []
  let model: DistributedModel | undefined

  before(async function () {
    if (torchPython() === null) this.skip()
    entry = await createNode({ role: 'server' })
  })
  after(async () => {
    await model?.close()
    children.forEach(c => c.kill('SIGKILL'))
    await Promise.all(servers.map(async s => await s.stop()))
    await entry?.stop()
  })

  it('generates EXPECTED.md\'s tokens with blocks 2:4 on the torch backend', async () => {
    const initialPeers = entry.getMultiaddrs().map(String)
    const name = 'stories-torch'
    const backend = loadAddon() !== null ? 'native' : 'js'
    servers.push(await BlockServer.start({ modelDir: BUNDLED_MODEL, modelName: name, blocks: { start: 0, end: 2 }, initialPeers, throughput: 1, updatePeriodMs: 600_000, load: { backend } }))
    const middle = await startNode(['--model', BUNDLED_MODEL, '--model-name', name, '--initial-peers', initialPeers[0], '--host-addrs', '/ip4/127.0.0.1/tcp/0',
      '--throughput', '1', '--blocks', '2:4', '--backend', 'torch', '--python', torchPython()!])
    children.push(middle.process)
    assert.match(middle.output.join('\n'), /online: serving blocks 2:4 of stories-torch \(torch backend\)/)
    servers.push(await BlockServer.start({ modelDir: BUNDLED_MODEL, modelName: name, blocks: { start: 4, end: 5 }, initialPeers, throughput: 1, updatePeriodMs: 600_000, load: { backend } }))
    const routes: string[] = []
    model = await DistributedModel.load(BUNDLED_MODEL, { initialPeers, modelName: name, onRoute: route => routes.push(route.map(h => h.peerId).join(' ')) })
    for (const { promptIds, ids } of EXPECTED) {
      assert.deepEqual((await collect(model.generate(promptIds, { maxNewTokens: 50 }))).ids, ids)
    }
    assert.ok(routes.every(r => r.split(' ')[1] === middle.peerId), 'every generation went through the torch server')
  })
})
