// A model of real size through a swarm of real `bmrt-node` processes on this machine, and a client
// in this process over libp2p (loopback TCP): the figures a user of a GPU swarm sees.
//  - single stream: decode tokens/s of one session (greedy, one token per step through every hop,
//    the client's head included), median of --runs;
//  - time to first token for a --prompt-tokens prompt: opening the servers' sessions, the prefill
//    through every hop and the head, median of --runs;
//  - --sessions concurrent sessions decoding at once: their tokens together per second of wall time;
//  - the client's head alone per token, and each server's load time as it printed it.
// Servers load blocks with --load-format (default dummy: random weights of the shape, so a 70B
// model needs no checkpoint) on --device; they are started one after another (the second plans
// its GPU memory after the first has taken its own) and stopped at the end.
//
//   npm run bench:gpu-swarm -- --model DIR --spans 0:40,40:80 [--device cuda] [--json FILE]
// DIR needs config.json and the tokenizer (bmrt make-test-model writes them; with
// --load-format safetensors the weights too).

import '../src/util/polyfill.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type { LoadFormat } from '../src/inference/dummy-weights.js'
import type { LanguageModelSession } from '../src/inference/model.js'
import { argmax } from '../src/inference/sampling.js'
import { DistributedModel } from '../src/petals/client/distributed-model.js'
import { median } from '../src/util/stats.js'

const { values: o } = parseArgs({
  options: {
    model: { type: 'string' },
    spans: { type: 'string', default: '0:40,40:80' },
    device: { type: 'string', default: 'cuda' },
    'head-device': { type: 'string' },
    'load-format': { type: 'string', default: 'dummy' },
    'prompt-tokens': { type: 'string', default: '512' },
    'new-tokens': { type: 'string', default: '64' },
    sessions: { type: 'string', default: '8' },
    runs: { type: 'string', default: '3' },
    'attn-cache-tokens': { type: 'string' },
    json: { type: 'string' }
  }
})
if (o.model === undefined) throw new Error('give --model DIR (config.json and a tokenizer; see the header of bench/gpu-swarm.ts)')
const modelDir = o.model
const spans = o.spans.split(',')
const loadFormat = o['load-format'] as LoadFormat
const promptTokens = Number(o['prompt-tokens'])
const newTokens = Number(o['new-tokens'])
const sessions = Number(o.sessions)
const runs = Number(o.runs)
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const log = (line: string): void => { process.stdout.write(`${line}\n`) }

interface Server { process: ChildProcess, lines: string[], address: string }

/** Starts bmrt-node for `blocks`; resolves once it is online, with what it printed. */
async function startServer (blocks: string, initialPeer?: string): Promise<Server> {
  const args = [join(ROOT, 'bin', 'bmrt-node.js'), '--model', modelDir, '--blocks', blocks, '--device', o.device, '--load-format', loadFormat,
    '--host-addrs', '/ip4/127.0.0.1/tcp/0', ...(initialPeer === undefined ? ['--new-swarm'] : ['--initial-peers', initialPeer]),
    ...(o['attn-cache-tokens'] !== undefined ? ['--attn-cache-tokens', o['attn-cache-tokens']] : [])]
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  child.stderr!.on('data', (chunk: Buffer) => lines.push(...chunk.toString().trimEnd().split('\n').map(l => `stderr: ${l}`)))
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', line => {
      lines.push(line)
      if (!line.startsWith('  block ')) log(`  [${blocks}] ${line}`)
      if (line.startsWith('online:')) resolve()
    })
    child.once('exit', code => reject(new Error(`bmrt-node ${blocks} exited with ${code} before going online:\n${lines.join('\n')}`)))
  })
  const address = lines.find(l => l.includes('share as --initial-peers'))!.split(': ')[1]
  return { process: child, lines, address }
}

/** Prompt ids that any tokenizer and vocabulary take. */
function prompt (length: number, salt: number, vocab: number): number[] {
  return Array.from({ length }, (_, i) => 3 + ((i * 7919 + salt * 104729) % Math.min(vocab - 3, 500)))
}

/** Greedy decode of `count` tokens after `ids`; returns seconds per decode step (after the first token). */
async function decode (session: LanguageModelSession, ids: number[], count: number): Promise<{ stepSeconds: number[], firstLogits: Float32Array }> {
  const firstLogits = await session.step(ids)
  let next = argmax(firstLogits)
  const stepSeconds: number[] = []
  for (let i = 1; i < count; i++) {
    const started = performance.now()
    next = argmax(await session.step([next]))
    stepSeconds.push((performance.now() - started) / 1000)
  }
  return { stepSeconds, firstLogits }
}

const servers: Server[] = []
let model: DistributedModel | undefined
try {
  log(`starting ${spans.length} bmrt-node processes (${spans.join(', ')}) on ${o.device} with ${loadFormat} weights`)
  for (const blocks of spans) servers.push(await startServer(blocks, servers[0]?.address))
  model = await DistributedModel.load(modelDir, {
    initialPeers: [servers[0].address],
    head: { loadFormat, device: o['head-device'] ?? o.device, format: 'bf16' },
    onProgress: m => log(`  client: ${m}`)
  })
  const { config } = model
  log(`model: ${config.numLayers} blocks, hidden ${config.hiddenSize}, intermediate ${config.intermediateSize}, ${config.numHeads} heads, ${config.numKvHeads} KV heads, vocab ${config.vocabSize}`)

  // Warm-up: routes, streams, graphs, JIT.
  const warm = await model.openSession(32)
  await decode(warm, prompt(8, 0, config.vocabSize), 8)
  await warm.close()

  const single: number[] = []
  for (let r = 0; r < runs; r++) {
    const session = await model.openSession(16 + newTokens)
    const { stepSeconds } = await decode(session, prompt(16, r + 1, config.vocabSize), newTokens)
    await session.close()
    single.push(stepSeconds.length / stepSeconds.reduce((a, b) => a + b, 0))
    log(`  single stream run ${r + 1}: ${single[r].toFixed(1)} tokens/s (median step ${(1000 * median(stepSeconds)).toFixed(2)} ms)`)
  }

  // Sessions open on the servers with the first step, so this is opening plus the prefill plus the head.
  const firstToken: number[] = []
  for (let r = 0; r < runs; r++) {
    const started = performance.now()
    const session = await model.openSession(promptTokens + 1)
    argmax(await session.step(prompt(promptTokens, 100 + r, config.vocabSize)))
    firstToken.push(performance.now() - started)
    await session.close()
    log(`  time to first token, ${promptTokens}-token prompt, run ${r + 1}: ${firstToken[r].toFixed(0)} ms`)
  }

  const started = performance.now()
  const concurrent = await Promise.all(Array.from({ length: sessions }, async (_, s) => {
    const session = await model!.openSession(16 + newTokens)
    const sessionStarted = performance.now()
    const { stepSeconds } = await decode(session, prompt(16, 200 + s, config.vocabSize), newTokens)
    const seconds = (performance.now() - sessionStarted) / 1000
    await session.close()
    return { tokens: stepSeconds.length + 1, seconds }
  }))
  const wall = (performance.now() - started) / 1000
  const aggregate = concurrent.reduce((sum, c) => sum + c.tokens, 0) / wall
  log(`  ${sessions} concurrent sessions: ${aggregate.toFixed(1)} tokens/s together (${concurrent.reduce((s, c) => s + c.tokens, 0)} tokens in ${wall.toFixed(2)} s; per session median ${median(concurrent.map(c => c.tokens / c.seconds)).toFixed(1)} tokens/s)`)

  const row = new Float32Array(config.hiddenSize).fill(0.5)
  const headMs: number[] = []
  for (let r = 0; r < 22; r++) {
    const t = performance.now()
    await model.head.logits(row)
    if (r >= 2) headMs.push(performance.now() - t)
  }

  const result = {
    model: modelDir,
    spans,
    device: o.device,
    headDevice: model.head.device,
    loadFormat,
    singleStreamTokensPerSecond: median(single),
    singleStreamRuns: single,
    timeToFirstTokenMs: median(firstToken),
    timeToFirstTokenRuns: firstToken,
    promptTokens,
    concurrentSessions: sessions,
    concurrentTokensPerSecond: aggregate,
    concurrentPerSessionTokensPerSecond: median(concurrent.map(c => c.tokens / c.seconds)),
    clientHeadMsPerToken: median(headMs),
    serverLoadLines: servers.map(s => s.lines.find(l => l.startsWith('loaded blocks')) ?? ''),
    serverThroughputLines: servers.map(s => s.lines.find(l => l.startsWith('throughput')) ?? '')
  }
  log(`\n${spans.length} servers (${spans.join(', ')}) on ${o.device}, ${loadFormat} weights, client head on ${model.head.device}:`)
  log(`  single stream: ${result.singleStreamTokensPerSecond.toFixed(1)} tokens/s (median of ${runs}: ${single.map(s => s.toFixed(1)).join(', ')})`)
  log(`  time to first token, ${promptTokens}-token prompt: ${result.timeToFirstTokenMs.toFixed(0)} ms (median of ${runs})`)
  log(`  ${sessions} concurrent sessions: ${aggregate.toFixed(1)} tokens/s together, ${result.concurrentPerSessionTokensPerSecond.toFixed(1)} per session`)
  log(`  client head: ${result.clientHeadMsPerToken.toFixed(2)} ms per token on ${model.head.device}`)
  for (const line of result.serverLoadLines) log(`  server: ${line}`)
  if (o.json !== undefined) await writeFile(o.json, JSON.stringify(result, null, 2))
} finally {
  await model?.close()
  for (const s of servers) s.process.kill('SIGTERM')
  await Promise.all(servers.map(async s => await new Promise(resolve => { if (s.process.exitCode !== null) resolve(null); else s.process.once('exit', resolve) })))
}
