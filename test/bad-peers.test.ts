// Hostile and broken clients against a real server: each gets an error frame saying what was
// wrong (or, when it vanished, nothing), its caches are freed, and a well-behaved session running
// alongside finishes with the right tokens.

import assert from 'node:assert/strict'
import { collect } from '../src/inference/generate.js'
import { createNode, type BmrtNode } from '../src/p2p/node.js'
import { ErrorCode, INFERENCE_PROTOCOL, INFO_PROTOCOL, Info, InfoRequest, Request, Response, WireDType } from '../src/petals/protocol/wire.js'
import { DistributedModel } from '../src/petals/client/distributed-model.js'
import type { BlockServer } from '../src/petals/server/server.js'
import { EXPECTED } from './expected.js'
import { BUNDLED_MODEL, waitFor } from './helpers.js'
import { BUNDLED_HIDDEN as HIDDEN, hiddenTensor as hidden, openRequest, RawPeer, refusal, sessionsOpen, startTargetServer } from './raw-peer.js'

const MODEL = 'stories-bad-peers'
const IDLE_MODEL = 'stories-idle'
const GREEDY_MODEL = 'stories-greedy'
const SHARED_MODEL = 'stories-shared'

describe('a server facing bad peers', function () {
  let entry: BmrtNode
  let server: BlockServer
  let idle: BlockServer
  let attacker: RawPeer
  let model: DistributedModel

  before(async () => {
    entry = await createNode({ role: 'server' })
    const initialPeers = entry.getMultiaddrs().map(String)
    // Its good session sits idle while bad peers ask for more cache than is left: never taken back here.
    server = await startTargetServer(MODEL, { initialPeers, idleReclaimMs: 600_000, load: { maxCacheTokens: 256 } })
    // A second server that cuts idle sessions off after a second.
    idle = await startTargetServer(IDLE_MODEL, { initialPeers, stepTimeoutMs: 1000 })
    attacker = await RawPeer.start()
    model = await DistributedModel.load(BUNDLED_MODEL, { initialPeers, modelName: MODEL })
  })
  after(async () => {
    await model.close()
    await attacker.stop()
    await idle.stop()
    await server.stop()
    await entry.stop()
  })

  const dial = async (protocol = INFERENCE_PROTOCOL, target = server): ReturnType<RawPeer['dial']> => await attacker.dial(target, protocol)
  const open = (overrides: Parameters<typeof openRequest>[1] = {}): Request => openRequest(MODEL, overrides)

  it('refuses each bad request with its error, frees its caches, and keeps serving a good session', async () => {
    // A good conversation, half done while the bad peers come and go.
    const conversation = await model.session(64)
    const { promptIds, ids } = EXPECTED[0]
    const first = await collect(conversation.generate(promptIds, { maxNewTokens: 10 }))
    assert.deepEqual(first.ids, ids.slice(0, 10))
    const baseline = server.span!.cacheUsage()
    assert.deepEqual([baseline.sessions, baseline.reserved], [1, 64])
    const sessionsFreed = async (): Promise<void> => {
      await sessionsOpen(server, 1)
      assert.equal(server.span!.cacheUsage().reserved, 64)
    }

    const cases: Array<{ what: string, frames: Request[], code: ErrorCode, message: RegExp }> = [
      { what: 'a step before any Open (an unknown session)', frames: [{ step: { hidden: hidden(1) } }], code: ErrorCode.BAD_REQUEST, message: /starts with an Open frame/ },
      { what: 'another model', frames: [open({ model: 'llama-70b' })], code: ErrorCode.NOT_SERVED, message: /serves stories-bad-peers, not llama-70b/ },
      { what: 'blocks it does not hold', frames: [open({ start: 3, end: 9 })], code: ErrorCode.NOT_SERVED, message: /blocks 3:9 are not within this server's 0:5/ },
      { what: 'an absurd max_length', frames: [open({ maxLength: 2_000_000_000 })], code: ErrorCode.TOO_LONG, message: /max_length must be 1\.\.512/ },
      // Longer than the model's context (max_position_embeddings 512), below the 8192 the options allow.
      { what: 'a session longer than the model\'s context', frames: [open({ maxLength: 8192 })], code: ErrorCode.TOO_LONG, message: /max_length must be 1\.\.512, got 8192/ },
      { what: 'an absurd batch', frames: [open({ batch: 100_000 })], code: ErrorCode.TOO_LONG, message: /batch must be 1\.\.64/ },
      // 256 tokens per block, 64 of them taken by the good session: 512 is a fine max_length, but does not fit.
      { what: 'more cache than is left', frames: [open({ maxLength: 512 })], code: ErrorCode.CACHE_FULL, message: /needs 2560; the sessions idle for 600 s or more would not make room/ },
      { what: 'a wrong hidden size', frames: [open(), { step: { hidden: hidden(2, 0.5, [1, 2, 32]) } }], code: ErrorCode.BAD_REQUEST, message: /hidden size 32, but the model's is 64/ },
      { what: 'a wrong batch', frames: [open(), { step: { hidden: hidden(2, 0.5, [3, 2, HIDDEN]) } }], code: ErrorCode.BAD_REQUEST, message: /batch of 3 sequences, but the session was opened with 1/ },
      { what: 'a byte count that does not match the shape', frames: [open(), { step: { hidden: { ...hidden(2), data: new Uint8Array(100) } } }], code: ErrorCode.BAD_REQUEST, message: /needs 512 bytes, the frame has 100/ },
      { what: 'NaN hidden states', frames: [open(), { step: { hidden: hidden(1, Number.NaN) } }], code: ErrorCode.BAD_REQUEST, message: /NaN or infinite/ },
      { what: 'a position beyond the cache', frames: [open(), { step: { position: 5, hidden: hidden(1) } }], code: ErrorCode.BAD_REQUEST, message: /position 5 is beyond the 0 tokens cached/ },
      { what: 'more tokens than max_length', frames: [open({ maxLength: 4 }), { step: { hidden: hidden(5) } }], code: ErrorCode.TOO_LONG, message: /holds 4 tokens; 0 \+ 5 new would exceed it/ },
      { what: 'an Open and a Step in one frame', frames: [{ ...open(), step: { hidden: hidden(1) } }], code: ErrorCode.BAD_REQUEST, message: /an Open or a Step, not both/ },
      { what: 'a second Open', frames: [open(), open()], code: ErrorCode.BAD_REQUEST, message: /this session is open already: one Open per stream/ },
      { what: 'a guessable session nonce', frames: [open({ session: new Uint8Array(4) })], code: ErrorCode.BAD_REQUEST, message: /a session nonce has 16 to 64 bytes, got 4/ },
      { what: 'a session nonce of 100 kB', frames: [open({ session: new Uint8Array(100_000) })], code: ErrorCode.BAD_REQUEST, message: /a session nonce has 16 to 64 bytes, got 100000/ },
      // What a peer sent is quoted in part only: an error frame never grows with the input.
      { what: 'a 100,000-character model name', frames: [open({ model: 'x'.repeat(100_000) })], code: ErrorCode.NOT_SERVED, message: /not x{64}\.\.\. \(100000 characters\)$/ },
      { what: 'a shape of 100,000 dimensions', frames: [open(), { step: { hidden: { ...hidden(1), shape: new Array(100_000).fill(1) } } }], code: ErrorCode.BAD_REQUEST, message: /got \[1, 1, 1, 1, \.\.\. \(100000 dimensions\)\]$/ },
      // Finite, but no fp16 answer can carry what the blocks make of them.
      { what: 'hidden states far out of range', frames: [open({ dtype: WireDType.F16 }), { step: { hidden: hidden(1, 1e30) } }], code: ErrorCode.BAD_REQUEST, message: /turned these hidden states into values f16 cannot carry/ }
    ]
    for (const { what, frames: requests, code, message } of cases) {
      const { frames } = await dial()
      for (const request of requests) await frames.write(Request, request)
      const error = await refusal(frames)
      assert.equal(error.code, code, `${what}: ${error.message}`)
      assert.match(error.message, message, what)
      await sessionsFreed()
    }

    // A frame that does not decode, one that claims to be larger than any frame may be, a length
    // prefix that never ends, and a frame the client cuts short by closing its side.
    for (const [what, bytes, pattern, close] of [
      ['garbage bytes', Uint8Array.of(5, 0xff, 0xff, 0xff, 0xff, 0xff), /malformed frame/, false],
      ['an oversized frame', Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f), /frame too large/, false],
      ['an endless length prefix', new Uint8Array(4096).fill(0x80), /frame too large: its length prefix runs past 4 bytes/, false],
      ['a frame cut short', Uint8Array.of(200, 1, 8, 1), /the stream ended inside a frame \(4 bytes of it arrived\)/, true]
    ] as const) {
      const { stream, frames } = await dial()
      stream.send(bytes)
      if (close) await stream.close()
      const error = await refusal(frames)
      assert.equal(error.code, ErrorCode.BAD_REQUEST, what)
      assert.match(error.message, pattern, what)
    }

    // A truncated frame, then the client vanishes: nobody to answer, but the session is freed.
    {
      const { stream, frames } = await dial()
      await frames.write(Request, open())
      await sessionsOpen(server, 2)
      stream.send(Uint8Array.of(200, 1, 8, 1)) // says 200 bytes follow, sends 2
      stream.abort(new Error('client crashed'))
      await sessionsFreed()
    }

    // The info protocol still answers, and the good conversation continues where it was.
    const { frames } = await dial(INFO_PROTOCOL)
    await frames.write(InfoRequest, { model: MODEL })
    const info = await frames.read(Info)
    assert.equal(info?.start, 0)
    assert.equal(info?.end, 5)
    assert.equal(info?.sessions, 1, 'only the good session is open')
    assert.equal(info?.inferenceMaxLength, 512, 'the announced session length is the model\'s context')
    assert.equal(server.inferenceMaxLength, 512)
    const rest = await collect(conversation.generate([...promptIds, ...first.ids], { maxNewTokens: 40 }))
    assert.deepEqual([...first.ids, ...rest.ids], ids)
    await conversation.close()
  })

  it('cuts off a client that opens a session and never steps; a real client whose session idled out carries on', async () => {
    const { frames } = await dial(INFERENCE_PROTOCOL, idle)
    await frames.write(Request, open({ model: IDLE_MODEL, maxLength: 100 }))
    const error = await refusal(frames)
    assert.equal(error.code, ErrorCode.TIMEOUT)
    assert.match(error.message, /no step for 1 s/)
    await sessionsOpen(idle, 0)

    // The SDK's session is ended the same way between two turns; the next turn reopens it (no ban:
    // the server did nothing wrong), replays the history, and the tokens are those of EXPECTED.md.
    const client = await DistributedModel.load(BUNDLED_MODEL, { initialPeers: [entry.getMultiaddrs()[0].toString()], modelName: IDLE_MODEL })
    try {
      const conversation = await client.session(64)
      const { promptIds, ids } = EXPECTED[1]
      const first = await collect(conversation.generate(promptIds, { maxNewTokens: 10 }))
      await sessionsOpen(idle, 0) // idled out
      const rest = await collect(conversation.generate([...promptIds, ...first.ids], { maxNewTokens: 40 }))
      assert.deepEqual([...first.ids, ...rest.ids], ids)
      assert.equal(client.manager.bans.isBanned(idle.node.peerId.toString()), false)
      await conversation.close()
    } finally {
      await client.close()
    }
  })

  it('takes back the cache of sessions that sit on it idle: a peer holding the whole cache cannot lock an honest client out', async () => {
    // Issue 20, row 3: one identity opens sessions of max_length 8192 and sends nothing.
    const greedy = await startTargetServer(GREEDY_MODEL, { initialPeers: [entry.getMultiaddrs()[0].toString()], idleReclaimMs: 200, load: { maxCacheTokens: 1024 } })
    const client = await DistributedModel.load(BUNDLED_MODEL, { initialPeers: [entry.getMultiaddrs()[0].toString()], modelName: GREEDY_MODEL, maxRetries: 1 })
    try {
      const { frames: tooLong } = await attacker.dial(greedy)
      await tooLong.write(Request, openRequest(GREEDY_MODEL, { maxLength: 8192 }))
      const refused = await refusal(tooLong)
      assert.deepEqual([refused.code, refused.message], [ErrorCode.TOO_LONG, 'max_length must be 1..512, got 8192'])
      // So it takes the model's context twice: 2 x 512 tokens, all 1024 per block, and idles.
      const held = []
      for (let i = 0; i < 2; i++) {
        const dialed = await attacker.dial(greedy)
        await dialed.frames.write(Request, openRequest(GREEDY_MODEL, { maxLength: 512 }))
        await sessionsOpen(greedy, i + 1)
        held.push(dialed)
      }
      assert.equal(greedy.span!.cacheUsage().reserved, 1024)
      await waitFor('a greedy session idle for 200 ms', () => greedy.sessions.longestIdleMs() >= 200)
      // An Open that would not fit even in the whole cache ends nobody's session.
      const { frames: huge } = await attacker.dial(greedy)
      await huge.write(Request, openRequest(GREEDY_MODEL, { maxLength: 512, batch: 3 }))
      const hugeRefused = await refusal(huge)
      assert.equal(hugeRefused.code, ErrorCode.CACHE_FULL)
      assert.match(hugeRefused.message, /the sessions idle for 0\.2 s or more would not make room$/)
      await sessionsOpen(greedy, 2)

      // The honest client's Open takes the cache of the session idle the longest, at its first try.
      const conversation = await client.session(64)
      const { promptIds, ids } = EXPECTED[1]
      const out = await collect(conversation.generate(promptIds, { maxNewTokens: 20 }))
      assert.deepEqual(out.ids, ids.slice(0, 20))
      const ended = await refusal(held[0].frames)
      assert.equal(ended.code, ErrorCode.TIMEOUT)
      assert.match(ended.message, /^session ended: idle for \d+\.\d s while a new session needed its cache$/)
      await conversation.close()
      // One greedy session was enough to make room: the other keeps its cache (nothing else asked).
      await sessionsOpen(greedy, 1)
      assert.equal(greedy.span!.cacheUsage().reserved, 512)
      held[1].stream.abort(new Error('done'))
      await sessionsOpen(greedy, 0)
    } finally {
      await client.close()
      await greedy.stop()
    }
  })

  it('shares compute turns between peers: two peers looping prefills on 4 sessions each do not hold an honest client back', async () => {
    // Issue 20, row 5: 2 identities x 4 sessions loop 256-token prefills while a client generates.
    const shared = await startTargetServer(SHARED_MODEL, { initialPeers: [entry.getMultiaddrs()[0].toString()], load: { maxCacheTokens: 4096 } })
    const hostile = [await RawPeer.start(), await RawPeer.start()]
    const client = await DistributedModel.load(BUNDLED_MODEL, { initialPeers: [entry.getMultiaddrs()[0].toString()], modelName: SHARED_MODEL })
    const honest = client.node.peerId.toString()
    const honestWaits: number[] = []
    let hostileTurns = 0
    shared.queue.onStart = turn => { if (turn.peer === honest) honestWaits.push(turn.waited); else hostileTurns++ }
    let stop = false
    const { promptIds, ids } = EXPECTED[2]
    /** 20 tokens of the reference story, and the client's tokens/s (reported, not asserted). */
    const story = async (): Promise<number> => {
      const conversation = await client.session(64)
      const started = performance.now()
      const out = await collect(conversation.generate(promptIds, { maxNewTokens: 20 }))
      const seconds = (performance.now() - started) / 1000
      await conversation.close()
      assert.deepEqual(out.ids, ids.slice(0, 20))
      return 20 / seconds
    }
    try {
      const quiet = await story()
      honestWaits.length = 0
      const loops = hostile.flatMap(peer => Array.from({ length: 4 }, async () => {
        const { stream, frames } = await peer.dial(shared)
        await frames.write(Request, openRequest(SHARED_MODEL, { maxLength: 256 }))
        while (!stop) {
          await frames.write(Request, { step: { position: 0, hidden: hidden(256) } })
          const response = await frames.read(Response)
          assert.ok(response?.hidden !== undefined, `a prefill answered ${JSON.stringify(response?.error)}`)
        }
        await stream.close()
      }))
      await waitFor('the hostile peers keeping the queue busy', () => hostileTurns >= 16)
      const attacked = await story()
      const during = hostileTurns
      stop = true
      await Promise.all(loops)
      console.log(`      honest client: ${quiet.toFixed(1)} tokens/s alone, ${attacked.toFixed(1)} tokens/s under attack; its steps waited [${honestWaits.join(',')}] turns`)
      assert.ok(honestWaits.length >= 20 && during > 16 + 20, `${honestWaits.length} honest steps, ${during} hostile prefills`)
      // Fair turns between the three peers (weighted by cost, so the honest 5 block-tokens a step go
      // ahead of 1280-block-token prefills): one turn of each other peer at most, against 7 (the 8
      // hostile sessions' prefills queued ahead) first come, first served.
      assert.ok(Math.max(...honestWaits) <= 2, `honest steps waited [${honestWaits.join(',')}] turns`)
    } finally {
      stop = true
      await client.close()
      for (const peer of hostile) await peer.stop()
      await shared.stop()
    }
  })
})
