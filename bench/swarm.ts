// Swarm discovery on loopback: 10 bmrt-node processes serve 8 blocks each of a random 80-block
// model (Llama-2-70B layout at tiny width); prints how long each takes from start to being found by
// a client, and the client's lookup latency for every block. Bounded: one pass, then everything stops.
// Run: npm run bench:swarm [-- --nodes 10]

import '../src/util/polyfill.js'
import { median, percentile } from '../src/util/stats.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { makeTestModel } from '../src/inference/test-model.js'
import { createNode, joinSwarm } from '../src/p2p/node.js'
import { Registry } from '../src/p2p/registry.js'

const { values: args } = parseArgs({ options: { nodes: { type: 'string', default: '10' } } })
const NODES = Number(args.nodes)
const BLOCKS = 80
const MODEL = 'tiny70b'
const root = fileURLToPath(new URL('../../', import.meta.url))

const scratch = await mkdtemp(join(tmpdir(), 'bmrt-bench-swarm-'))
const children: ChildProcess[] = []
const entry = await createNode({ role: 'server' })
const client = await createNode({ role: 'client', bootstrap: entry.getMultiaddrs().map(String) })
try {
  const modelDir = join(scratch, MODEL)
  await makeTestModel(modelDir, { layers: BLOCKS, hidden: 128, intermediate: 352, heads: 64, kvHeads: 8, headDim: 2, vocab: 512 })
  await joinSwarm(client)
  const registry = new Registry(client)
  const perNode = Math.ceil(BLOCKS / NODES)
  console.log(`bench/swarm: ${NODES} bmrt-node processes x ${perNode} blocks of an ${BLOCKS}-block model, loopback, js backend`)

  const found = await Promise.all(Array.from({ length: NODES }, async (_, i) => {
    const started = performance.now()
    const child = spawn(process.execPath, [join(root, 'bin', 'bmrt-node.js'), '--model', modelDir, '--model-name', MODEL,
      '--blocks', `${i * perNode}:${Math.min(BLOCKS, (i + 1) * perNode)}`, '--initial-peers', entry.getMultiaddrs()[0].toString(),
      '--host-addrs', '/ip4/127.0.0.1/tcp/0', '--backend', 'js', '--throughput', '1'], { stdio: ['ignore', 'pipe', 'inherit'] })
    children.push(child)
    let peerId = ''
    let onlineAt = 0
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', line => {
        if (line.startsWith('peer id ')) peerId = line.slice(8)
        if (line.startsWith('online:')) { onlineAt = performance.now(); resolve() }
      })
      child.once('exit', code => reject(new Error(`node ${i} exited with ${code}`)))
    })
    // Found = the client's lookup returns its online record.
    while ((await registry.lookup(MODEL, peerId))?.state !== 'online') await new Promise(resolve => setTimeout(resolve, 20))
    return { online: onlineAt - started, found: performance.now() - started }
  }))
  console.log(`start -> "online" line: median ${median(found.map(f => f.online)).toFixed(0)} ms, max ${Math.max(...found.map(f => f.online)).toFixed(0)} ms`)
  console.log(`start -> found by a client: median ${median(found.map(f => f.found)).toFixed(0)} ms, max ${Math.max(...found.map(f => f.found)).toFixed(0)} ms`)

  const latencies: number[] = []
  const sweepStarted = performance.now()
  for (let block = 0; block < BLOCKS; block++) {
    const started = performance.now()
    const servers = await registry.findServers(MODEL, block)
    latencies.push(performance.now() - started)
    if (servers.length !== 1) throw new Error(`block ${block}: ${servers.length} servers found, expected 1`)
  }
  const sweep = performance.now() - sweepStarted
  const parallelStarted = performance.now()
  const spans = await registry.findSpans(MODEL, BLOCKS)
  const parallel = performance.now() - parallelStarted
  if (spans.length !== NODES) throw new Error(`findSpans found ${spans.length} servers, expected ${NODES}`)
  console.log(`lookup of one block (providers + their records): median ${median(latencies).toFixed(1)} ms, p90 ${percentile(latencies, 0.9).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms`)
  console.log(`all ${BLOCKS} blocks one after another: ${sweep.toFixed(0)} ms; all at once (findSpans): ${parallel.toFixed(0)} ms`)
} finally {
  children.forEach(c => c.kill('SIGKILL'))
  await client.stop()
  await entry.stop()
  await rm(scratch, { recursive: true, force: true })
}
