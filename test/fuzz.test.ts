// Seeded fuzzing of every block protocol handler and every HTTP endpoint, against a real server
// and gateway on 127.0.0.1 serving the bundled model: random bytes, length prefixes of any size,
// valid frames with one field spoiled, frames in the wrong order, streams cut or reset half-way,
// and random HTTP methods, paths, headers and bodies (see fuzz-cases.ts). Every case must end
// within a bound in a clear error (never an internal one), a clean close, or, where a protocol has
// no error frame, a reset; the server must free the case's sessions and its peer's share of the
// limits; and a conversation from another peer, run alongside, must go on producing the reference
// tokens, as a completion through the gateway must afterwards.
//
// Each run prints its seed: BMRT_FUZZ_SEED=N replays it, BMRT_FUZZ_CASES=N sets the cases per
// handler (default 300).

import assert from 'node:assert/strict'
import { randomInt } from 'node:crypto'
import { connect, createServer } from 'node:net'
import { join } from 'node:path'
import { startGateway, type StartedGateway } from '../src/cli/gateway.js'
import { collect } from '../src/inference/generate.js'
import { Tokenizer } from '../src/inference/tokenizer.js'
import { EvidenceResponse } from '../src/petals/protocol/messages.js'
import { decodeHidden, ErrorCode, EVIDENCE_PROTOCOL, FORWARD_PROTOCOL, Info, INFERENCE_PROTOCOL, INFO_PROTOCOL, Response } from '../src/petals/protocol/wire.js'
import { ReachabilityResponse } from '../src/p2p/reachability-messages.js'
import type { Codec } from '../src/p2p/frames.js'
import { REACHABILITY_PROTOCOL } from '../src/p2p/reachability.js'
import { RECORD_PROTOCOL, recordKey, verifyRecord } from '../src/p2p/registry.js'
import { RecordResponse } from '../src/p2p/registry-messages.js'
import { DistributedModel } from '../src/petals/client/distributed-model.js'
import type { BlockServer } from '../src/petals/server/server.js'
import { EXPECTED } from './expected.js'
import { evidenceCase, frameCase, httpCase, infoCase, reachabilityCase, recordCase, Rng, type EvidenceCase, type FrameCase, type HttpCase, type InfoCase, type ReachabilityCase, type RecordCase, type Served } from './fuzz-cases.js'
import { BUNDLED_MODEL, scratchDir, waitFor } from './helpers.js'
import { BUNDLED_HIDDEN, RawPeer, sendBytes, startTargetServer } from './raw-peer.js'

const SEED = process.env.BMRT_FUZZ_SEED !== undefined ? Number(process.env.BMRT_FUZZ_SEED) : randomInt(2 ** 32)
const CASES = Number(process.env.BMRT_FUZZ_CASES ?? 300)
/** A server that has not answered a case by then never will: the case fails instead of hanging. */
const CASE_BOUND_MS = 20_000
const MODEL = 'stories-fuzz'
const KEY = 'fuzz-key'

describe('fuzzing the block protocols and the HTTP gateway', function () {
  this.timeout(300_000) // the bound of a whole run on a slow machine; a case's own bound is CASE_BOUND_MS
  let server: BlockServer
  let attacker: RawPeer
  let model: DistributedModel
  let conversation: Awaited<ReturnType<DistributedModel['session']>>
  let started: StartedGateway
  let scratch: Awaited<ReturnType<typeof scratchDir>>
  const generated: number[] = []
  const served: Served = { model: MODEL, blocks: 5, inferenceMaxLength: 512, maxBatch: 64 } // the server's defaults (512: the model's context)

  before(async () => {
    console.log(`      fuzz seed ${SEED} (replay with BMRT_FUZZ_SEED=${SEED}), ${CASES} cases per handler`)
    scratch = await scratchDir()
    // A small cache: sessions the cases open stay small, and large ones are refused.
    server = await startTargetServer(MODEL, { load: { maxCacheTokens: 1024 } })
    attacker = await RawPeer.start()
    const initialPeers = server.node.getMultiaddrs().map(String)
    model = await DistributedModel.load(BUNDLED_MODEL, { initialPeers, modelName: MODEL })
    conversation = await model.session(64)
    await turn()
    started = await startGateway(BUNDLED_MODEL, { initialPeers }, {
      httpPort: 0, httpHost: '127.0.0.1', apiKey: KEY, jobsFile: join(scratch.dir, 'jobs.jsonl'), modelAlias: [], maxQueuedJobs: 64, jobConcurrency: 2, modelName: MODEL
    }, () => {})
  })
  after(async () => {
    await started?.close()
    await conversation?.close()
    await model?.close()
    await attacker?.stop()
    await server?.stop()
    await scratch?.cleanup()
  })

  /** Six more tokens of the legitimate conversation (eight turns fit the reference's 50): they must be the reference's next six. */
  async function turn (): Promise<void> {
    const { promptIds, ids } = EXPECTED[0]
    const result = await collect(conversation.generate([...promptIds, ...generated], { maxNewTokens: 6 }))
    generated.push(...result.ids)
    assert.deepEqual(generated, ids.slice(0, generated.length), 'the conversation alongside the fuzzing')
  }

  /** Runs `count` cases one after the other, returning how often each outcome came. */
  async function fuzz<C extends { what: string }> (name: string, next: () => C, run: (c: C, label: string) => Promise<string>): Promise<void> {
    const outcomes = new Map<string, number>()
    for (let i = 0; i < CASES; i++) {
      const c = next()
      const label = `${name} case ${i}, ${c.what} (BMRT_FUZZ_SEED=${SEED})`
      let outcome: string
      try {
        outcome = await run(c, label)
      } catch (err) {
        if (err instanceof assert.AssertionError) throw err
        throw new Error(`${label}: ${(err as Error).name}: ${(err as Error).message}`)
      }
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
    }
    console.log(`      ${name}: ${[...outcomes].sort((a, b) => b[1] - a[1]).map(([o, n]) => `${n} ${o}`).join(', ')}`)
  }

  const attackerId = (): string => attacker.node.peerId.toString()
  /** The case's sessions are over: their caches freed, and the attacker's share of the limits back to nothing. */
  async function settled (label: string): Promise<void> {
    await waitFor(`${label}: the server to free the case's sessions`, () => {
      const usage = server.peerLimits.usage(attackerId())
      return usage.sessions === 0 && usage.pendingBytes === 0 && server.span!.cacheUsage().sessions === 1
    }, CASE_BOUND_MS)
  }

  /** Sends a block-protocol case and checks every answer, then that the server let go of it. */
  async function runFrameCase (protocol: string, c: FrameCase, label: string): Promise<string> {
    const { stream, frames } = await attacker.dial(server, protocol)
    for (const chunk of c.chunks) await sendBytes(stream, chunk)
    if (c.end === 'reset') {
      stream.abort(new Error('the fuzzing client resets the stream'))
      await settled(label)
      return 'reset by the client'
    }
    const signal = AbortSignal.timeout(CASE_BOUND_MS)
    await stream.close({ signal })
    let answers = 0
    let error: { code: ErrorCode, message: string } | undefined
    for (;;) {
      const response = await frames.read(Response, { signal })
      if (response === null) break
      if (response.error !== undefined) {
        error = response.error
        assert.equal(await frames.read(Response, { signal }), null, `${label}: the server ends the session after an error`)
        break
      }
      const shape = response.hidden?.shape ?? []
      assert.ok(shape.length === 3 && shape[2] === BUNDLED_HIDDEN, `${label}: an answer of shape [${shape.join(', ')}]`)
      decodeHidden(response.hidden, { batch: shape[0], hidden: BUNDLED_HIDDEN }) // the right bytes, all finite
      answers++
    }
    if (error !== undefined) {
      assert.notEqual(error.code, ErrorCode.INTERNAL, `${label}: an internal error for a client's mistake: ${error.message}`)
      assert.ok(error.message.length > 0 && error.message.length <= 300, `${label}: an error message of ${error.message.length} characters: ${error.message.slice(0, 300)}`)
    }
    if (c.answers !== undefined) assert.equal(answers, c.answers, `${label}: hidden-state answers (then ${error?.message ?? 'no error'})`)
    if (c.error === null) assert.equal(error, undefined, `${label}: an error where none was due: ${error?.message ?? ''}`)
    if (c.error != null) {
      assert.equal(error?.code, c.error.code, `${label}: ${error?.code ?? 'no error'}: ${error?.message ?? ''}`)
      assert.match(error.message, c.error.message, label)
    }
    await settled(label)
    return error?.code ?? (answers > 0 ? 'answered' : 'closed cleanly')
  }

  /**
   * Sends a case of a one-request, one-answer protocol (info, reachability): a valid request must
   * get its answer (which `check` looks at) and nothing after it; anything else may get an answer,
   * a close or a reset.
   */
  async function runOneAnswerCase<T> (protocol: string, codec: Codec<T>,
    c: { chunks: Uint8Array[], end: 'close' | 'reset' }, valid: boolean, label: string, check: (answer: T) => void | Promise<void>): Promise<string> {
    const { stream, frames } = await attacker.dial(server, protocol)
    for (const chunk of c.chunks) await sendBytes(stream, chunk)
    if (c.end === 'reset') {
      stream.abort(new Error('the fuzzing client resets the stream'))
      return 'reset by the client'
    }
    const signal = AbortSignal.timeout(CASE_BOUND_MS)
    await stream.close({ signal })
    let answer: T | null
    try {
      answer = await frames.read(codec, { signal })
    } catch (err) {
      if (signal.aborted) throw err
      assert.ok(!valid, `${label}: a valid request was answered with ${(err as Error).name}: ${(err as Error).message}`)
      return 'reset by the server'
    }
    if (valid) assert.ok(answer !== null, `${label}: no answer to a valid request`)
    if (answer === null) return 'closed'
    await check(answer)
    assert.equal(await frames.read(codec, { signal }), null, `${label}: one answer, then the end`)
    return 'answered'
  }

  /** An info case: a valid request gets the server's Info. */
  async function runInfoCase (c: InfoCase, label: string): Promise<string> {
    return await runOneAnswerCase(INFO_PROTOCOL, Info, c, c.valid, label, info => {
      if (c.valid) assert.deepEqual([info.model, info.start, info.end], [MODEL, 0, 5])
    })
  }

  /** A record case: a valid request gets the server's signed record of MODEL, and of any other model none. */
  async function runRecordCase (c: RecordCase, label: string): Promise<string> {
    return await runOneAnswerCase(RECORD_PROTOCOL, RecordResponse, c, c.valid, label, async answer => {
      if (!c.valid) return
      assert.equal(answer.record !== undefined, c.asked === MODEL, `${label}: a record only for the model served`)
      if (answer.record === undefined) return
      const record = await verifyRecord(recordKey(MODEL, server.node.peerId.toString()), answer.record)
      assert.deepEqual([record.start, record.end, record.state], [0, 5, 'online'], label)
    })
  }

  /** An evidence case: a fetch gets none (nothing is kept), random evidence gets the reason it proves nothing. */
  async function runEvidenceCase (c: EvidenceCase, label: string): Promise<string> {
    return await runOneAnswerCase(EVIDENCE_PROTOCOL, EvidenceResponse, c, c.valid, label, answer => {
      assert.equal(answer.evidence, undefined, `${label}: no evidence is kept here`)
      assert.equal(answer.verdict, undefined, `${label}: random evidence gets no verdict`)
      if (c.submits) assert.ok(answer.error !== undefined && answer.error.length > 0 && answer.error.length <= 300, `${label}: the reason, in a line: ${answer.error ?? 'none'}`)
    })
  }

  /** A reachability case: a well-formed request gets its expected answer; nothing here can be dialed back. */
  async function runReachabilityCase (c: ReachabilityCase, label: string): Promise<string> {
    return await runOneAnswerCase(REACHABILITY_PROTOCOL, ReachabilityResponse, c, c.expect !== null, label, answer => {
      if (c.expect !== null) assert.match(answer.detail, c.expect, label)
      assert.equal(answer.reachable, false, `${label}: nothing here can be dialed back`)
    })
  }

  /** Sends an HTTP case: no 5xx, and every error in the API's JSON shape (Node's own refusals of malformed HTTP aside). */
  async function runHttpCase (c: HttpCase, label: string): Promise<string> {
    // A malformed request is all the client sends (it half-closes); a well-formed one waits for its answer.
    const raw = await rawHttp(new URL(started.gateway.url).port, c.bytes, !c.wellFormed, CASE_BOUND_MS)
    const responses = parseResponses(raw, c.method === 'HEAD', label)
    if (c.wellFormed) assert.ok(responses.length > 0, `${label}: the connection closed without a response`)
    for (const { status, body } of responses) {
      assert.ok(status < 500, `${label}: ${status} ${body.slice(0, 300)}`)
      if (status < 400 || c.method === 'HEAD' || (!c.wellFormed && body === '')) continue
      let error: any
      try {
        error = JSON.parse(body).error
      } catch {
        assert.fail(`${label}: ${status} with a body that is not JSON: ${body.slice(0, 300)}`)
      }
      assert.deepEqual(Object.keys(error ?? {}).sort(), ['code', 'message', 'param', 'type'], `${label}: ${status} ${body.slice(0, 300)}`)
      assert.ok(typeof error.message === 'string' && error.message.length > 0 && error.message.length <= 500,
        `${label}: an error message of ${String(error.message?.length)} characters: ${String(error.message).slice(0, 300)}`)
    }
    return responses.map(r => r.status).join(' then ') || 'closed'
  }

  for (const [name, protocol, salt] of [['/bmrt/inference', INFERENCE_PROTOCOL, 1], ['/bmrt/forward', FORWARD_PROTOCOL, 2]] as const) {
    it(`${name}: answers random, mutated, misordered and cut-off frames with clear errors, while a conversation goes on`, async () => {
      const rng = new Rng(SEED + salt)
      await Promise.all([
        fuzz(name, () => frameCase(rng, served), async (c, label) => await runFrameCase(protocol, c, label)),
        turn()
      ])
      assert.equal(server.node.status, 'started')
    })
  }

  it('/bmrt/info: answers valid requests and drops the rest, while a conversation goes on', async () => {
    const rng = new Rng(SEED + 3)
    await Promise.all([fuzz('/bmrt/info', () => infoCase(rng, MODEL), runInfoCase), turn()])
  })

  it('/bmrt/record: answers valid requests with the server\'s own record and drops the rest, while a conversation goes on', async () => {
    const rng = new Rng(SEED + 6)
    await Promise.all([fuzz('/bmrt/record', () => recordCase(rng, MODEL), runRecordCase), turn()])
  })

  it('/bmrt/evidence: refuses random evidence with the reason, keeps nothing, and drops malformed requests, while a conversation goes on', async () => {
    const rng = new Rng(SEED + 7)
    await Promise.all([fuzz('/bmrt/evidence', () => evidenceCase(rng, MODEL), runEvidenceCase), turn()])
    assert.deepEqual(server.disputes.disproven, [])
  })

  it('/bmrt/reachability: answers checks without dialing anyone but the asker, and drops malformed ones, while a conversation goes on', async () => {
    const rng = new Rng(SEED + 5)
    const closed = createServer()
    await new Promise<void>(resolve => closed.listen(0, '127.0.0.1', resolve))
    const closedPort = (closed.address() as { port: number }).port
    await new Promise(resolve => closed.close(resolve))
    await Promise.all([fuzz('/bmrt/reachability', () => reachabilityCase(rng, closedPort), runReachabilityCase), turn()])
  })

  it('HTTP: answers random requests at every endpoint with 4xx and the API\'s error body, then completes normally', async () => {
    const rng = new Rng(SEED + 4)
    await Promise.all([fuzz('HTTP', () => httpCase(rng, KEY), runHttpCase), turn()])

    const { prompt, promptIds, ids } = EXPECTED[1]
    const tokenizer = await Tokenizer.load(BUNDLED_MODEL)
    const response = await fetch(`${started.gateway.url}v1/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, max_tokens: ids.length, temperature: 0 }),
      signal: AbortSignal.timeout(CASE_BOUND_MS)
    })
    assert.equal(response.status, 200)
    const completion: any = await response.json()
    assert.equal(prompt + String(completion.choices[0].text), tokenizer.decode([...promptIds, ...ids]))
  })
})

/** Writes a raw request (then half-closes, if asked) and collects every byte until the server closes the connection. */
async function rawHttp (port: string, request: Uint8Array, halfClose: boolean, timeoutMs: number): Promise<Buffer> {
  return await new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1')
    const chunks: Buffer[] = []
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`the connection was still open ${timeoutMs / 1000} s later, after ${Buffer.concat(chunks).byteLength} bytes`))
    }, timeoutMs)
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', () => {}) // a server that closed early (e.g. on a 413) resets our writes: the bytes so far are its answer
    socket.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(chunks)) })
    if (halfClose) socket.end(request)
    else socket.write(request)
  })
}

/** The responses in a connection's bytes: status and body (chunked or sized), one after the other. */
function parseResponses (raw: Buffer, head: boolean, label: string): Array<{ status: number, body: string }> {
  const responses: Array<{ status: number, body: string }> = []
  let at = 0
  while (at < raw.byteLength) {
    const end = raw.indexOf('\r\n\r\n', at)
    assert.ok(end !== -1, `${label}: a response cut off in its headers: ${raw.subarray(at, at + 200).toString('latin1')}`)
    const [statusLine, ...lines] = raw.subarray(at, end).toString('latin1').split('\r\n')
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1])
    assert.ok(Number.isInteger(status), `${label}: not a status line: ${statusLine}`)
    const headers = new Map(lines.map(l => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]))
    at = end + 4
    let body: Buffer = Buffer.alloc(0)
    if (head || status === 204 || status === 304) {
      // no body
    } else if (headers.get('transfer-encoding') === 'chunked') {
      const parts: Buffer[] = []
      for (;;) {
        const lineEnd = raw.indexOf('\r\n', at)
        const size = parseInt(raw.subarray(at, lineEnd).toString('latin1'), 16)
        assert.ok(lineEnd !== -1 && Number.isInteger(size), `${label}: a chunked body cut off`)
        at = lineEnd + 2
        if (size === 0) { at = raw.indexOf('\r\n', at) + 2; break }
        parts.push(raw.subarray(at, at + size))
        at += size + 2
      }
      body = Buffer.concat(parts)
    } else if (headers.has('content-length')) {
      const size = Number(headers.get('content-length'))
      body = raw.subarray(at, at + size)
      at += size
    } else {
      body = raw.subarray(at)
      at = raw.byteLength
    }
    responses.push({ status, body: body.toString('utf8') })
  }
  return responses
}
