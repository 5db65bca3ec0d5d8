// The commands as a user runs them: real processes, real output.

import assert from 'node:assert/strict'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expectFailures, runCommand as bmrt, scratchDir, startNode } from './helpers.js'

describe('bmrt command line', () => {
  it('generate streams the bundled model\'s greedy story and reports tokens/s', async () => {
    const { code, stdout, stderr } = await bmrt('bmrt', ['generate', '--prompt', 'Once upon a time', '--max-new-tokens', '50', '--show-ids'])
    assert.equal(code, 0, stderr)
    assert.equal(stdout, 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it\n')
    assert.match(stderr, /\[50 tokens, finished by length; prompt 5 tokens in [\d.]+ ms; [\d.]+ tokens\/s\]/)
    assert.match(stderr, /generated ids: \[432,383,286,/)
  })

  it('falls back to the JS backend with one warning when the addon is unavailable', async () => {
    const { code, stdout, stderr } = await bmrt('bmrt', ['generate', '--max-new-tokens', '10'], { BMRT_DISABLE_NATIVE: '1' })
    assert.equal(code, 0, stderr)
    assert.equal(stdout, 'Once upon a time, there was a little girl named Lily\n')
    assert.equal(stderr.match(/the native addon is not available \(disabled by BMRT_DISABLE_NATIVE=1\); running blocks on the JS backend/g)?.length, 1)
    assert.match(stderr, /on the js backend/)
    const forced = await bmrt('bmrt', ['generate', '--backend', 'native'], { BMRT_DISABLE_NATIVE: '1' })
    assert.equal(forced.code, 2)
    assert.match(forced.stderr, /bmrt generate: the native addon is not available \(disabled by BMRT_DISABLE_NATIVE=1\); use --backend js/)
  })

  it('bmrt-node explains what it needs to start', async () => {
    // Flags that cannot work exit with 2 (EXIT_BAD_FLAGS) and point at the help; failures at run time with 1.
    await expectFailures('bmrt-node', [
      { args: ['--new-swarm'], code: 2, stderr: /bmrt-node: give --blocks START:END or --num-blocks N.*\n\(bmrt-node --help lists the options\)/ },
      { args: ['--blocks', '0:2'], code: 2, stderr: /give --initial-peers MULTIADDR or --swarm NAME\|FILE to join a swarm, or --new-swarm to start one/ },
      // --blocks is checked against config.json before the node starts.
      { args: ['--new-swarm', '--blocks', '3:9', '--host-addrs', '/ip4/127.0.0.1/tcp/0'], code: 2, stderr: /bmrt-node: --blocks: block span 3:9 is not within the model's 5 blocks/ },
      { args: ['--relay-only', '--new-swarm', '--blocks', '0:2'], code: 2, stderr: /bmrt-node: --relay-only serves no blocks and must be reachable/ },
      { args: ['--use-relay', '--new-swarm', '--blocks', '0:2'], code: 2, stderr: /bmrt-node: --use-relay needs --initial-peers naming a relay/ },
      { args: ['--blocks', '0:2', '--initial-peers', 'localhost:1234'], code: 2, stderr: /expected a multiaddr such as/ }
    ])
    // A GPU needs an addon built with CUDA (this test's machine has none) and a device.
    const gpu = await bmrt('bmrt-node', ['--new-swarm', '--device', 'cuda', '--host-addrs', '/ip4/127.0.0.1/tcp/0'])
    assert.equal(gpu.code, /--device cuda needs/.test(gpu.stderr) ? 2 : 1)
    assert.match(gpu.stderr, /bmrt-node: (this build of the native addon has no CUDA path|no CUDA device found|--device cuda needs the native backend)/)
    const badDevice = await bmrt('bmrt-node', ['--new-swarm', '--device', 'tpu', '--num-blocks', '1', '--host-addrs', '/ip4/127.0.0.1/tcp/0'])
    assert.match(badDevice.stderr, /unknown device 'tpu' for the native backend: use cpu, cuda, cuda:N or auto|--device tpu needs the native backend/)
    const help = await bmrt('bmrt-node', ['--help'])
    for (const option of ['--blocks', '--num-blocks', '--initial-peers', '--new-swarm', '--public-name', '--identity', '--port', '--host-addrs', '--announce-addrs', '--public-ip', '--throughput', '--balance-quality', '--update-period', '--expiration', '--attn-cache-tokens', '--inference-max-length', '--max-sessions-per-peer', '--backend', '--dtype', '--quant', '--threads', '--device', '--http-port', '--relay-only', '--use-relay']) {
      assert.ok(help.stdout.includes(option), `${option} missing from bmrt-node --help`)
    }
  })

  it('bmrt-node refuses a damaged identity file at once, and warns about one others can read', async function () {
    if (process.platform === 'win32') this.skip() // file modes
    const { dir, cleanup } = await scratchDir()
    const args = ['--new-swarm', '--blocks', '0:2', '--host-addrs', '/ip4/127.0.0.1/tcp/0', '--throughput', '1', '--identity']
    try {
      const path = join(dir, 'identity.key')
      const first = await startNode([...args, path])
      first.process.kill('SIGKILL')
      assert.ok(first.output.includes(`created identity ${path}`))
      assert.ok(!first.output.some(l => l.includes('warning')), first.output.join('\n'))

      // One flipped bit in the seed (byte 5 of 32, after 4 bytes of protobuf header): the same peer id, a key that signs nothing valid.
      const bytes = await readFile(path)
      bytes[4 + 5] ^= 0x10
      const damaged = join(dir, 'damaged.key')
      await writeFile(damaged, bytes, { mode: 0o600 })
      const started = startNode([...args, damaged]).then(node => { node.process.kill('SIGKILL'); return node })
      await assert.rejects(started, /bmrt-node exited with 1 before going online:[\s\S]*bmrt-node: .*damaged\.key is damaged: its private key does not make its public key/)

      await chmod(path, 0o644)
      const exposed = await startNode([...args, path])
      exposed.process.kill('SIGKILL')
      assert.equal(exposed.peerId, first.peerId)
      assert.match(exposed.output.join('\n'), /bmrt-node: warning: others can read .*identity\.key \(mode 0644\): whoever reads it can sign records as this node; chmod 600 it/)
    } finally {
      await cleanup()
    }
  })

  it('generate --help documents every option', async () => {
    const { code, stdout } = await bmrt('bmrt', ['generate', '--help'])
    assert.equal(code, 0)
    for (const option of ['--model', '--prompt', '--chat', '--system', '--max-new-tokens', '--temperature', '--top-k', '--top-p', '--repetition-penalty', '--seed', '--stop', '--ignore-eos', '--backend', '--dtype', '--quant', '--threads', '--show-ids']) {
      assert.ok(stdout.includes(option), `${option} missing from --help`)
    }
  })

  it('bad options and bad models give one clear line and a failing exit code', async () => {
    const badNumber = await bmrt('bmrt', ['generate', '--temperature', 'hot'])
    assert.equal(badNumber.code, 2)
    assert.match(badNumber.stderr, /option '--temperature <t>' argument 'hot' is invalid\. expected a number >= 0/)
    const { dir, cleanup } = await scratchDir()
    try {
      const missing = await bmrt('bmrt', ['generate', '--model', dir])
      assert.equal(missing.code, 2)
      assert.match(missing.stderr, /^loading .*\nbmrt generate: no config\.json in .*: point --model at a Hugging Face model directory/)
    } finally {
      await cleanup()
    }
  })

  it('make-test-model writes a model that generate loads', async () => {
    const { dir, cleanup } = await scratchDir()
    try {
      const made = await bmrt('bmrt', ['make-test-model', '--out', dir, '--layers', '3', '--hidden', '32', '--heads', '4', '--kv-heads', '2', '--dtype', 'bf16', '--shards', '2'])
      assert.equal(made.code, 0, made.stderr)
      assert.match(made.stdout, /wrote a 3-block llama model \(hidden 32, 4 heads, 2 KV heads, bf16\)/)
      const generated = await bmrt('bmrt', ['generate', '--model', dir, '--max-new-tokens', '5', '--ignore-eos'])
      assert.equal(generated.code, 0, generated.stderr)
      assert.match(generated.stderr, /\[5 tokens, finished by length/)
    } finally {
      await cleanup()
    }
  })
})
