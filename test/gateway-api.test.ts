// The HTTP gateway on a live 3-server swarm of the bundled model, driven by the official `openai`
// npm client and by plain HTTP: greedy output equals the reference, usage counts are right, bad
// requests get OpenAI's error shape and status, a client leaving mid-stream frees its swarm
// sessions, and the job board queues, refuses when full, and survives a restart.

import assert from 'node:assert/strict'
import { appendFile, readFile, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import OpenAI from 'openai'
import { collect, generate } from '../src/inference/generate.js'
import { LocalModel } from '../src/inference/model.js'
import { Tokenizer } from '../src/inference/tokenizer.js'
import { BlockServer } from '../src/petals/server/server.js'
import { JobStore } from '../src/api/job-store.js'
import { ContributorKeysError, parseContributorKeys } from '../src/api/contributor-keys.js'
import { creditRank } from '../src/api/jobs.js'
import { ApiModel } from '../src/api/api-model.js'
import { Gateway } from '../src/api/gateway.js'
import { startGateway, type StartedGateway } from '../src/cli/gateway.js'
import { loadAddon } from '../src/inference/native-backend.js'
import { EXPECTED } from './expected.js'
import { BUNDLED_MODEL, scratchDir, waitFor } from './helpers.js'

const BACKEND = loadAddon() !== null ? 'native' : 'js'
const KEY = 'test-key'
const ALLOWED_ORIGIN = 'https://app.example:8443'
/** The owner token this test's own requests send (x-job-owner), as the pages do. */
const OWNER = 'owner-token-of-this-test'

/** One HTTP request with exactly these headers (fetch will not send a Host of our choosing). */
async function raw (url: string, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, body: any }> {
  return await new Promise((resolve, reject) => {
    const req = request(new URL(path, url), { method, headers }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        let parsed: any = text
        try { parsed = JSON.parse(text) } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

describe('HTTP gateway on a 3-server swarm', function () {
  this.timeout(120_000)
  let servers: BlockServer[] = []
  let started: StartedGateway
  let url: string
  let client: OpenAI
  let tokenizer: Tokenizer
  let scratch: Awaited<ReturnType<typeof scratchDir>>
  const logs: string[] = []

  const initialPeers = (): string[] => servers[0].node.getMultiaddrs().map(String)
  const openGateway = async (extra: { maxQueuedJobs?: number, jobConcurrency?: number, keptJobs?: number, modelName?: string, jobsFile?: string } = {}): Promise<void> => {
    started = await startGateway(BUNDLED_MODEL, { initialPeers: initialPeers() }, {
      httpPort: 0, httpHost: '127.0.0.1', apiKey: KEY, jobsFile: extra.jobsFile ?? join(scratch.dir, 'jobs.jsonl'), modelAlias: ['gpt-3.5-turbo'],
      maxQueuedJobs: extra.maxQueuedJobs ?? 64, jobConcurrency: extra.jobConcurrency ?? 2, keptJobs: extra.keptJobs, modelName: extra.modelName,
      allowOrigin: [ALLOWED_ORIGIN]
    }, line => logs.push(line))
    url = started.gateway.url
    client = new OpenAI({ baseURL: `${url}v1`, apiKey: KEY, maxRetries: 0 })
  }
  const api = async (path: string, init: RequestInit = {}, key: string | null = KEY): Promise<{ status: number, body: any }> => {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'x-job-owner': OWNER, ...(key !== null ? { authorization: `Bearer ${key}` } : {}) }
    const response = await fetch(`${url}${path.slice(1)}`, { ...init, headers })
    return { status: response.status, body: await response.json() }
  }

  before(async () => {
    scratch = await scratchDir()
    tokenizer = await Tokenizer.load(BUNDLED_MODEL)
    for (const blocks of [[0, 2], [2, 4], [4, 5]] as Array<[number, number]>) {
      servers.push(await BlockServer.start({
        modelDir: BUNDLED_MODEL, blocks: { start: blocks[0], end: blocks[1] }, listen: ['/ip4/127.0.0.1/tcp/0'], initialPeers: servers.length > 0 ? initialPeers() : [],
        throughput: 1, updatePeriodMs: 600_000, load: { backend: BACKEND }, publicName: `server-${blocks.join('-')}`
      }))
    }
    await openGateway()
  })
  after(async () => {
    await started?.close()
    await Promise.all(servers.map(async s => await s.stop()))
    servers = []
    await scratch.cleanup()
  })

  it('lists the model (and its alias) through the openai client', async () => {
    const models = await client.models.list()
    assert.deepEqual(models.data.map(m => m.id), ['stories260K', 'gpt-3.5-turbo'])
    assert.equal(models.data[0].owned_by, 'bmrt')
  })

  it('completes the reference prompts greedily, equal to EXPECTED, with the right usage', async () => {
    for (const expected of EXPECTED) {
      const full = tokenizer.decode([...expected.promptIds, ...expected.ids])
      const completion = await client.completions.create({ model: 'stories260K', prompt: expected.prompt, max_tokens: 50, temperature: 0 })
      assert.equal(expected.prompt + completion.choices[0].text, full)
      assert.ok(full.startsWith(expected.text))
      assert.equal(completion.choices[0].finish_reason, 'length')
      assert.deepEqual(completion.usage, { prompt_tokens: expected.promptIds.length, completion_tokens: 50, total_tokens: expected.promptIds.length + 50 })
      assert.equal(completion.object, 'text_completion')
    }
  })

  it('honours stop, seed and the presence/frequency penalties', async () => {
    const ask = async (extra: object): Promise<any> =>
      await client.completions.create({ model: 'stories260K', prompt: EXPECTED[1].prompt, max_tokens: 50, temperature: 0, ...extra })
    const greedy = (await ask({})).choices[0].text as string
    const stopped = await ask({ stop: ['toys'] })
    assert.equal(stopped.choices[0].text, greedy.slice(0, greedy.indexOf('toys')))
    assert.equal(stopped.choices[0].finish_reason, 'stop')
    // The greedy story repeats a sentence; penalising repeats changes it.
    assert.notEqual((await ask({ frequency_penalty: 2 })).choices[0].text, greedy)
    assert.notEqual((await ask({ presence_penalty: 2 })).choices[0].text, greedy)
    const sampled = async (seed: number): Promise<string> => (await ask({ temperature: 1, seed })).choices[0].text
    assert.equal(await sampled(3), await sampled(3))
  })

  it('streams completions chunk by chunk to the same text, with a usage chunk on request', async () => {
    const expected = EXPECTED[0]
    const stream = await client.completions.create({ model: 'stories260K', prompt: expected.prompt, max_tokens: 50, temperature: 0, stream: true, stream_options: { include_usage: true } })
    let text = ''
    let chunks = 0
    let usage
    let finish
    for await (const chunk of stream) {
      if (chunk.usage != null) { usage = chunk.usage; assert.equal(chunk.choices.length, 0); continue }
      text += chunk.choices[0].text
      finish = chunk.choices[0].finish_reason ?? finish
      chunks++
    }
    assert.equal(expected.prompt + text, tokenizer.decode([...expected.promptIds, ...expected.ids]))
    assert.ok(chunks > 10, `text should come in many chunks, got ${chunks}`)
    assert.equal(finish, 'length')
    assert.deepEqual(usage, { prompt_tokens: 5, completion_tokens: 50, total_tokens: 55 })
  })

  it('chats, streaming and not, exactly as the model does on this machine with its chat prompt', async () => {
    const messages = [{ role: 'system' as const, content: 'You tell short stories.' }, { role: 'user' as const, content: 'Tell me about a dog.' }]
    const ids = tokenizer.encodeChat(messages)
    const local = await LocalModel.load(BUNDLED_MODEL, { backend: BACKEND })
    const reference = await collect(generate(local, ids, { maxNewTokens: 40, temperature: 0 }))
    local.close()

    const reply = await client.chat.completions.create({ model: 'stories260K', messages, max_tokens: 40, temperature: 0 })
    assert.equal(reply.choices[0].message.role, 'assistant')
    assert.equal(reply.choices[0].message.content, reference.text)
    assert.equal(reply.object, 'chat.completion')
    assert.deepEqual(reply.usage, { prompt_tokens: ids.length, completion_tokens: reference.ids.length, total_tokens: ids.length + reference.ids.length })

    const stream = await client.chat.completions.create({ model: 'gpt-3.5-turbo', messages, max_tokens: 40, temperature: 0, stream: true, stream_options: { include_usage: true } })
    const chunks = []
    for await (const chunk of stream) chunks.push(chunk)
    assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' }) // the role comes first, alone
    const finishing = chunks[chunks.length - 2]
    assert.deepEqual(finishing.choices[0].delta, {}) // the finish chunk carries no content
    assert.equal(finishing.choices[0].finish_reason, reference.finishReason === 'length' ? 'length' : 'stop')
    assert.equal(chunks.slice(1, -2).map(c => c.choices[0].delta.content).join(''), reference.text)
    assert.deepEqual(chunks[chunks.length - 1].usage, reply.usage)
    assert.equal(new Set(chunks.map(c => c.id)).size, 1, 'every chunk of a stream shares its id')
  })

  it('answers bad requests with the right status and an OpenAI error body', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
      (err: any) => err instanceof OpenAI.NotFoundError && err.code === 'model_not_found' && /no-such-model/.test(err.message))
    await assert.rejects(client.completions.create({ model: 'stories260K', prompt: 'Once', max_tokens: 100_000 }),
      (err: any) => err instanceof OpenAI.BadRequestError && err.code === 'context_length_exceeded' && err.param === 'max_tokens' && /512/.test(err.message))
    await assert.rejects(new OpenAI({ baseURL: `${url}v1`, apiKey: 'wrong', maxRetries: 0 }).models.list(),
      (err: any) => err instanceof OpenAI.AuthenticationError && err.code === 'invalid_api_key')

    const badJson = await fetch(`${url}v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: '{"model": "stories260K",' })
    assert.equal(badJson.status, 400)
    const body: any = await badJson.json()
    assert.equal(body.error.type, 'invalid_request_error')
    assert.match(body.error.message, /not valid JSON/)
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type'])

    const noKey = await api('/v1/models', {}, null)
    assert.equal(noKey.status, 401)
    assert.match(noKey.body.error.message, /API key/)
    const twoChoices = await api('/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model: 'stories260K', messages: [{ role: 'user', content: 'hi' }], n: 2 }) })
    assert.equal(twoChoices.status, 400)
    assert.equal(twoChoices.body.error.param, 'n')
    const badRole = await api('/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model: 'stories260K', messages: [{ role: 'wizard', content: 'hi' }] }) })
    assert.equal(badRole.status, 400)
    assert.equal(badRole.body.error.param, 'messages[0].role')
    assert.equal((await api('/v1/nothing')).status, 404)
    assert.equal((await api('/v1/models', { method: 'DELETE' })).status, 405)
    // Found by test/fuzz.test.ts, each a 500 before: a malformed %-escape, a value nested past
    // JSON.stringify's depth (quoted in the error), a role inherited from Object.prototype, a
    // job's model that is no string.
    const badEscape = await api('/api/v1/jobs/%E0%A4%A')
    assert.equal(badEscape.status, 400)
    assert.match(badEscape.body.error.message, /malformed %-escape/)
    const deep = await api('/v1/completions', { method: 'POST', body: `{"prompt":"Once","temperature":${'['.repeat(20_000)}${']'.repeat(20_000)}}` })
    assert.deepEqual([deep.status, deep.body.error.param], [400, 'temperature'])
    assert.match(deep.body.error.message, /^temperature must be a number from 0 to 2, got \(a value nested too deeply to show\)$/)
    const inherited = await api('/v1/chat/completions', { method: 'POST', body: JSON.stringify({ messages: [{ role: 'toString', content: 'hi' }] }) })
    assert.deepEqual([inherited.status, inherited.body.error.param], [400, 'messages[0].role'])
    const jobModel = await api('/api/v1/jobs', { method: 'POST', body: `{"prompt":"Once","model":${'['.repeat(20_000)}${']'.repeat(20_000)}}` })
    assert.deepEqual([jobModel.status, jobModel.body.error.param], [400, 'model'])

    // The gateway and the swarm go on serving.
    const after = await client.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 5, temperature: 0 })
    assert.equal(after.usage?.completion_tokens, 5)
  })

  it('ends the generation and frees every server session when the client leaves mid-stream', async () => {
    const stream = await client.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: 'Tell me a long story.' }], max_tokens: 480, temperature: 0, stream: true })
    let received = 0
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content !== undefined && chunk.choices[0].delta.content !== '') received++
      if (received === 3) break // leaving the loop aborts the HTTP request
    }
    await waitFor('the gateway to stop generating', () => logs.some(l => /client left after \d+ tokens/.test(l)))
    const left = Number(/client left after (\d+) tokens/.exec(logs.find(l => /client left after/.test(l))!)![1])
    assert.ok(left < 480, `the generation should stop early, it made ${left} tokens`)
    await waitFor('every server to close its session', () => servers.every(s => s.sessions.size === 0))
  })

  it('credits every kind of traffic from the servers\' receipts, and keeps the credits across a restart (issue 21)', async () => {
    // What the servers signed for this test's requests, as the client received it.
    const signed = new Map<string, { receipts: number, tokens: number, block_tokens: number }>()
    const unwatch = started.model.watchWork({
      receipt: (peerId, _signed, r) => {
        const total = signed.get(peerId) ?? { receipts: 0, tokens: 0, block_tokens: 0 }
        signed.set(peerId, { receipts: total.receipts + 1, tokens: total.tokens + r.tokens * r.batch, block_tokens: total.block_tokens + r.tokens * r.batch * (r.end - r.start) })
      }
    })
    await started.gateway.credits.flush()
    const before = new Map(started.gateway.credits.credits.map(c => [c.peer_id, c]))
    try {
      await client.completions.create({ model: 'stories260K', prompt: EXPECTED[0].prompt, max_tokens: 12, temperature: 0 })
      await client.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 12 })
      const job = await api('/api/v1/jobs', { method: 'POST', body: JSON.stringify({ prompt: EXPECTED[1].prompt, max_tokens: 12 }) })
      await waitFor('the job to finish', async () => (await api(`/api/v1/jobs/${job.body.id as string}`)).body.status === 'done')
    } finally {
      unwatch()
    }
    await started.gateway.credits.flush()
    const earned = (credits: ReadonlyArray<{ peer_id: string, receipts: number, tokens: number, block_tokens: number }>): Record<string, object> =>
      Object.fromEntries(credits.map(c => {
        const b = before.get(c.peer_id)
        return [c.peer_id, { receipts: c.receipts - (b?.receipts ?? 0), tokens: c.tokens - (b?.tokens ?? 0), block_tokens: c.block_tokens - (b?.block_tokens ?? 0) }]
      }).filter(([, c]) => (c as { receipts: number }).receipts > 0))
    assert.deepEqual(earned(started.gateway.credits.credits), Object.fromEntries(signed), 'the credits are the receipts')
    assert.equal(signed.size, 3, 'every server earned')
    // Per server: the prompt and each fed token of the 3 requests, over its blocks.
    const [first, , last] = servers.map(s => signed.get(s.node.peerId.toString())!)
    assert.equal(first.block_tokens, 2 * first.tokens)
    assert.equal(last.block_tokens, last.tokens)

    await started.close()
    // A line that is not a whole credit (a negative count) is skipped on opening, like a torn job line.
    await appendFile(join(scratch.dir, 'jobs.jsonl'), '{"type":"credits","credits":[{"peer_id":"nobody","receipts":-1,"tokens":1,"block_tokens":1000000}]}\n')
    await openGateway()
    assert.deepEqual(earned(started.gateway.credits.credits), Object.fromEntries(signed), 'the same credits after a restart')
    assert.ok(!started.gateway.credits.credits.some(c => c.peer_id === 'nobody'))
    const board = (await api('/api/v1/state')).body.contributors as Array<{ peer_id: string, block_tokens: number, receipts: number }>
    for (const [peerId, c] of signed) {
      const row = board.find(r => r.peer_id === peerId)
      assert.ok(row !== undefined && row.block_tokens >= c.block_tokens && row.receipts >= c.receipts, `${peerId} on the leaderboard: ${JSON.stringify(row)}`)
    }
  })

  it('runs jobs in the queue to the reference output, with their chain of servers and contributions', async () => {
    const submitted = await api('/api/v1/jobs', { method: 'POST', body: JSON.stringify({ prompt: EXPECTED[1].prompt, max_tokens: 50, temperature: 0 }) })
    assert.equal(submitted.status, 202)
    assert.match(submitted.body.id, /^job-/)
    assert.ok(['queued', 'running'].includes(submitted.body.status))
    let job: any
    await waitFor('the job to finish', async () => { job = (await api(`/api/v1/jobs/${submitted.body.id as string}`)).body; return job.status === 'done' })
    const full = tokenizer.decode([...EXPECTED[1].promptIds, ...EXPECTED[1].ids])
    assert.equal(EXPECTED[1].prompt + (job.output as string), full)
    assert.equal(job.completion_tokens, 50)
    assert.equal(job.prompt_tokens, EXPECTED[1].promptIds.length)
    assert.deepEqual(job.served_by.map((h: any) => [h.start, h.end]), [[0, 2], [2, 4], [4, 5]])
    assert.deepEqual(job.served_by.map((h: any) => h.peer_id), servers.map(s => s.node.peerId.toString()))
    // Each server processed the prompt and every generated token but the last, over its blocks.
    const fed = EXPECTED[1].promptIds.length + 49
    assert.deepEqual(job.contributions.map((c: any) => [c.tokens, c.block_tokens]), [[fed, 2 * fed], [fed, 2 * fed], [fed, fed]])
    assert.ok(job.tokens_per_second > 0 && job.duration_s > 0)

    const tooLong = await api('/api/v1/jobs', { method: 'POST', body: JSON.stringify({ prompt: 'Once', max_tokens: 100_000 }) })
    assert.equal(tooLong.status, 400)
    assert.equal(tooLong.body.error.code, 'context_length_exceeded')

    const board = (await api('/api/v1/jobs')).body
    assert.equal(board.jobs[0].id, job.id)
    assert.ok(board.contributors.length === 3 && board.contributors.every((c: any) => c.block_tokens > 0))
    const state = (await api('/api/v1/state')).body
    assert.equal(state.models[0].state, 'healthy')
    assert.deepEqual(state.models[0].servers.map((s: any) => [s.start, s.end, s.state]), [[0, 2, 'online'], [2, 4, 'online'], [4, 5, 'online']])
    assert.ok(state.contributors.some((c: any) => c.public_name === 'server-0-2'))
    const metrics = await (await fetch(`${url}metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text()
    assert.match(metrics, /bmrt_model_min_replication\{model="stories260K"\} 1/)
    assert.match(metrics, /bmrt_jobs\{status="done"\} [1-9]/)
  })

  it('refuses pages of other origins and other host names, keeps every endpoint behind the key, and jobs to their owners (issue 20, row 8)', async () => {
    // Before: every answer carried `access-control-allow-origin: *`, any Host was served, and state
    // and metrics were open; a script on any page the operator opened could read and cancel jobs.
    await started.close()
    await openGateway({ modelName: 'not-served', jobConcurrency: 1, jobsFile: join(scratch.dir, 'origin-jobs.jsonl') })
    const port = new URL(url).port
    const auth = { authorization: `Bearer ${KEY}`, 'x-job-owner': OWNER }
    const json = { ...auth, 'content-type': 'application/json' }
    const submitted = await raw(url, 'POST', '/api/v1/jobs', json, JSON.stringify({ prompt: 'Secret plans', max_tokens: 8 }))
    assert.equal(submitted.status, 202)
    const id = submitted.body.id as string

    // A script on a foreign page, even one that holds the key, is refused on every route, preflights too.
    const evil = 'http://evil.example'
    const attempts: Array<[string, string]> = [['GET', '/api/v1/jobs'], ['GET', `/api/v1/jobs/${id}`], ['DELETE', `/api/v1/jobs/${id}`], ['POST', '/api/v1/jobs'],
      ['GET', '/api/v1/state'], ['GET', '/metrics'], ['GET', '/v1/models'], ['POST', '/v1/completions'], ['OPTIONS', `/api/v1/jobs/${id}`], ['OPTIONS', '/v1/chat/completions']]
    for (const [method, path] of attempts) {
      const headers: Record<string, string> = method === 'OPTIONS' ? { origin: evil, 'access-control-request-method': 'DELETE', 'access-control-request-headers': 'authorization' } : { ...json, origin: evil }
      const answer = await raw(url, method, path, headers, method === 'POST' ? JSON.stringify({ prompt: 'Once' }) : undefined)
      assert.deepEqual([method, path, answer.status, answer.body.error?.code], [method, path, 403, 'origin_not_allowed'])
      assert.equal(answer.headers['access-control-allow-origin'], undefined)
    }
    assert.equal((await api(`/api/v1/jobs/${id}`)).body.status, 'running', 'the foreign DELETE did not cancel the job')

    // DNS rebinding: a page of evil.example whose name now points here sends Host: evil.example.
    const rebound = await raw(url, 'GET', '/api/v1/jobs', { ...auth, host: `evil.example:${port}` })
    assert.deepEqual([rebound.status, rebound.body.error?.code], [403, 'host_not_allowed'])
    assert.match(rebound.body.error.message, /--allow-host evil\.example/)
    assert.equal((await raw(url, 'GET', '/', { host: `evil.example:${port}` })).status, 403)

    // With --api-key, the swarm's state and the metrics need it as well.
    for (const path of ['/api/v1/state', '/metrics']) {
      const open = await raw(url, 'GET', path, {})
      assert.deepEqual([path, open.status, open.body.error?.code], [path, 401, 'invalid_api_key'])
    }
    assert.equal((await raw(url, 'GET', '/metrics', auth)).status, 200)

    // The gateway's own pages (same origin, by address or by localhost) are served, without CORS headers.
    const own = new URL(url).origin
    const ownRead = await raw(url, 'GET', `/api/v1/jobs/${id}`, { ...auth, origin: own })
    assert.deepEqual([ownRead.status, ownRead.headers['access-control-allow-origin']], [200, undefined])
    const byName = await raw(url, 'GET', `/api/v1/jobs/${id}`, { ...auth, host: `localhost:${port}`, origin: `http://localhost:${port}` })
    assert.equal(byName.status, 200)
    assert.equal((await raw(url, 'GET', '/jobs', { host: `localhost:${port}` })).status, 200)

    // An --allow-origin origin gets its own origin back (never *), preflight included, and may cancel.
    const preflight = await raw(url, 'OPTIONS', `/api/v1/jobs/${id}`, { origin: ALLOWED_ORIGIN, 'access-control-request-method': 'DELETE' })
    assert.deepEqual([preflight.status, preflight.headers['access-control-allow-origin']], [204, ALLOWED_ORIGIN])
    assert.match(String(preflight.headers['access-control-allow-methods']), /DELETE/)
    const cancel = await raw(url, 'DELETE', `/api/v1/jobs/${id}`, { ...auth, origin: ALLOWED_ORIGIN })
    assert.deepEqual([cancel.status, cancel.headers['access-control-allow-origin']], [200, ALLOWED_ORIGIN])
    await waitFor('the allowed cancel to end the job', async () => (await api(`/api/v1/jobs/${id}`)).body.status === 'cancelled')

    // Jobs belong to their submitter: another client (same key, same origin) sees neither prompt nor
    // output and can neither read nor cancel the job; a submission without a token gets one.
    const other = { authorization: `Bearer ${KEY}`, 'x-job-owner': 'some-other-client-token' }
    const mine = await api('/api/v1/jobs', { method: 'POST', body: JSON.stringify({ prompt: 'Mine alone', max_tokens: 8 }) })
    assert.deepEqual([mine.status, mine.body.owner_token, mine.body.owned, mine.body.prompt], [202, OWNER, true, 'Mine alone'])
    for (const method of ['GET', 'DELETE']) {
      const refused = await raw(url, method, `/api/v1/jobs/${mine.body.id as string}`, other)
      assert.deepEqual([method, refused.status, refused.body.error?.code], [method, 403, 'not_job_owner'])
    }
    const listed = (await raw(url, 'GET', '/api/v1/jobs', other)).body.jobs.find((j: any) => j.id === mine.body.id)
    assert.deepEqual([listed.owned, listed.prompt, listed.output], [false, null, null])
    assert.equal(JSON.stringify((await raw(url, 'GET', '/api/v1/jobs', other)).body).includes('Mine alone'), false)
    const anonymous = await raw(url, 'POST', '/api/v1/jobs', { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, JSON.stringify({ prompt: 'No token sent', max_tokens: 8 }))
    assert.equal(anonymous.status, 202)
    assert.ok(anonymous.body.owner_token.length >= 32, 'a fresh token is returned')
    assert.equal((await raw(url, 'GET', `/api/v1/jobs/${anonymous.body.id as string}`, { authorization: `Bearer ${KEY}` })).status, 403)
    const byToken = await raw(url, 'DELETE', `/api/v1/jobs/${anonymous.body.id as string}`, { authorization: `Bearer ${KEY}`, 'x-job-owner': anonymous.body.owner_token })
    assert.deepEqual([byToken.status, byToken.body.status, byToken.body.prompt], [200, 'cancelled', 'No token sent'])
    assert.equal((await api(`/api/v1/jobs/${mine.body.id as string}`, { method: 'DELETE' })).status, 200)

    await started.close()
    await openGateway()
  })

  it('keeps only keptJobs ended jobs, in memory and in its file, compacting the file while running (issue 20, row 11)', async () => {
    // Before: every ended job stayed in memory, and the file grew by 2 lines a job until a restart.
    await started.close()
    const file = join(scratch.dir, 'kept-jobs.jsonl')
    await openGateway({ modelName: 'not-served', jobConcurrency: 1, keptJobs: 5, jobsFile: file })
    const submit = async (prompt: string): Promise<string> => {
      const job = await api('/api/v1/jobs', { method: 'POST', body: JSON.stringify({ prompt, max_tokens: 4 }) })
      assert.equal(job.status, 202)
      return job.body.id
    }
    const blocker = await submit('Blocker') // runs (waiting for servers of its model) for the whole test
    await waitFor('the blocker to start', async () => (await api(`/api/v1/jobs/${blocker}`)).body.status === 'running')
    for (let i = 0; i < 150; i++) {
      const id = await submit(`Job ${i}`)
      assert.equal((await api(`/api/v1/jobs/${id}`, { method: 'DELETE' })).body.status, 'cancelled')
    }
    const counts = started.gateway.jobs.counts()
    assert.deepEqual(counts, { queued: 0, running: 1, done: 0, failed: 0, cancelled: 5 })
    const board = (await api('/api/v1/jobs')).body
    assert.deepEqual(board.jobs.map((j: any) => j.prompt), ['Job 149', 'Job 148', 'Job 147', 'Job 146', 'Job 145', 'Blocker'])
    const lines = (await readFile(file, 'utf8')).trim().split('\n')
    // 301 lines were written; the file is written whole past 2 × 5 + 256 = 266.
    assert.ok(lines.length <= 267, `the file has ${lines.length} lines`)
    const ids = new Set(board.jobs.map((j: any) => j.id))
    const early = lines.map(l => JSON.parse(l)).filter(l => l.type === 'job' && !ids.has(l.job.id))
    assert.ok(early.length < 150, `the file still names ${early.length} forgotten jobs`)
    assert.equal((await api('/api/v1/state')).status, 200)

    await started.close()
    await openGateway()
  })

  it('closes a request whose body does not arrive within requestTimeoutMs with 408 (issue 20, row 10)', async () => {
    // Before: Node's default, 300 s per request, so a dripping client held its connection that long.
    const gateway = await Gateway.start({ model: new ApiModel(started.model, 'stories260K'), node: started.model.node, port: 0, jobsFile: join(scratch.dir, 'timeout-jobs.jsonl'), requestTimeoutMs: 500 })
    try {
      const socket = connect({ host: '127.0.0.1', port: Number(new URL(gateway.url).port) })
      let answer = ''
      socket.on('data', (chunk: Buffer) => { answer += chunk.toString() })
      socket.write('POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"prompt":')
      await waitFor('the gateway to close the slow request', () => socket.destroyed || socket.readableEnded, 15_000)
      socket.destroy()
      assert.match(answer, /^HTTP\/1\.1 408 /)
    } finally {
      await gateway.close()
    }
  })

  it('refuses jobs past a full queue with 429, cancels, and keeps jobs across a restart', async () => {
    await started.close()
    // One job at a time and one waiting; a model name no server announces keeps the running job
    // waiting for servers, so the queue stays full for as long as the test needs.
    started = await startGateway(BUNDLED_MODEL, { initialPeers: initialPeers() }, {
      httpPort: 0, httpHost: '127.0.0.1', apiKey: KEY, jobsFile: join(scratch.dir, 'jobs.jsonl'), modelAlias: [],
      maxQueuedJobs: 1, jobConcurrency: 1, modelName: 'not-served'
    }, line => logs.push(line))
    url = started.gateway.url
    const submit = async (prompt: string, priority = 0): Promise<{ status: number, body: any }> =>
      await api('/api/v1/jobs', { method: 'POST', body: JSON.stringify({ prompt, max_tokens: 8, temperature: 0, priority }) })
    const running = await submit('One day')
    await waitFor('the first job to start', async () => (await api(`/api/v1/jobs/${running.body.id as string}`)).body.status === 'running')
    const dropped = await submit('The sun')
    assert.equal(dropped.body.status, 'queued')
    assert.equal(dropped.body.queue_position, 1)
    const refused = await submit('Too many')
    assert.equal(refused.status, 429)
    assert.equal(refused.body.error.code, 'queue_full')
    assert.match(refused.body.error.message, /queue is full \(1 of 1 waiting\)/)
    // Cancelling a queued job ends it at once and makes room.
    const cancelled = await api(`/api/v1/jobs/${dropped.body.id as string}`, { method: 'DELETE' })
    assert.equal(cancelled.status, 200)
    assert.equal(cancelled.body.status, 'cancelled')
    const waiting = await submit('The sun was hot.')
    assert.equal(waiting.status, 202)
    // A full queue gives way to a job of higher priority: the lowest queued one ends, saying why
    // (issue 20, row 11: before, priority 5 got the same 429).
    assert.equal((await submit('Same priority')).status, 429)
    const urgent = await submit('Once upon a time', 5)
    assert.deepEqual([urgent.status, urgent.body.queue_position], [202, 1])
    const displaced = (await api(`/api/v1/jobs/${waiting.body.id as string}`)).body
    assert.equal(displaced.status, 'cancelled')
    assert.match(displaced.error, /displaced from the full queue by a job of priority 5/)

    // A restart (after a crash that tore the file's last line): the finished job from before is
    // still there, the cancelled one stays cancelled, the two unfinished ones queue again. A line
    // that is JSON but not a whole job is skipped as well (issue 20, row 9: before, it loaded, and
    // the job list and the state answered 500 from then on).
    await started.close()
    await appendFile(join(scratch.dir, 'jobs.jsonl'), '{"type":"job","job":{"id":"fieldless","status":"done","created_at":1}}\n{"type":"job","job":{"id":"torn')
    await openGateway()
    const afterRestart = [await api('/api/v1/state'), await api('/api/v1/jobs')]
    assert.deepEqual(afterRestart.map(r => [r.status, r.body.error?.message]), [[200, undefined], [200, undefined]])
    assert.ok(logs.some(l => /skipped 2 unreadable line\(s\) in .*jobs\.jsonl \(torn, or not a whole job\)/.test(l)), logs.join('\n'))
    assert.equal((await api('/api/v1/jobs/fieldless')).status, 404)
    assert.ok(!(await readFile(join(scratch.dir, 'jobs.jsonl'), 'utf8')).includes('fieldless'), 'compacted away')
    // A second gateway on the same file is refused: the two would overwrite each other's jobs.
    await assert.rejects(JobStore.open(join(scratch.dir, 'jobs.jsonl')), /jobs\.jsonl is in use by another gateway \(process \d+\); give this one its own --jobs-file/)
    const board = (await api('/api/v1/jobs')).body
    assert.ok(board.jobs.some((j: any) => j.status === 'done' && j.prompt === EXPECTED[1].prompt), 'the finished job survives the restart')
    assert.equal((await api(`/api/v1/jobs/${dropped.body.id as string}`)).body.status, 'cancelled')
    // With servers for its model now, the unfinished jobs run to the end.
    for (const id of [running.body.id as string, urgent.body.id as string]) {
      await waitFor(`job ${id} to finish after the restart`, async () => (await api(`/api/v1/jobs/${id}`)).body.status === 'done')
    }
    const ended = await api(`/api/v1/jobs/${running.body.id as string}`, { method: 'DELETE' })
    assert.equal(ended.status, 409)
    assert.equal((await api('/api/v1/jobs/job-nope')).status, 404)
    const lines = (await readFile(join(scratch.dir, 'jobs.jsonl'), 'utf8')).trim().split('\n')
    assert.ok(lines.every(l => JSON.parse(l).type !== undefined), 'reopening rewrote the file without the torn line')
  })
  it('queues a contributor\'s job by its servers\' verified credits: ahead of any priority, and richer first (issue 21)', async () => {
    await started.close()
    // Two contributors with keys of their own: the servers of one earned 5,000 verified
    // block·tokens (credit rank 4), the other's 50 (rank 2). The ledger's lines, as a gateway wrote them.
    const [rich, poor] = [servers[0], servers[1]].map(s => s.node.peerId.toString())
    const [RICH_KEY, POOR_KEY] = ['key-of-the-rich-contributor', 'key-of-the-poor-contributor']
    const jobsFile = join(scratch.dir, 'credit-jobs.jsonl')
    await writeFile(jobsFile, JSON.stringify({ type: 'credits', credits: [{ peer_id: rich, receipts: 100, tokens: 1000, block_tokens: 5000 }, { peer_id: poor, receipts: 5, tokens: 25, block_tokens: 50 }] }) + '\n')
    const keysFile = join(scratch.dir, 'contributors.txt')
    await writeFile(keysFile, `# api key, peer id\n${RICH_KEY} ${rich}\n\n${POOR_KEY}\t${poor}\n`)
    started = await startGateway(BUNDLED_MODEL, { initialPeers: initialPeers() }, {
      httpPort: 0, httpHost: '127.0.0.1', apiKey: KEY, contributorKeys: keysFile, jobsFile, modelAlias: [],
      maxQueuedJobs: 3, jobConcurrency: 1, modelName: 'not-served' // the running job waits for servers: the queue stays
    }, line => logs.push(line))
    url = started.gateway.url
    assert.ok(logs.some(l => l.includes('contributor keys: 2')), logs.join('\n'))
    const submit = async (prompt: string, key: string, priority = 0): Promise<{ status: number, body: any }> =>
      await api('/api/v1/jobs', { method: 'POST', body: JSON.stringify({ prompt, max_tokens: 4, priority }) }, key)
    const blocker = await submit('One day', KEY)
    await waitFor('the first job to start', async () => (await api(`/api/v1/jobs/${blocker.body.id as string}`)).body.status === 'running')

    const urgent = await submit('Anyone may say 1000', KEY, 1000)
    const poorJob = await submit('The poor one', POOR_KEY) // a contributor's key is let in where the API key is asked for
    const richJob = await submit('The rich one', RICH_KEY, -5)
    assert.deepEqual([urgent, poorJob, richJob].map(j => [j.status, j.body.credit_rank]), [[202, 0], [202, 2], [202, 4]])
    const positions = async (): Promise<unknown[]> => await Promise.all([richJob, poorJob, urgent].map(async j => (await api(`/api/v1/jobs/${j.body.id as string}`)).body.queue_position))
    assert.deepEqual(await positions(), [1, 2, 3], 'by credit rank, whatever the priority')
    // Full: priority cannot displace a contributor's job; a contributor's job displaces the last.
    assert.equal((await submit('Another 1000', KEY, 1000)).status, 429)
    const second = await submit('The poor one again', POOR_KEY)
    assert.deepEqual([second.status, second.body.queue_position], [202, 3], 'after the earlier job of its rank')
    const displaced = (await api(`/api/v1/jobs/${urgent.body.id as string}`)).body
    assert.equal(displaced.status, 'cancelled')
    assert.match(displaced.error, /displaced from the full queue by a contributor's job \(credit rank 2\)/)
    // A wrong key is still refused; the ranks survive a restart.
    assert.equal((await submit('Guessing', 'key-of-the-rich-contributoR')).status, 401)
    await started.close()
    started = await startGateway(BUNDLED_MODEL, { initialPeers: initialPeers() }, {
      httpPort: 0, httpHost: '127.0.0.1', apiKey: KEY, contributorKeys: keysFile, jobsFile, modelAlias: [], maxQueuedJobs: 3, jobConcurrency: 1, modelName: 'not-served'
    }, line => logs.push(line))
    url = started.gateway.url
    // The four unfinished jobs queue again by their ranks: the rich one runs, the blocker goes last.
    await waitFor('the rich job to start', async () => (await api(`/api/v1/jobs/${richJob.body.id as string}`)).body.status === 'running')
    const after = await Promise.all([poorJob, second, blocker].map(async j => (await api(`/api/v1/jobs/${j.body.id as string}`)).body))
    assert.deepEqual(after.map(j => [j.credit_rank, j.queue_position]), [[2, 1], [2, 2], [0, 3]])
  })

  it('reads contributor keys as "<api-key> <peer-id>" lines, and says which line is wrong', () => {
    const peer = servers[0].node.peerId.toString()
    assert.deepEqual([...parseContributorKeys(`# comment\n\n  key-of-sixteen-ch   ${peer}  \r\n`, 'keys.txt')], [['key-of-sixteen-ch', peer]])
    const bad: Array<[string, RegExp]> = [
      [`short ${peer}`, /keys\.txt:1: the key has 5 characters; give at least 16/],
      ['key-of-sixteen-ch', /keys\.txt:1: a line is "<api-key> <peer-id>", got 1 field/],
      [`key-of-sixteen-ch ${peer} extra`, /got 3 field/],
      ['\nkey-of-sixteen-ch QmNotAPeer', /keys\.txt:2: QmNotAPeer is not a peer id/],
      [`key-of-sixteen-ch ${peer}\nkey-of-sixteen-ch ${peer}`, /keys\.txt:2: this key is given twice/]
    ]
    for (const [text, error] of bad) assert.throws(() => parseContributorKeys(text, 'keys.txt'), (err: Error) => err instanceof ContributorKeysError && error.test(err.message), text)
    assert.deepEqual([0, 1, 9, 10, 5000, 1e12].map(creditRank), [0, 1, 1, 2, 4, 13])
  })
})
