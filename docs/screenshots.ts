// `npm run screenshots`: the README's pictures of the web pages, taken in headless Chromium from a
// live local swarm (the same one `npm start` runs) after a chat turn and a few jobs.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { runDemo } from '../src/cli/demo.js'

const OUT = fileURLToPath(new URL('../../docs/screenshots/', import.meta.url))
const MODEL = fileURLToPath(new URL('../../models/stories260K', import.meta.url))
const CHROMIUM = process.env.BMRT_CHROMIUM ?? '/usr/bin/chromium'

const scratch = await mkdtemp(join(tmpdir(), 'bmrt-screenshots-'))
let url = ''
const demo = await runDemo({
  model: MODEL, httpPort: 0, httpHost: '127.0.0.1', jobsFile: join(scratch, 'jobs.jsonl'), modelAlias: [], maxQueuedJobs: 64, jobConcurrency: 1
}, line => { const m = /serving \S+ at (\S+)/.exec(line); if (m !== null) url = m[1] })
const browser = await chromium.launch({ executablePath: CHROMIUM })
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } })
  await page.goto(url)
  await page.fill('#system', 'You tell short stories for children.')
  await page.fill('#temperature', '0')
  await page.fill('#max-tokens', '60')
  await page.fill('#prompt', 'Tell me a story about a dog and a ball.')
  await page.click('#send')
  await page.locator('.message.assistant[data-done="true"]').waitFor()
  await page.screenshot({ path: join(OUT, 'chat.png') })

  await page.goto(`${url}jobs`)
  for (const prompt of ['Once upon a time', 'Tom had a big dog named Max.', 'The little birdie was very smart.']) {
    await page.fill('#job-prompt', prompt)
    await page.fill('#job-max-tokens', '40')
    await page.click('#job-form [type=submit]')
  }
  await page.locator('tr.job[data-status="done"]').nth(2).waitFor()
  await page.screenshot({ path: join(OUT, 'jobs.png') })

  await page.goto(`${url}swarm`)
  await page.locator('tr.server td.state', { hasText: 'online' }).nth(2).waitFor()
  await page.screenshot({ path: join(OUT, 'swarm.png') })
  console.log(`wrote chat.png, jobs.png and swarm.png to ${OUT}`)
} finally {
  await browser.close()
  await demo.close()
  await rm(scratch, { recursive: true, force: true })
}
