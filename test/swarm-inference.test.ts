// Distributed inference on a loopback swarm: hidden states through chains of real servers equal
// the same model run here; failover after SIGKILL or SIGSTOP of a real bmrt-node process gives the
// same tokens as a run without failure.

import assert from 'node:assert/strict'
import { execFile, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { loadBlockSpan } from '../src/inference/load-span.js'
import { loadAddon } from '../src/inference/native-backend.js'
import { collect, generate, type GeneratedToken } from '../src/inference/generate.js'
import { LocalModel } from '../src/inference/model.js'
import { makeTestModel } from '../src/inference/test-model.js'
import { createNode, type BmrtNode } from '../src/p2p/node.js'
import { DistributedModel, type DistributedModelOptions } from '../src/petals/client/distributed-model.js'
import type { RouteHop } from '../src/petals/client/routing.js'
import { BlockServer, type ServerOptions } from '../src/petals/server/server.js'
import { EXPECTED } from './expected.js'
import { BUNDLED_MODEL, maxAbsDiff, POSIX_SIGNALS, randomHidden, ROOT, scratchDir, startNode } from './helpers.js'

const BACKEND = loadAddon() !== null ? 'native' : 'js'

/** Runs `bmrt` with `input` on stdin. */
async function bmrt (args: string[], input = ''): Promise<{ code: number, stdout: string, stderr: string }> {
  return await new Promise(resolve => {
    const child = execFile(process.execPath, [join(ROOT, 'bin', 'bmrt.js'), ...args], (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (err as { code?: number }).code ?? 1, stdout, stderr })
    })
    child.stdin!.end(input)
  })
}

describe('distributed inference on a loopback swarm', function () {
  let entry: BmrtNode
  let initialPeers: string[]
  let servers: BlockServer[] = []
  let models: DistributedModel[] = []

  const serve = async (modelDir: string, modelName: string, blocks: [number, number], options: Partial<ServerOptions> = {}): Promise<BlockServer> => {
    const server = await BlockServer.start({ modelDir, modelName, blocks: { start: blocks[0], end: blocks[1] }, initialPeers, throughput: 1, updatePeriodMs: 600_000, load: { backend: BACKEND }, ...options })
    servers.push(server)
    return server
  }
  const connect = async (modelDir: string, modelName: string, options: Partial<DistributedModelOptions> = {}): Promise<DistributedModel> => {
    const model = await DistributedModel.load(modelDir, { initialPeers, modelName, ...options })
    models.push(model)
    return model
  }

  before(async () => {
    entry = await createNode({ role: 'server' })
    initialPeers = entry.getMultiaddrs().map(String)
  })
  afterEach(async () => {
    await Promise.all(models.map(async m => await m.close()))
    await Promise.all(servers.map(async s => await s.stop()))
    models = []
    servers = []
  })
  after(async () => {
    await entry.stop()
  })

  for (const backend of ['native', 'js'] as const) {
    it(`the bundled model as 3 spans on the ${backend} backend generates EXPECTED.md's tokens`, async function () {
      if (backend === 'native' && loadAddon() === null) this.skip()
      const name = `stories-${backend}`
      for (const blocks of [[0, 2], [2, 4], [4, 5]] as Array<[number, number]>) await serve(BUNDLED_MODEL, name, blocks, { load: { backend } })
      const routes: RouteHop[][] = []
      const model = await connect(BUNDLED_MODEL, name, { onRoute: route => routes.push([...route]) })
      for (const { promptIds, ids } of EXPECTED) {
        const result = await collect(model.generate(promptIds, { maxNewTokens: 50 }))
        assert.deepEqual(result.ids, ids)
      }
      assert.deepEqual(routes.map(r => r.map(h => `${h.start}:${h.end}`)), EXPECTED.map(() => ['0:2', '2:4', '4:5']))
      const served = servers.reduce((sum, s) => sum + s.tokensServed, 0)
      assert.equal(served, 3 * EXPECTED.reduce((sum, e) => sum + e.promptIds.length + 49, 0), 'each server computed each token once')
    })
  }

  it('a 24-layer GQA model on 4 overlapping servers equals local blocks, batch 2, prefill + 30 decode steps', async () => {
    const { dir, cleanup } = await scratchDir()
    try {
      const modelDir = join(dir, 'gqa24')
      const config = await makeTestModel(modelDir, { layers: 24, hidden: 64, intermediate: 96, heads: 8, kvHeads: 2, vocab: 64, seed: 3, tokenizerFrom: BUNDLED_MODEL })
      for (const blocks of [[0, 8], [6, 14], [12, 20], [16, 24]] as Array<[number, number]>) await serve(modelDir, 'gqa24', blocks)
      const routes: RouteHop[][] = []
      const model = await connect(modelDir, 'gqa24', { onRoute: route => routes.push([...route]) })
      const local = await loadBlockSpan(modelDir, 0, 24, { backend: BACKEND })
      const H = config.hiddenSize
      const batch = 2
      const session = await model.inferenceSession({ maxLength: 40, batch })
      // Servers are entered mid-span: 0:8 on the first, then 8:14, 14:20 and 20:24.
      assert.deepEqual(session.route.map(h => `${h.start}:${h.end}`), ['0:8', '8:14', '14:20', '20:24'])
      const rows = [local.openSession(40), local.openSession(40)]
      let worst = 0
      for (let step = 0; step <= 30; step++) {
        const tokens = step === 0 ? 7 : 1
        const input = randomHidden(batch * tokens, H, 100 + step)
        const swarm = await session.step(input)
        for (let b = 0; b < batch; b++) {
          const expected = await local.forward(rows[b], input.slice(b * tokens * H, (b + 1) * tokens * H))
          worst = Math.max(worst, maxAbsDiff(swarm.subarray(b * tokens * H, (b + 1) * tokens * H), expected))
        }
      }
      assert.ok(worst <= 1e-4, `max abs diff ${worst}`)
      session.close()

      // forward(): no caches, the whole sequence at once, batch 2.
      const prompt = randomHidden(batch * 9, H, 5)
      const out = await model.forward(prompt, { batch })
      for (let b = 0; b < batch; b++) {
        const fresh = local.openSession(9)
        assert.ok(maxAbsDiff(out.subarray(b * 9 * H, (b + 1) * 9 * H), await local.forward(fresh, prompt.slice(b * 9 * H, (b + 1) * 9 * H))) <= 1e-4)
        local.closeSession(fresh)
      }

      // Half-precision activations on request: the same answers within bf16 rounding.
      const half = await connect(modelDir, 'gqa24', { dtype: 'bf16' })
      const halfSession = await half.inferenceSession({ maxLength: 16 })
      const x = randomHidden(7, H, 11)
      const reference = local.openSession(16)
      const expected = await local.forward(reference, x)
      const diff = maxAbsDiff(await halfSession.step(x), expected)
      const scale = expected.reduce((m, v) => Math.max(m, Math.abs(v)), 0)
      assert.ok(diff > 0 && diff <= 0.02 * scale, `bf16 wire: max abs diff ${diff} for values up to ${scale}`)
      halfSession.close()
      local.close()
    } finally {
      await cleanup()
    }
  })

  it('a prefill longer than a frame holds goes as several bounded frames, with the same result', async () => {
    const { dir, cleanup } = await scratchDir()
    try {
      // 16 KiB per token of fp32 hidden state: 4 MiB frames hold 256 tokens.
      const modelDir = join(dir, 'wide')
      await makeTestModel(modelDir, { layers: 2, hidden: 4096, intermediate: 16, heads: 1, kvHeads: 1, headDim: 16, vocab: 64, tokenizerFrom: BUNDLED_MODEL })
      const server = await serve(modelDir, 'wide', [0, 2])
      const calls: number[] = []
      const span = server.span!
      const forwardBatch = span.forwardBatch.bind(span)
      span.forwardBatch = async steps => { calls.push(steps[0].hidden.length / 4096); return await forwardBatch(steps) }
      const model = await connect(modelDir, 'wide')
      const session = await model.inferenceSession({ maxLength: 400 })
      const prompt = randomHidden(300, 4096, 3)
      const out = await session.step(prompt)
      assert.deepEqual(calls, [256, 44])
      const local = await loadBlockSpan(modelDir, 0, 2, { backend: BACKEND })
      assert.ok(maxAbsDiff(out, await local.forward(local.openSession(400), prompt)) <= 1e-4)
      local.close()
      session.close()
    } finally {
      await cleanup()
    }
  })

  it('bmrt generate and bmrt chat run against the swarm, --show-route printing the chain', async () => {
    const name = 'stories-cli'
    const ids = []
    for (const blocks of [[0, 3], [3, 5]] as Array<[number, number]>) ids.push((await serve(BUNDLED_MODEL, name, blocks)).node.peerId.toString())
    const swarm = ['--initial-peers', initialPeers[0], '--model-name', name]
    const generated = await bmrt(['generate', ...swarm, '--show-route', '--max-new-tokens', '50'])
    assert.equal(generated.code, 0, generated.stderr)
    assert.equal(generated.stdout, `${EXPECTED[0].text}\n`)
    assert.match(generated.stderr, new RegExp(`route \\(open\\): 0:3 via ${ids[0].slice(0, 6)}\\S* → 3:5 via ${ids[1].slice(0, 6)}`))

    // Two turns on one session: the second turn does not feed the first one again.
    const before = servers[0].tokensServed
    const chat = await bmrt(['chat', ...swarm, '--max-new-tokens', '20'], 'Once upon a time\nThe end\n')
    assert.equal(chat.code, 0, chat.stderr)
    const replies = chat.stdout.trim().split('\n')
    assert.equal(replies.length, 2, chat.stdout)
    assert.match(chat.stderr, /20 tokens, length, [\d.]+ tokens\/s; conversation \d+ of 512 tokens/)
    const [first, second] = [...chat.stderr.matchAll(/conversation (\d+) of/g)].map(m => Number(m[1]))
    const served = servers[0].tokensServed - before
    assert.ok(served >= second && served < first + second, `${served} tokens computed for turns of ${first} and ${second}`)
    const local = await bmrt(['chat', '--max-new-tokens', '20'], 'Once upon a time\nThe end\n')
    assert.equal(local.stdout, chat.stdout, 'the swarm answers as the local model does')
  })

  it('after a server fails, a client that knew no other looks again and routes to one that joined since, not back to the failed one', async () => {
    const name = 'rejoin'
    const a = await BlockServer.start({ modelDir: BUNDLED_MODEL, modelName: name, blocks: { start: 0, end: 5 }, initialPeers, throughput: 1, updatePeriodMs: 600_000, load: { backend: BACKEND } })
    try {
      const routes: Array<{ route: RouteHop[], reason: string }> = []
      const model = await connect(BUNDLED_MODEL, name, { onRoute: (route, reason) => routes.push({ route: [...route], reason }) })
      const b = await serve(BUNDLED_MODEL, name, [0, 5]) // after the client's last look at the swarm
      const prompt = EXPECTED[0].promptIds
      const generation = generate(model, prompt, { maxNewTokens: 20, ignoreEos: true })
      const ids: number[] = []
      for (let i = 0; i < 10; i++) ids.push(((await generation.next()).value as GeneratedToken).id!)
      await a.node.stop() // a crash: its record stays in the DHT
      for (let next = await generation.next(); next.done !== true; next = await generation.next()) ids.push(next.value.id!)
      assert.deepEqual(ids, EXPECTED[0].ids.slice(0, 20))
      const who = (route: RouteHop[]): string[] => route.map(h => h.peerId === a.node.peerId.toString() ? 'a' : h.peerId === b.node.peerId.toString() ? 'b' : h.peerId)
      assert.deepEqual(routes.map(r => who(r.route)), [['a'], ['b']], routes.map(r => r.reason).join('; '))
      // The client meets the crash reading an answer, writing the next step, or (where it saw the
      // stream closed before that step, as under Windows) opening the session again.
      assert.match(routes[1].reason, /failed: (the stream was closed by the other side|Cannot write to a stream that is closed)\)|could not open a session on \S+: .*ECONNREFUSED/)
    } finally {
      await a.stop().catch(() => {}) // its timers and blocks (announcing offline fails: its node is gone)
    }
  })

  it('a server that fails on the prompt is replaced by two servers, and the output is the same', async () => {
    const name = 'split-prefill'
    const whole = await BlockServer.start({ modelDir: BUNDLED_MODEL, modelName: name, blocks: { start: 0, end: 5 }, initialPeers, throughput: 1, updatePeriodMs: 600_000, load: { backend: BACKEND } })
    try {
      const [first, second] = [await serve(BUNDLED_MODEL, name, [0, 3]), await serve(BUNDLED_MODEL, name, [3, 5])]
      const routes: RouteHop[][] = []
      const model = await connect(BUNDLED_MODEL, name, { onRoute: route => routes.push([...route]) })
      await whole.node.stop() // a crash before the first step: its record stays in the DHT
      const result = await collect(model.generate(EXPECTED[0].promptIds, { maxNewTokens: 20, ignoreEos: true }))
      assert.deepEqual(result.ids, EXPECTED[0].ids.slice(0, 20))
      const who = new Map([[whole, 'whole'], [first, 'first'], [second, 'second']].map(([s, n]) => [(s as BlockServer).node.peerId.toString(), n as string]))
      assert.deepEqual(routes.map(r => r.map(h => who.get(h.peerId))), [['whole'], ['first', 'second']])
    } finally {
      await whole.stop().catch(() => {})
    }
  })

  it('a session whose connection closed while idle is opened again on the same server: no failover, no retry, the same tokens', async () => {
    const name = 'idle-close'
    const [first, second] = [await serve(BUNDLED_MODEL, name, [0, 3]), await serve(BUNDLED_MODEL, name, [3, 5])]
    const routes: string[] = []
    const progress: string[] = []
    const model = await connect(BUNDLED_MODEL, name, { onRoute: (_route, reason) => routes.push(reason), onProgress: line => progress.push(line) })
    const prompt = EXPECTED[0].promptIds
    const generation = generate(model, prompt, { maxNewTokens: 20, ignoreEos: true })
    const ids: number[] = []
    for (let i = 0; i < 10; i++) ids.push(((await generation.next()).value as GeneratedToken).id!)
    // What libp2p does to a connection whose pings go unanswered (a server hung for a while).
    await model.node.hangUp(second.node.peerId)
    for (;;) {
      const next = await generation.next()
      if (next.done === true) break
      if (next.value.id !== null) ids.push(next.value.id)
    }
    assert.deepEqual(ids, EXPECTED[0].ids.slice(0, 20))
    assert.equal(routes.length, 1, `no failover: ${routes.join('; ')}`)
    assert.ok(progress.some(line => line.includes(`the session on ${second.node.peerId.toString()} was closed while idle`)), progress.join('\n'))
    assert.ok(!progress.some(line => /retrying/.test(line)), progress.join('\n'))
    // The first server computed every token once; the second was given its history again: the
    // prompt and the 9 tokens fed back before the 10th came out.
    assert.equal(first.tokensServed, prompt.length + 19)
    assert.equal(second.tokensServed, prompt.length + 19 + prompt.length + 9)
  })

  it('failures of different hops in one step each get their retries: a hop that answers resets the count', async () => {
    const name = 'two-failures'
    const spans: Array<[number, number]> = [[0, 3], [0, 3], [3, 5], [3, 5]]
    const all = await Promise.all(spans.map(async span => await serve(BUNDLED_MODEL, name, span)))
    const routes: RouteHop[][] = []
    // One retry: without the reset, the second hop's failure would be the step's second and end it.
    const model = await connect(BUNDLED_MODEL, name, { maxRetries: 1, onRoute: route => routes.push([...route]) })
    const generation = generate(model, EXPECTED[0].promptIds, { maxNewTokens: 20, ignoreEos: true })
    const ids: number[] = []
    for (let i = 0; i < 10; i++) ids.push(((await generation.next()).value as GeneratedToken).id!)
    const used = routes[0].map(h => all.find(s => s.node.peerId.toString() === h.peerId)!)
    servers = servers.filter(s => !used.includes(s)) // stopped below, where withdrawing fails
    try {
      await Promise.all(used.map(async s => await s.node.stop())) // both hops crash between two steps
      for (;;) {
        const next = await generation.next()
        if (next.done === true) break
        if (next.value.id !== null) ids.push(next.value.id)
      }
    } finally {
      await Promise.all(used.map(async s => await s.stop().catch(() => {}))) // frees their blocks
    }
    assert.deepEqual(ids, EXPECTED[0].ids.slice(0, 20))
    const spare = all.filter(s => !used.includes(s)).map(s => s.node.peerId.toString())
    assert.deepEqual(routes.at(-1)!.map(h => h.peerId), spare)
  })

  for (const signal of ['SIGKILL', 'SIGSTOP'] as const) {
    it(`a middle server ${signal === 'SIGKILL' ? 'killed' : 'hung'} (${signal}) mid-generation: failover gives the same 60 tokens`, async function () {
      if (signal === 'SIGSTOP' && !POSIX_SIGNALS) this.skip() // Windows cannot stop a process from outside
      const name = `failover-${signal}`
      const nodeArgs = ['--model', BUNDLED_MODEL, '--model-name', name, '--initial-peers', initialPeers[0], '--host-addrs', '/ip4/127.0.0.1/tcp/0',
        '--throughput', '1', '--blocks', '2:4']
      const children: ChildProcess[] = []
      try {
        await serve(BUNDLED_MODEL, name, [0, 2])
        await serve(BUNDLED_MODEL, name, [4, 5])
        const middles = [await startNode(nodeArgs), await startNode(nodeArgs)]
        children.push(...middles.map(m => m.process))
        const routes: Array<{ route: RouteHop[], reason: string }> = []
        const model = await connect(BUNDLED_MODEL, name, { stepTimeoutMs: 10_000, onRoute: (route, reason) => routes.push({ route: [...route], reason }) })
        const prompt = EXPECTED[0].promptIds
        const local = await LocalModel.load(BUNDLED_MODEL, { backend: BACKEND })
        const reference = await collect(generate(local, prompt, { maxNewTokens: 60, ignoreEos: true }))
        local.close()

        const generation = generate(model, prompt, { maxNewTokens: 60, ignoreEos: true })
        const ids: number[] = []
        for (let i = 0; i < 30; i++) ids.push(((await generation.next()).value as GeneratedToken).id!)
        const used = routes[0].route[1].peerId
        const victim = middles.find(m => m.peerId === used)!
        victim.process.kill(signal)
        for (;;) {
          const next = await generation.next()
          if (next.done === true) break
          if (next.value.id !== null) ids.push(next.value.id)
        }
        assert.deepEqual(ids, reference.ids)
        assert.equal(routes.length, 2, `one failover: ${routes.map(r => r.reason).join('; ')}`)
        const other = middles.find(m => m !== victim)!.peerId
        assert.deepEqual(routes[1].route.map(h => [h.peerId === other ? 'other' : h.peerId === used ? 'victim' : 'edge', `${h.start}:${h.end}`]),
          [['edge', '0:2'], ['other', '2:4'], ['edge', '4:5']])
        assert.match(routes[1].reason, new RegExp(`blocks 2:4 failed on ${used}`))
        // Only the failed span was replayed: the edge servers computed every token exactly once.
        assert.deepEqual(servers.map(s => s.tokensServed), [prompt.length + 59, prompt.length + 59])
      } finally {
        children.forEach(c => c.kill('SIGKILL'))
      }
    })
  }
})
