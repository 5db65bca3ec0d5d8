// The gateway as users start it: `npm start` (bmrt demo: a local swarm plus the gateway, stopped
// cleanly by Ctrl-C) and `bmrt-node --http-port` (a server that also serves the API), and a demo
// that keeps serving while one address holds hundreds of slow connections.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { EXPECTED } from './expected.js'
import { POSIX_SIGNALS, ROOT, runCommand, scratchDir, startNode, waitFor } from './helpers.js'

/** Resolves with the first captured group once a line of `lines` matches `pattern`. */
async function lineMatching (lines: string[], pattern: RegExp, what: string, timeoutMs = 60_000): Promise<string> {
  const find = (): RegExpExecArray | undefined => lines.map(l => pattern.exec(l)).find(m => m !== null) ?? undefined
  await waitFor(what, () => find() !== undefined, timeoutMs).catch(() => { throw new Error(`no ${what} in:\n${lines.join('\n')}`) })
  return find()![1]
}

async function complete (url: string, prompt: string, signal?: AbortSignal): Promise<any> {
  const response = await fetch(`${url}v1/completions`, { signal, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'stories260K', prompt, max_tokens: 50, temperature: 0 }) })
  assert.equal(response.status, 200)
  return await response.json()
}

describe('starting the gateway from the command line', function () {
  this.timeout(120_000)

  it('npm start (bmrt demo) runs 3 servers and a gateway, prints the URLs, and Ctrl-C stops it all', async () => {
    const scratch = await scratchDir()
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'bmrt.js'), 'demo', '--http-port', '0', '--jobs-file', join(scratch.dir, 'jobs.jsonl')], { stdio: ['ignore', 'pipe', 'pipe'] })
    const lines: string[] = []
    createInterface({ input: child.stdout! }).on('line', line => lines.push(line))
    child.stderr!.on('data', (chunk: Buffer) => lines.push(chunk.toString()))
    try {
      const url = await lineMatching(lines, /gateway: serving stories260K at (http:\/\/127\.0\.0\.1:\d+\/)/, 'gateway URL')
      // Printed with the URL, a line after it (the pipe may deliver them apart).
      assert.equal(await lineMatching(lines, /swarm monitor {3}(\S+)/, 'swarm monitor line'), `${url}swarm`)
      assert.equal(lines.filter(l => /^\w+: online: serving blocks/.test(l)).length, 3)
      const completion = await complete(url, EXPECTED[0].prompt)
      assert.ok((EXPECTED[0].prompt + completion.choices[0].text as string).startsWith(EXPECTED[0].text))
      const state = await (await fetch(`${url}api/v1/state`)).json() as any
      assert.deepEqual(state.models[0].servers.map((s: any) => [s.public_name, `${s.start as number}:${s.end as number}`, s.state]),
        [['alpha', '0:2', 'online'], ['bravo', '2:3', 'online'], ['charlie', '3:5', 'online']])
      assert.equal((await fetch(url)).headers.get('content-type'), 'text/html; charset=utf-8')

      if (POSIX_SIGNALS) { // Ctrl-C; Windows has no SIGINT between processes
        child.kill('SIGINT')
        const [code] = await once(child, 'exit')
        assert.equal(code, 0, lines.join('\n'))
        assert.ok(lines.some(l => l === 'stopped'))
        await assert.rejects(fetch(url), 'the port is closed')
      }
    } finally {
      child.kill('SIGKILL')
      await scratch.cleanup()
    }
  })

  it('bmrt-node --http-port serves the API for the swarm it joins', async () => {
    const scratch = await scratchDir()
    const node = await startNode(['--new-swarm', '--blocks', '0:5', '--host-addrs', '/ip4/127.0.0.1/tcp/0', '--throughput', '1',
      '--http-port', '0', '--jobs-file', join(scratch.dir, 'jobs.jsonl'), '--api-key', 'k'])
    try {
      const url = await lineMatching(node.output, /gateway: serving stories260K at (\S+)/, 'gateway URL')
      // Printed with the URL, a few lines after it (the pipe may deliver them apart).
      assert.match(await lineMatching(node.output, /(OpenAI API .*)/, 'OpenAI API line'), /needs the API key/)
      assert.equal((await fetch(`${url}v1/models`)).status, 401)
      const response = await fetch(`${url}v1/models`, { headers: { authorization: 'Bearer k' } })
      assert.deepEqual(((await response.json()) as any).data.map((m: any) => m.id), ['stories260K'])
      if (POSIX_SIGNALS) {
        node.process.kill('SIGTERM')
        const [code] = await once(node.process, 'exit')
        assert.equal(code, 0)
      }
    } finally {
      node.process.kill('SIGKILL')
      await scratch.cleanup()
    }
  })

  it('bmrt demo under ulimit -n 256 serves 127.0.0.1 while 127.0.0.2 holds 300 requests that never finish (issue 20, row 10)', async function () {
    // Linux only: ulimit, and every 127.x.y.z address on the loopback interface.
    if (process.platform !== 'linux') this.skip()
    const scratch = await scratchDir()
    const child = spawn('bash', ['-c', 'ulimit -n 256 && exec "$@"', 'bash', process.execPath, join(ROOT, 'bin', 'bmrt.js'), 'demo', '--http-port', '0',
      '--jobs-file', join(scratch.dir, 'jobs.jsonl')], { stdio: ['ignore', 'pipe', 'pipe'] })
    const lines: string[] = []
    createInterface({ input: child.stdout! }).on('line', line => lines.push(line))
    child.stderr!.on('data', (chunk: Buffer) => lines.push(chunk.toString()))
    const attack: Socket[] = []
    let closed = 0
    try {
      const url = await lineMatching(lines, /gateway: serving stories260K at (http:\/\/127\.0\.0\.1:\d+\/)/, 'gateway URL')
      // Each sends its headers and the start of a 100 kB body, then nothing: before, every one of
      // them held a file descriptor of the gateway until the process had none left.
      for (let i = 0; i < 300; i++) {
        const socket = connect({ host: '127.0.0.1', port: Number(new URL(url).port), localAddress: '127.0.0.2' })
        socket.on('error', () => {})
        socket.on('close', () => closed++)
        socket.write('POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"prompt":')
        attack.push(socket)
      }
      await waitFor('every attacking connection to be made or refused', () => attack.every(s => !s.connecting))
      // The honest user is served within 30 s (state and completion together), attack or not.
      const honest = AbortSignal.timeout(30_000)
      const state = await (await fetch(`${url}api/v1/state`, { signal: honest })).json() as any
      assert.equal(state.models[0].state, 'healthy')
      const completion = await complete(url, EXPECTED[0].prompt, honest)
      assert.ok((EXPECTED[0].prompt + completion.choices[0].text as string).startsWith(EXPECTED[0].text))
      // The gateway closed all but 64 (--max-connections-per-ip) of the attacker's connections.
      await waitFor('the gateway to close the connections past the cap', () => closed >= 236)
      assert.equal(attack.filter(s => !s.destroyed).length, 64)
    } finally {
      attack.forEach(s => s.destroy())
      child.kill('SIGKILL')
      await scratch.cleanup()
    }
  })

  it('refuses --allow-origin * before starting anything: the gateway never lets every origin in', async () => {
    const result = await runCommand('bmrt', ['demo', '--http-port', '0', '--allow-origin', '*'])
    assert.equal(result.code, 2, result.stderr)
    assert.match(result.stderr, /--allow-origin takes origins such as https:\/\/app\.example:8443 \(scheme, host and port, no path, never \*\), got \*/)
    assert.doesNotMatch(result.stdout, /serving blocks/)
  })
})
