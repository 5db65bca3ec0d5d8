// Spot checks (issue 21) against real servers on a loopback swarm: a server that computes wrong and
// claims to be the fastest (so routing takes it) is caught by a second and a third server holding
// the same blocks, banned, and its step recomputed, so the client's tokens are the reference's.
// Honest servers are never convicted, and a dispute with no third server bans nobody.

import assert from 'node:assert/strict'
import { collect, generate as generateLocally } from '../src/inference/generate.js'
import { LocalModel } from '../src/inference/model.js'
import type { LoadOptions } from '../src/inference/load-span.js'
import { createNode, type BmrtNode } from '../src/p2p/node.js'
import { DistributedModel } from '../src/petals/client/distributed-model.js'
import type { SpotCheckResult } from '../src/petals/client/spot-check.js'
import { RemoteSpan } from '../src/petals/client/remote-span.js'
import { buildEvidence, checkEvidence, decodeEvidence, encodeEvidence, EvidenceError, relativeDistance, spanRerun, verifyTolerance, VERIFY_TOLERANCE, type Evidence } from '../src/petals/protocol/evidence.js'
import { checkReceipt, decodeReceipt, ReceiptError, ReceiptSigner, sha256 } from '../src/petals/protocol/receipts.js'
import { INFERENCE_PROTOCOL, WireDType } from '../src/petals/protocol/wire.js'
import { privateKeyOf } from '../src/p2p/identity.js'
import { BlockServer } from '../src/petals/server/server.js'
import { accuse, claimSpeed, corrupt, lieInReceipts, slowDown, type Corruption, type CorruptionCounts, type CorruptionSchedule } from '../src/testing/hostile-server.js'
import { EXPECTED } from './expected.js'
import { BUNDLED_MODEL, randomHidden, scratchDir, waitFor } from './helpers.js'
import { CreditLedger } from '../src/api/credits.js'
import { JobStore } from '../src/api/job-store.js'
import { join } from 'node:path'
import { TARGET_BACKEND } from './raw-peer.js'

describe('spot checks against servers that compute wrong', function () {
  this.timeout(180_000)
  let entry: BmrtNode
  let initialPeers: string[]
  let servers: BlockServer[] = []
  let clients: DistributedModel[] = []

  before(async () => {
    entry = await createNode({ role: 'server' })
    initialPeers = entry.getMultiaddrs().map(String)
  })
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup()
    await Promise.all(clients.map(async c => await c.close()))
    await Promise.all(servers.map(async s => await s.stop()))
    clients = []
    servers = []
  })
  after(async () => {
    await entry.stop()
  })

  let counts: CorruptionCounts = { outputs: 0, wrong: 0, firstWrong: null }
  /** A server of blocks 0:5 (or `blocks`) of `model`, loaded as `load` says. */
  const startServer = async (model: string, load: LoadOptions, blocks = { start: 0, end: 5 }): Promise<void> => {
    servers.push(await BlockServer.start({ modelDir: BUNDLED_MODEL, modelName: model, blocks, initialPeers, listen: ['/ip4/127.0.0.1/tcp/0'], throughput: 1, updatePeriodMs: 600_000, load }))
  }
  /**
   * `count` servers of blocks 0:5; the first computes wrong in the way given, when `schedule`
   * says, and claims to be the fastest.
   */
  const swarm = async (model: string, count: number, how?: Corruption, schedule: CorruptionSchedule = {}): Promise<string[]> => {
    for (let i = 0; i < count; i++) await startServer(model, { backend: TARGET_BACKEND })
    if (how !== undefined) {
      counts = corrupt(servers[0], how, schedule)
      await claimSpeed(servers[0], model)
    }
    return servers.map(s => s.node.peerId.toString())
  }
  const connect = async (model: string, verifyRate: number, peers: readonly string[], log: string[] = [], checks: SpotCheckResult[] = []): Promise<DistributedModel> => {
    const client = await DistributedModel.load(BUNDLED_MODEL, {
      initialPeers, modelName: model, verifyRate, onProgress: m => log.push(m), onRoute: (_route, reason) => log.push(reason), onSpotCheck: result => checks.push(result)
    })
    clients.push(client)
    await waitFor(`the client to see ${peers.length} servers`, async () => {
      await client.manager.update()
      return peers.every(p => client.manager.servers.some(s => s.peerId === p))
    }, 60_000)
    return client
  }
  /** A credit ledger in a job store of its own, removed after the test. */
  const openLedger = async (): Promise<CreditLedger> => {
    const scratch = await scratchDir()
    const store = await JobStore.open(join(scratch.dir, 'jobs.jsonl'))
    const ledger = new CreditLedger(store, { flushMs: 10 })
    cleanups.push(async () => { await ledger.close(); await store.close(); await scratch.cleanup() })
    return ledger
  }
  /** The first 10 reference tokens of EXPECTED[0], and the ids the client generated instead. */
  const generate = async (client: DistributedModel): Promise<{ got: number[], expected: number[] }> => {
    const { promptIds, ids } = EXPECTED[0]
    const result = await collect(client.generate(promptIds, { maxNewTokens: 10 }))
    return { got: result.ids, expected: ids.slice(0, 10) }
  }

  const cases: Array<[string, Corruption, CorruptionSchedule]> = [
    ['adds noise of 0.1 x RMS', { noise: 0.1 }, {}],
    ['skips its layers', 'skip layers', {}],
    ['answers zeros', 'zeros', {}],
    ['is right for 4 steps, then adds noise', { noise: 0.1 }, { rightSteps: 4 }],
    // The first session on it is the unchecked client's below; the second, the checked client's.
    ['adds noise in one session only (the checked client\'s)', { noise: 0.1 }, { onlySession: 1 }],
    ['adds noise on a random third of its steps (guessing which go unchecked)', { noise: 0.1 }, { share: 1 / 3 }]
  ]
  for (const [i, [name, how, schedule]] of cases.entries()) {
    it(`catches a server that ${name} on its first wrong step, bans it, and gives the reference tokens`, async () => {
      const model = `stories-spot-${i}`
      const [hostile, ...honest] = await swarm(model, 3, how, schedule)

      // The lie works: routing takes the hostile server (and with checks off, its output is used;
      // skipped layers and zeros change the text, noise of 0.1 x RMS not always on this small model).
      const trusting = await connect(model, 0, [hostile, ...honest])
      assert.deepEqual((await trusting.manager.inferenceRoute(0, 5, 64)).map(h => h.peerId), [hostile], 'routing prefers the hostile server')
      const unchecked = await generate(trusting)
      if (how === 'skip layers' || how === 'zeros') assert.notDeepEqual(unchecked.got, unchecked.expected, 'without checks, the hostile server changes the output')

      const log: string[] = []
      const checks: SpotCheckResult[] = []
      const client = await connect(model, 1, [hostile, ...honest], log, checks)
      const ledger = await openLedger()
      client.watchWork(ledger)
      Object.assign(counts, { outputs: 0, wrong: 0, firstWrong: null }) // the checked client's steps from here
      const { got, expected } = await generate(client)
      assert.deepEqual(got, expected, `the reference tokens:\n${log.join('\n')}`)
      assert.ok(client.manager.bans.isBanned(hostile), 'the hostile server is banned')
      assert.ok(honest.every(p => !client.manager.bans.isBanned(p)), 'no honest server is banned')
      const caught = log.find(l => l.includes(`failed on ${hostile}`))
      assert.match(caught ?? '', /computed wrong and is banned/, log.join('\n'))
      assert.equal(counts.wrong, 1, 'caught on its first wrong step')
      assert.equal(counts.outputs, counts.firstWrong, 'and not used after it')
      console.log(`      ${caught?.slice(0, 260) ?? ''}`)

      // The evidence: the hostile server's own signed receipts, which a node that holds the blocks
      // (here the last honest server) checks from bytes, and finds the signed output wrong.
      const evidence = checks.find(c => c.outcome === 'server wrong')?.evidence
      assert.ok(evidence !== undefined && evidence !== null, 'the conviction carries evidence')
      const verdict = await checkEvidence(decodeEvidence(encodeEvidence(evidence)), hostile, spanRerun(servers[2].span!, model, 'f32'))
      assert.equal(verdict.wrong, true, JSON.stringify(verdict))
      assert.equal(evidence.steps.length, counts.firstWrong, 'one receipt per step of the session up to the wrong one: the prompt, then each token')
      console.log(`      evidence: ${evidence.steps.length} receipts, ${encodeEvidence(evidence).length} bytes; on a third node the signed output is ${verdict.distance.toExponential(2)} away (tolerance ${verdict.tolerance})`)

      // Credits: the hostile server's receipts of the session were all in the evidence, so it keeps
      // none; the honest servers earned theirs (the replacement's session, and the checks).
      await ledger.flush()
      const credits = new Map(ledger.credits.map(c => [c.peer_id, c.block_tokens]))
      assert.equal(credits.get(hostile) ?? 0, 0, 'the disproven work earns nothing')
      assert.ok(honest.some(p => (credits.get(p) ?? 0) > 0), 'honest work earns credits')
    })
  }

  it('below rate 1, checks run beside the steps: a conviction takes effect at the next step, and from then on every token is the honest model\'s', async () => {
    // Blocks 0:3 on a hostile server (zeros, claiming to be the fastest) and two honest ones, 3:5 on
    // one more: a conviction replaces the first hop and rebuilds the second from honest inputs.
    const model = 'stories-spot-background'
    for (let i = 0; i < 3; i++) await startServer(model, { backend: TARGET_BACKEND }, { start: 0, end: 3 })
    await startServer(model, { backend: TARGET_BACKEND }, { start: 3, end: 5 })
    corrupt(servers[0], 'zeros')
    await claimSpeed(servers[0], model)
    const peers = servers.map(s => s.node.peerId.toString())
    const hostile = peers[0]
    const log: string[] = []
    const client = await connect(model, 0.5, peers, log)
    const { promptIds } = EXPECTED[0]
    const ids: number[] = []
    let honestFrom: number | null = null // the first token computed after the conviction took effect
    for await (const token of client.generate(promptIds, { maxNewTokens: 24, ignoreEos: true })) {
      if (honestFrom === null && log.some(l => l.includes(`failed on ${hostile}`))) honestFrom = ids.length
      if (token.id !== null) ids.push(token.id)
    }
    assert.ok(client.manager.bans.isBanned(hostile), log.join('\n'))
    assert.ok(honestFrom !== null && honestFrom < ids.length, `the conviction took effect within the generation: ${log.join('\n')}`)
    assert.match(log.find(l => l.includes(`failed on ${hostile}`))!, /computed wrong and is banned/)
    // From then on, each token is the one the model gives after the tokens before it (the wrong
    // ones before the conviction included): the whole chain was rebuilt from honest inputs.
    const local = await LocalModel.load(BUNDLED_MODEL, { backend: TARGET_BACKEND })
    try {
      for (let n = honestFrom; n < ids.length; n++) {
        const next = await collect(generateLocally(local, [...promptIds, ...ids.slice(0, n)], { maxNewTokens: 1, ignoreEos: true }))
        assert.equal(ids[n], next.ids[0], `token ${n} of ${ids.length} (the conviction took effect at ${honestFrom})`)
      }
    } finally {
      local.close()
    }
    console.log(`      caught in the background; tokens ${honestFrom}-${ids.length - 1} of ${ids.length} are the honest model's`)
  })

  it('never accuses honest servers of mixed backends and formats, checking every step', async () => {
    const model = 'stories-spot-honest'
    const mix: LoadOptions[] = TARGET_BACKEND === 'native'
      ? [{ backend: 'native' }, { backend: 'native', format: 'bf16' }, { backend: 'native', format: 'int8' }, { backend: 'js' }]
      : [{ backend: 'js' }, { backend: 'js' }, { backend: 'js' }]
    for (const load of mix) await startServer(model, load)
    const peers = servers.map(s => s.node.peerId.toString())
    const log: string[] = []
    const checks: SpotCheckResult[] = []
    const client = await connect(model, 1, peers, log, checks)
    for (let i = 0; i < 3; i++) await collect(client.generate(EXPECTED[i % EXPECTED.length].promptIds, { maxNewTokens: 20 }))
    assert.ok(checks.length >= 60, `every step checked: ${checks.length}`)
    assert.deepEqual(checks.filter(c => c.outcome !== 'agreed'), [], log.join('\n'))
    assert.ok(peers.every(p => !client.manager.bans.isBanned(p)), log.join('\n'))
    const worst = Math.max(...checks.map(c => c.outcome === 'agreed' ? c.distance : 0))
    console.log(`      ${checks.length} checks over ${mix.map(l => `${l.backend}${l.format !== undefined ? ` ${l.format}` : ''}`).join(', ')}: all agreed, the largest distance ${worst.toExponential(2)}`)
  })

  it('bans nobody when two servers disagree and no third holds the blocks; at rate 1 the step is not delivered, below it is', async () => {
    const model = 'stories-spot-two'
    const [hostile, honest] = await swarm(model, 2, { noise: 0.1 })
    const log: string[] = []
    // At rate 1: the step waits and is tried again (maxRetries 2: at once, then after 1 s), and the
    // generation fails with the reason rather than give tokens nobody could check.
    const strict = await DistributedModel.load(BUNDLED_MODEL, { initialPeers, modelName: model, verifyRate: 1, maxRetries: 2, onProgress: m => log.push(m) })
    clients.push(strict)
    await waitFor('the client to see both servers', async () => { await strict.manager.update(); return strict.manager.servers.length === 2 })
    await assert.rejects(generate(strict), /blocks 0:5 failed 3 times with no other server left; giving up\. Last error: .* disagree on blocks 0:5 \(no third server\): the step is not delivered/)
    assert.ok(![hostile, honest].some(p => strict.manager.bans.isBanned(p)), log.join('\n'))
    assert.ok(log.some(l => /no third server holds them: banned nobody/.test(l)), log.join('\n'))
    // Below rate 1, unchecked steps reach the caller anyway: a disputed one is kept.
    const lenient = await connect(model, 0.5, [hostile, honest])
    const { got } = await generate(lenient)
    assert.equal(got.length, 10)
    assert.ok(![hostile, honest].some(p => lenient.manager.bans.isBanned(p)))
  })

  it('at rate 1 gives no step that no second server could check, and below it does', async () => {
    const model = 'stories-spot-alone'
    const [alone] = await swarm(model, 1)
    const strict = await DistributedModel.load(BUNDLED_MODEL, { initialPeers, modelName: model, verifyRate: 1, maxRetries: 1 })
    clients.push(strict)
    await assert.rejects(generate(strict), new RegExp(`blocks 0:5 failed 2 times with no other server left; giving up\\. Last error: no second server holds blocks 0:5, to check ${alone}'s step: the step is not delivered`))
    assert.ok(!strict.manager.bans.isBanned(alone), 'nobody is to blame')
    const { got, expected } = await generate(await connect(model, 0.5, [alone]))
    assert.deepEqual(got, expected)
  })

  it('publishes the evidence: servers of the same blocks check it and name the server, and another client checks it too and avoids it; a server that names an honest one convinces nobody', async () => {
    const model = 'stories-spot-publish'
    const [hostile, ...honest] = await swarm(model, 4, { noise: 0.1 })
    const catcher = await connect(model, 1, [hostile, ...honest])
    const { got, expected } = await generate(catcher)
    assert.deepEqual(got, expected)
    assert.ok(catcher.manager.bans.isBanned(hostile))
    // The catcher handed the evidence to the three honest servers; each checked it on its blocks.
    await waitFor('the honest servers to name the hostile one', () => servers.slice(1).every(s => s.disputes.disproven.includes(hostile)))
    // Choosing and rebalancing blocks, they count it as serving nothing (so they do not leave its blocks to it).
    const seen = await (servers[1] as unknown as { swarmSpans: () => Promise<Array<{ peerId: string }>> }).swarmSpans()
    assert.deepEqual(seen.map(s => s.peerId).sort(), [...honest].sort())

    // A client that never checks: the records name the hostile server, it fetches the evidence from
    // one of them, checks it on another, and routes around the server that still claims 1e6 tokens/s.
    const log: string[] = []
    const other = await connect(model, 0, [hostile, ...honest], log)
    await waitFor('the other client to ban the hostile server', () => other.manager.bans.isBanned(hostile))
    const banned = log.find(l => l.includes(`holds evidence against ${hostile}`))
    assert.match(banned ?? '', /checked on 12D3\w+, its signed output is [\d.e+-]+ off \(tolerance [\d.]+\): banned for 15 min/, log.join('\n'))
    const lister = honest.find(p => banned!.startsWith(p))
    const checker = /checked on (\w+)/.exec(banned!)![1]
    assert.ok(lister !== undefined && honest.includes(checker) && checker !== lister, `named by one honest server, checked on another: ${banned!}`)
    const before = counts.outputs
    const theirs = await generate(other)
    assert.deepEqual(theirs.got, theirs.expected, 'with checks off, the tokens are the reference\'s')
    assert.equal(counts.outputs, before, 'the hostile server computed nothing for it')
    console.log(`      ${banned!.slice(0, 200)}`)

    // An honest server's own receipts, named as evidence by another server that lies: the client
    // checks them, they hold up, and the honest server stays.
    const [accused, liar] = [honest[0], honest[1]]
    const hidden = other.config.hiddenSize
    const remote = await RemoteSpan.open(other.node, { peerId: accused, start: 0, end: 5 }, {
      protocol: INFERENCE_PROTOCOL, model, maxLength: 16, batch: 1, hiddenSize: hidden, dtype: 'f32', format: 'f32'
    })
    let evidence: Evidence
    try {
      const input = randomHidden(4, hidden)
      const output = await remote.step(input, 4, 0)
      evidence = buildEvidence(accused, remote.receipts, input, { from: 0, output }, { batch: 1, total: 4, hidden }, 'f32')
    } finally {
      remote.close()
    }
    // Handed to the servers, it is checked and not kept; altered, it is refused with the reason.
    const answers = await other.evidence.publish(accused, evidence)
    assert.equal(answers.length, 2, 'the other two honest servers (the hostile one is banned)')
    for (const answer of answers) assert.ok('kept' in answer && !answer.kept && answer.distance < 1e-5, JSON.stringify(answer))
    const altered = decodeEvidence(encodeEvidence(evidence))
    altered.steps[0].input[0] ^= 1
    for (const answer of await other.evidence.publish(accused, altered)) assert.match('error' in answer ? answer.error : '', /step 0's input is not the one its receipt hashes/)
    assert.ok(servers.every(s => !s.disputes.disproven.includes(accused)))
    await accuse(servers[2], model, accused, evidence)
    await waitFor('the other client to check the lie', async () => {
      await other.manager.update()
      return log.some(l => l.startsWith(`${liar} names ${accused} as disproven`))
    })
    assert.match(log.find(l => l.startsWith(`${liar} names ${accused} as disproven`))!, /its signed output holds up \([\d.e+-]+, tolerance [\d.e+-]+\): not banned/)
    assert.ok(!other.manager.bans.isBanned(accused), 'one server\'s word evicts nobody')
  })

  it('routes by the speed a server shows, not the one it announces: a slow server claiming 1e6 tokens/s is used for one session', async () => {
    const model = 'stories-spot-speed'
    const [liar, ...honest] = await swarm(model, 3)
    slowDown(servers[0], 20) // 20 ms a step, where the honest servers take about 1 ms
    await claimSpeed(servers[0], model)
    const routes: string[][] = []
    const client = await DistributedModel.load(BUNDLED_MODEL, {
      initialPeers, modelName: model, verifyRate: 0, onRoute: (route, reason) => { if (reason === 'open') routes.push(route.map(h => h.peerId)) }
    })
    clients.push(client)
    await waitFor('the client to see 3 servers', async () => {
      await client.manager.update()
      return [liar, ...honest].every(p => client.manager.servers.some(s => s.peerId === p))
    }, 60_000)
    for (let i = 0; i < 2; i++) {
      const { got, expected } = await generate(client)
      assert.deepEqual(got, expected, 'a slow server computes right')
    }
    assert.deepEqual(routes[0], [liar], 'the first session believes the record')
    assert.ok(honest.includes(routes[1][0]) && routes[1].length === 1, `the second goes by what the first measured: ${routes[1].join(', ')}`)
    const measured = client.manager.speeds.rps(liar)!
    assert.ok(measured < 1000, `the liar's measured speed, ${measured.toFixed(0)} blocks/s, is far below the 1e6 it claims`)
    assert.ok(!client.manager.bans.isBanned(liar), 'slow is not wrong: no ban')
    console.log(`      the liar claimed 1e6 blocks/s and showed ${measured.toFixed(0)}; the honest server of the second session ${client.manager.speeds.rps(routes[1][0])?.toFixed(0) ?? 'not measured yet'}`)
  })

  it('credits only receipts that hold up: a server signing with another key, or replaying a receipt, earns nothing for it', async () => {
    const model = 'stories-spot-credits'
    const [forger, replayer, honest] = await swarm(model, 3)
    lieInReceipts(servers[0], { forgeWith: entry })
    lieInReceipts(servers[1], 'replay')
    const log: string[] = []
    const client = await connect(model, 0, [forger, replayer, honest], log)
    const ledger = await openLedger()
    client.watchWork(ledger)
    for (const liar of [0, 1]) {
      // Each liar in turn claims to be the fastest, so that routing takes it. The forger's steps
      // were accepted (a client checks signatures only in the ledger), so after its turn this client
      // knows its real speed, which routing trusts over any claim: about 1 ms for the five blocks,
      // as much as loopback round trips differ, so it would be chosen over the replayer by chance.
      // It is banned for the second turn to keep it out of the way.
      if (liar === 1) client.manager.bans.convict(forger, 600_000)
      await Promise.all(servers.map(async (s, i) => await claimSpeed(s, model, i === liar ? 1e6 : 1)))
      await waitFor('routing to take the liar', async () => {
        await client.manager.update()
        const route = await client.manager.inferenceRoute(0, 5, 64)
        return route.length === 1 && route[0].peerId === [forger, replayer][liar]
      })
      const { got, expected } = await generate(client)
      assert.deepEqual(got, expected, `the reference tokens:\n${log.join('\n')}`)
    }
    await ledger.flush()
    const credit = (peerId: string): number => ledger.credits.find(c => c.peer_id === peerId)?.receipts ?? 0
    assert.equal(credit(forger), 0, 'receipts not signed by the server earn nothing')
    assert.ok((ledger.refused.get(forger) ?? 0) >= 10, `each of the forger's 10 steps was refused: ${ledger.refused.get(forger) ?? 0}`)
    // The replayer's first receipt is its own; the next step's answer carried it again, the client
    // refused it as a failed hop, and the session went on elsewhere.
    assert.equal(credit(replayer), 1, log.join('\n'))
    assert.match(log.join('\n'), new RegExp(`${replayer} sent a bad receipt: the receipt's position is 0, not \\d+`))
    assert.ok(!client.manager.bans.isBanned(honest))
  })

  it('evidence holds a server only to what it signed: an honest server\'s receipts acquit it, and altered evidence proves nothing', async () => {
    const model = 'stories-spot-evidence'
    const [accused, checker] = await swarm(model, 2)
    const client = await connect(model, 0, [accused, checker])
    const hidden = client.config.hiddenSize
    const remote = await RemoteSpan.open(client.node, { peerId: accused, start: 0, end: 5 }, {
      protocol: INFERENCE_PROTOCOL, model, maxLength: 16, batch: 1, hiddenSize: hidden, dtype: 'f32', format: 'f32'
    })
    try {
      const input = randomHidden(7, hidden)
      await remote.step(input.subarray(0, 5 * hidden), 5, 0)
      const last = await remote.step(input.subarray(5 * hidden), 2, 5)
      assert.deepEqual(remote.receipts.map(r => [r.position, r.tokens]), [[0, 5], [5, 2]])
      const make = (): Evidence => buildEvidence(accused, remote.receipts, input, { from: 5, output: last }, { batch: 1, total: 7, hidden }, 'f32')
      const span = spanRerun(servers[1].span!, model, 'f32')
      const verdict = await checkEvidence(make(), accused, span)
      assert.equal(verdict.wrong, false, JSON.stringify(verdict))
      assert.ok(verdict.distance < 1e-5, `an honest f32 server's output is the checker's: ${verdict.distance}`)

      const altered: Array<[string, (e: Evidence) => void, RegExp]> = [
        ['an input byte', e => { e.steps[0].input[3] ^= 1 }, /step 0's input is not the one its receipt hashes/],
        ['the disputed output', e => { e.steps[1].output![0] ^= 1 }, /step 1's output is not the one its receipt hashes/],
        ['the first step left out', e => { e.steps.shift() }, /step 0 starts at position 5, not 0/],
        ['no disputed output', e => { delete e.steps[1].output }, /disputes no output/],
        ['a receipt re-signed by another node', e => { e.steps[1].receipt = new ReceiptSigner(privateKeyOf(servers[1].node)).sign(decodeReceipt(e.steps[1].receipt!)) }, /step 1: the receipt is not signed by/]
      ]
      for (const [what, alter, error] of altered) {
        const evidence = make()
        alter(evidence)
        await assert.rejects(checkEvidence(evidence, accused, span), (err: Error) => err instanceof EvidenceError && error.test(err.message), what)
      }
      await assert.rejects(checkEvidence(make(), checker, span), /the receipt is not signed by/, 'evidence names the server that signed it')

      // A rewind into the prompt overwrites part of a receipted step: those receipts no longer tile
      // the session, so there is no evidence (a spot check still bans; it only cannot prove it).
      const rewound = await remote.step(input.subarray(3 * hidden, 4 * hidden), 1, 3)
      assert.throws(() => buildEvidence(accused, remote.receipts, input.subarray(0, 4 * hidden), { from: 3, output: rewound }, { batch: 1, total: 4, hidden }, 'f32'),
        /the receipts do not tile the session: one starts at 3, after 5 tokens/)
    } finally {
      remote.close()
    }
  })

  it('refuses a receipt that does not say what was asked and answered', async () => {
    const node = await createNode({ role: 'client' })
    try {
      const signer = new ReceiptSigner(privateKeyOf(node))
      const input = new Uint8Array([1, 2, 3])
      const output = new Uint8Array([4, 5, 6])
      const session = new Uint8Array(16).fill(9)
      const asked = { model: 'm', start: 0, end: 5, session, position: 3, tokens: 1, batch: 1, dtype: WireDType.F32, input, output, format: 'f32' as const }
      const receipt = { model: 'm', start: 0, end: 5, session, position: 3, tokens: 1, batch: 1, dtype: WireDType.F32, inputSha256: sha256(input), outputSha256: sha256(output), format: 'f32' }
      assert.equal(checkReceipt(signer.sign(receipt), asked).position, 3)
      const lies: Array<[Partial<typeof receipt>, RegExp]> = [
        [{ position: 4 }, /the receipt's position is 4, not 3/],
        [{ end: 4 }, /the receipt's end is 4, not 5/],
        [{ session: new Uint8Array(16) }, /another session/],
        [{ outputSha256: sha256(input) }, /output hash is not that of the answer/],
        [{ format: 'int4' }, /names weight format int4, but the server announced f32/],
        [{ format: 'fp8' }, /unknown weight format 'fp8'/]
      ]
      for (const [lie, error] of lies) assert.throws(() => checkReceipt(signer.sign({ ...receipt, ...lie }), asked), (err: Error) => err instanceof ReceiptError && error.test(err.message))
      assert.throws(() => checkReceipt(undefined, asked), /carries no receipt/)
      assert.throws(() => checkReceipt({ receipt: new Uint8Array([255, 255]), signature: new Uint8Array(64) }, asked), /does not decode/)
    } finally {
      await node.stop()
    }
  })

  it('compares with a tolerance from both servers\' formats', () => {
    const a = new Float32Array([1, 2, 3, 4])
    assert.equal(relativeDistance(a, a), 0)
    assert.ok(Math.abs(relativeDistance(new Float32Array([1.1, 2.2, 3.3, 4.4]), a) - 0.1) < 1e-6)
    assert.equal(relativeDistance(a, new Float32Array(4)), Infinity)
    assert.equal(verifyTolerance('f32', 'int8'), VERIFY_TOLERANCE.f32 + VERIFY_TOLERANCE.int8)
    assert.equal(verifyTolerance('bf16', undefined), VERIFY_TOLERANCE.bf16 + VERIFY_TOLERANCE.f32)
    assert.ok(verifyTolerance('f32', 'f32') < 0.1 && verifyTolerance('bf16', 'f16') < 0.1, 'noise of 0.1 x RMS is caught between f32, f16 and bf16')
  })
})
