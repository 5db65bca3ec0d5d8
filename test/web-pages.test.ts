// The gateway's web pages in headless Chromium (Debian's chromium through playwright-core), on a
// swarm of real bmrt-node processes: the job board shows a job wait in the queue and finish with
// its chain of servers, the chat streams the model's own greedy reply, model output that contains
// HTML stays text, and the swarm monitor shows the servers and marks a SIGKILLed one long before
// its record expires.

import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import { collect, generate } from '../src/inference/generate.js'
import { LocalModel } from '../src/inference/model.js'
import { startGateway, type StartedGateway } from '../src/cli/gateway.js'
import { BUNDLED_MODEL, scratchDir, startNode } from './helpers.js'

const CHROMIUM = process.env.BMRT_CHROMIUM ?? '/usr/bin/chromium'
const EXPIRATION_S = 120

/** Whitespace-insensitive text, as rendered markdown may wrap or trim it. */
const squash = (text: string): string => text.replace(/\s+/g, ' ').trim()

describe('web pages in a real browser', function () {
  this.timeout(180_000)
  let browser: Browser
  let page: Page
  let gateway: StartedGateway
  let scratch: Awaited<ReturnType<typeof scratchDir>>
  const nodes: Array<{ process: ChildProcess, peerId: string, output: string[] }> = []
  const pageErrors: string[] = []
  let nodeArgs: string[]

  const startServer = async (blocks: string, name: string): Promise<{ process: ChildProcess, peerId: string, output: string[] }> => {
    const node = await startNode([...nodeArgs, '--blocks', blocks, '--public-name', name])
    nodes.push(node)
    return node
  }

  before(async function () {
    if (!existsSync(CHROMIUM)) {
      if (process.env.BMRT_REQUIRE_BROWSER === '1') throw new Error(`BMRT_REQUIRE_BROWSER=1 but there is no Chromium at ${CHROMIUM}`)
      console.log(`    (skipped: no Chromium at ${CHROMIUM}; apt install chromium, or set BMRT_CHROMIUM)`)
      this.skip()
    }
    scratch = await scratchDir()
    nodeArgs = ['--model', BUNDLED_MODEL, '--host-addrs', '/ip4/127.0.0.1/tcp/0', '--throughput', '1', '--update-period', String(EXPIRATION_S / 3), '--expiration', String(EXPIRATION_S)]
    const first = await startNode([...nodeArgs, '--new-swarm', '--blocks', '0:2', '--public-name', 'alpha'])
    nodes.push(first)
    nodeArgs.push('--initial-peers', first.output.find(l => l.includes('share as --initial-peers: '))!.split(': ')[1])
    await startServer('2:4', 'bravo')
    // Blocks 4:5 have no server yet: the job board test starts it.
    gateway = await startGateway(BUNDLED_MODEL, { initialPeers: [nodeArgs[nodeArgs.length - 1]] }, {
      httpPort: 0, httpHost: '127.0.0.1', jobsFile: join(scratch.dir, 'jobs.jsonl'), modelAlias: [], maxQueuedJobs: 8, jobConcurrency: 1
    }, () => {})
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
    page = await browser.newPage()
    page.on('pageerror', err => pageErrors.push(err.message))
    page.on('console', message => { if (message.type() === 'error') pageErrors.push(message.text()) })
  })
  after(async () => {
    await browser?.close()
    await gateway?.close()
    nodes.forEach(n => n.process.kill('SIGKILL'))
    await scratch?.cleanup()
  })
  afterEach(() => {
    assert.deepEqual(pageErrors.filter(e => !/Failed to load resource/.test(e)), [], 'the page logged errors')
  })

  it('/jobs shows a job waiting in the queue, then both jobs done with their served-by chain', async () => {
    await page.goto(`${gateway.gateway.url}jobs`)
    const submit = async (prompt: string): Promise<void> => {
      await page.fill('#job-prompt', prompt)
      await page.fill('#job-max-tokens', '20')
      await page.fill('#job-temperature', '0')
      await page.click('#job-form [type=submit]')
    }
    // The swarm lacks blocks 4:5, so the first job waits for servers and the second for the first.
    await submit('Once upon a time')
    await page.locator('tr.job td.status', { hasText: 'running' }).waitFor()
    await submit('Tom had a big dog named Max.')
    const queued = page.locator('tr.job', { has: page.locator('td.status', { hasText: 'queued' }) })
    await queued.waitFor()
    assert.match(await queued.locator('td.status').innerText(), /queued/)

    const charlie = await startServer('4:5', 'charlie')
    const rows = page.locator('tr.job')
    await page.locator('tr.job[data-status="done"]').nth(1).waitFor({ timeout: 60_000 })
    assert.equal(await rows.count(), 2)
    for (const row of await rows.all()) {
      const servedBy = await row.locator('td.served-by').innerText()
      assert.match(servedBy, /0:2.*2:4.*4:5/s)
      assert.ok(servedBy.includes(charlie.peerId.slice(-6)), `served-by names charlie: ${servedBy}`)
      assert.match(await row.locator('td.tokens').innerText(), /20/)
    }
    const first = page.locator('tr.job', { hasText: 'Once upon a time' })
    assert.match(squash(await first.locator('td.output').innerText()), /^, there was a little girl named Lily/)

    // The leaderboard: charlie's credits, from the receipts it signed for both jobs (40 tokens fed
    // to its one block, and each prompt), as the ledger counted them.
    await gateway.gateway.credits.flush()
    const earned = gateway.gateway.credits.credits.find(c => c.peer_id === charlie.peerId)
    assert.ok(earned !== undefined && earned.block_tokens > 40, JSON.stringify(gateway.gateway.credits.credits))
    const shown = page.locator(`tr.contributor[data-peer-id="${charlie.peerId}"]`)
    await shown.locator('td.num').nth(2).filter({ hasText: new RegExp(`^${earned.block_tokens.toLocaleString('en-US').replace(/,/g, '[,.\\s\u00a0\u202f]?')}$`) }).waitFor()
  })

  it('/ streams the greedy chat reply the model gives on this machine', async () => {
    await page.goto(gateway.gateway.url)
    await page.locator('select#model option').first().waitFor({ state: 'attached' })
    await page.fill('#temperature', '0')
    await page.fill('#max-tokens', '40')
    const request = page.waitForRequest(r => r.url().endsWith('/v1/chat/completions'))
    await page.fill('#prompt', 'Tell me about a cat.')
    await page.click('#send')
    const body = JSON.parse((await request).postData()!)
    assert.equal(body.stream, true)
    assert.equal(body.temperature, 0)
    const reply = page.locator('.message.assistant[data-done="true"]').last()
    await reply.waitFor({ timeout: 60_000 })

    const local = await LocalModel.load(BUNDLED_MODEL)
    const reference = await collect(generate(local, local.tokenizer.encodeChat(body.messages), { maxNewTokens: 40, temperature: 0 }))
    local.close()
    assert.equal(squash(await reply.locator('.content').innerText()), squash(reference.text))
    assert.match(await page.locator('#speed').innerText(), /\d/)
    assert.equal(await page.locator('.message.user .content').last().innerText(), 'Tell me about a cat.')

    // Regenerate asks again in place of the last reply (greedy: the same text).
    await page.click('#regenerate')
    await page.locator('.message.assistant[data-done="true"]').waitFor()
    assert.equal(await page.locator('.message.assistant').count(), 1)
    assert.equal(squash(await page.locator('.message.assistant .content').innerText()), squash(reference.text))
    // The conversation is kept in the browser across a reload.
    await page.reload()
    assert.equal(await page.locator('.message.user .content').last().innerText(), 'Tell me about a cat.')
    assert.match(await page.locator('#conversations').innerText(), /Tell me about a cat/)
  })

  it('/ shows model output containing HTML as text and never runs it', async () => {
    const hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> and **bold**'
    // The model is the one thing a test cannot make write HTML, so this reply comes from the route.
    await page.route('**/v1/chat/completions', async route => {
      const chunk = (delta: object, finish: string | null = null): string =>
        `data: ${JSON.stringify({ id: 'chatcmpl-x', object: 'chat.completion.chunk', created: 1, model: 'stories260K', choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] })}\n\n`
      await route.fulfill({ status: 200, headers: { 'content-type': 'text/event-stream' }, body: chunk({ role: 'assistant', content: '' }) + chunk({ content: hostile }) + chunk({}, 'stop') + 'data: [DONE]\n\n' })
    })
    try {
      await page.click('#new-chat') // so the one assistant message on the page is this reply
      await page.fill('#prompt', '<b>not bold</b>')
      await page.click('#send')
      const reply = page.locator('.message.assistant[data-done="true"]')
      await reply.waitFor()
      assert.equal(await page.locator('.message.assistant').count(), 1)
      const content = reply.locator('.content')
      assert.match(await content.innerText(), /<img src=x onerror="window.pwned=1"><script>window.pwned=2<\/script>/)
      assert.equal(await content.locator('img, script').count(), 0)
      assert.equal(await content.locator('strong').innerText(), 'bold', 'markdown still renders')
      assert.equal(await page.evaluate('window.pwned'), undefined)
      assert.equal(await page.locator('.message.user .content').last().innerText(), '<b>not bold</b>')
    } finally {
      await page.unroute('**/v1/chat/completions')
    }
  })

  it('/swarm shows the servers with their spans and states, and marks a killed one within its expiry', async () => {
    await page.goto(`${gateway.gateway.url}swarm`)
    const model = page.locator('section.model[data-model="stories260K"]')
    const row = (peerId: string) => model.locator(`tr.server[data-peer-id="${peerId}"]`)
    for (const [node, span] of nodes.map((n, i) => [n, ['0:2', '2:4', '4:5'][i]] as const)) {
      await row(node.peerId).locator('td.state', { hasText: 'online' }).waitFor({ timeout: 30_000 })
      assert.equal(await row(node.peerId).locator('td.span').innerText(), span)
    }
    assert.equal(await model.locator('.model-state').innerText(), 'healthy')
    assert.equal(await model.locator('.coverage .block').count(), 5)
    assert.equal(await row(nodes[0].peerId).locator('.blocks .block.state-online').count(), 2)

    // Its record stays valid for EXPIRATION_S; the monitor's probe must tell well before that.
    nodes[2].process.kill('SIGKILL')
    await row(nodes[2].peerId).locator('td.state', { hasText: 'unreachable' }).waitFor({ timeout: EXPIRATION_S * 1000 / 2 })
    await model.locator('.model-state', { hasText: 'broken' }).waitFor()
    assert.equal(await model.locator('.coverage .block[data-count="0"]').count(), 1)
    assert.equal(await row(nodes[0].peerId).locator('td.state').innerText(), 'online')
  })
})
