// Joining a swarm: the dial-back reachability check (on loopback: everything here is reachable, so
// the unreachable case is an announced port nobody listens on; behind real NAT it is
// test/nat/relay.ts), swarm files and presets, private swarms with a pre-shared key, and relays
// whose circuits are too small for a session.

import assert from 'node:assert/strict'
import { stat, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { createNode, joinSwarm, type BmrtNode } from '../src/p2p/node.js'
import { BlockServer } from '../src/petals/server/server.js'
import { DistributedModel } from '../src/petals/client/distributed-model.js'
import { checkReachability, describeReachability, REACHABILITY_PROTOCOL, serveReachabilityChecks } from '../src/p2p/reachability.js'
import { ReachabilityRequest, ReachabilityResponse } from '../src/p2p/reachability-messages.js'
import { FrameStream } from '../src/p2p/frames.js'
import { EXPECTED } from './expected.js'
import { BUNDLED_MODEL, expectFailures, runCommand as bmrt, scratchDir, startNode } from './helpers.js'

/** A TCP server on `host`, recording whether anyone connected. */
async function listenOn (host: string): Promise<{ server: Server, port: number, connections: () => number }> {
  let count = 0
  const server = createServer(socket => { count++; socket.destroy() })
  await new Promise<void>(resolve => server.listen(0, host, resolve))
  return { server, port: (server.address() as { port: number }).port, connections: () => count }
}

describe('the reachability check', () => {
  let checker: BmrtNode
  let checkerAddr: string

  before(async () => {
    checker = await createNode({ role: 'server' })
    await serveReachabilityChecks(checker)
    checkerAddr = checker.getMultiaddrs()[0].toString()
  })
  after(async () => { await checker.stop() })

  it('peers dial a reachable node back', async () => {
    const report = await checkReachability({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [checkerAddr] })
    assert.equal(report.reachable, true)
    assert.equal(report.answers.length, 1)
    assert.match(report.answers[0].detail, /^dialed back \/ip4\/127\.0\.0\.1\/tcp\/\d+/)
  })

  it('an announced address nobody listens on is not reachable', async () => {
    const closed = await listenOn('127.0.0.1')
    await new Promise(resolve => closed.server.close(resolve))
    const report = await checkReachability({ listen: ['/ip4/127.0.0.1/tcp/0'], announce: [`/ip4/127.0.0.1/tcp/${closed.port}`], bootstrap: [checkerAddr] })
    assert.equal(report.reachable, false)
    assert.match(report.answers[0].detail, new RegExp(`could not dial /ip4/127\\.0\\.0\\.1/tcp/${closed.port}`))
  })

  it('the checker dials only the IP the request came from, and survives garbage', async () => {
    const asker = await createNode({ role: 'server' })
    const bystander = await listenOn('127.0.0.2')
    try {
      const ask = async (frame: Uint8Array): Promise<ReachabilityResponse | Error> => {
        const stream = lpStream(await asker.dialProtocol(multiaddr(checkerAddr), REACHABILITY_PROTOCOL))
        await stream.write(frame)
        try {
          return ReachabilityResponse.decode(await stream.read({ signal: AbortSignal.timeout(20_000) }))
        } catch (err) {
          return err as Error
        }
      }
      const other = await ask(ReachabilityRequest.encode({ addrs: [multiaddr(`/ip4/127.0.0.2/tcp/${bystander.port}`).bytes] }))
      assert.ok(!(other instanceof Error))
      assert.equal(other.reachable, false)
      assert.match(other.detail, /none of the addresses sent is a TCP address on 127\.0\.0\.1/)
      assert.equal(bystander.connections(), 0, 'the checker must not dial a third party')
      const garbage = await ask(new Uint8Array([0xff, 0xff, 0xff, 0x0f, 1, 2, 3]))
      assert.ok(garbage instanceof Error, 'a malformed request ends the stream')
      const report = await checkReachability({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [checkerAddr] })
      assert.equal(report.reachable, true, 'and the checker goes on answering')
    } finally {
      bystander.server.close()
      await asker.stop()
    }
  })
})

describe('the reachability check among liars', function () {
  this.timeout(120_000)
  const DENIERS = 7

  it('one dial-back that arrived makes a node reachable: a claimed one that never came and 7 denials do not outvote it, and a real server starts', async () => {
    // The honest checker is the swarm's entry node; the others answer every check with a script.
    const honest = await createNode({ role: 'server' })
    await serveReachabilityChecks(honest)
    const entry = honest.getMultiaddrs()[0].toString()
    const liars: BmrtNode[] = []
    const scripted = async (answer: ReachabilityResponse): Promise<BmrtNode> => {
      const node = await createNode({ role: 'server', bootstrap: [entry] })
      liars.push(node)
      await node.handle(REACHABILITY_PROTOCOL, async stream => {
        const frames = new FrameStream(stream, 16 << 10)
        await frames.read(ReachabilityRequest)
        await frames.write(ReachabilityResponse, answer)
        await stream.close()
      })
      await joinSwarm(node)
      return node
    }
    let child: ChildProcess | undefined
    try {
      const claimer = await scripted({ reachable: true, detail: 'dialed back /ip4/127.0.0.1/tcp/1' }) // never dials
      await Promise.all(Array.from({ length: DENIERS }, async () => await scripted({ reachable: false, detail: 'could not dial you' })))

      // Every peer is an initial peer, so that all 9 are asked (a DHT walk may find fewer).
      const peers = [entry, ...liars.map(l => l.getMultiaddrs()[0].toString())]
      // The claim alone does not make reachable a node nobody can dial (an announced port nobody listens on).
      const closed = await listenOn('127.0.0.1')
      await new Promise(resolve => closed.server.close(resolve))
      const unreachable = await checkReachability({ listen: ['/ip4/127.0.0.1/tcp/0'], announce: [`/ip4/127.0.0.1/tcp/${closed.port}`], bootstrap: peers })
      assert.equal(unreachable.reachable, false, describeReachability(unreachable))
      assert.match(describeReachability(unreachable), /^reachability: not reachable directly \(0 of 9 peers dialed back; /)

      // With one honest checker among them, the node is reachable.
      const report = await checkReachability({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: peers })
      assert.equal(report.reachable, true, describeReachability(report))
      assert.equal(describeReachability(report), 'reachability: directly reachable (1 of 9 peers dialed back)')
      assert.equal(report.answers.length, 1 + 1 + DENIERS)
      const byPeer = new Map(report.answers.map(a => [a.peerId, a]))
      assert.equal(byPeer.get(honest.peerId.toString())?.reachable, true, JSON.stringify(report.answers))
      assert.match(byPeer.get(claimer.peerId.toString())?.detail ?? '', /said it dialed back .*, but no connection from it arrived/)
      assert.equal(byPeer.get(claimer.peerId.toString())?.reachable, false)

      // A real bmrt-node among these peers checks, and starts serving directly.
      const server = await startNode([...peers.flatMap(p => ['--initial-peers', p]), '--blocks', '0:5', '--host-addrs', '/ip4/127.0.0.1/tcp/0', '--throughput', '1'], {
        onSpawn: c => { child = c },
        // A verdict of "unreachable" would make it wait 30 s for a relay that does not exist: stop it at once.
        onLine: line => { if (line.startsWith('reachability:') && !line.includes('directly reachable')) child?.kill('SIGKILL') }
      })
      assert.ok(server.output.includes('reachability: directly reachable (1 of 9 peers dialed back)'), server.output.join('\n'))
    } finally {
      child?.kill('SIGKILL')
      await Promise.all([...liars, honest].map(async n => await n.stop()))
    }
  })
})

describe('joining a swarm by file, preset or private key', function () {
  this.timeout(120_000)
  let scratch: Awaited<ReturnType<typeof scratchDir>>
  let server: { process: ChildProcess, output: string[], peerId: string } | undefined
  let keyFile = ''
  let serverAddr = ''

  before(async () => {
    scratch = await scratchDir()
    keyFile = join(scratch.dir, 'swarm.key')
    const made = await bmrt('bmrt', ['swarm', 'new-key', keyFile])
    assert.equal(made.code, 0, made.stderr)
    server = await startNode(['--new-swarm', '--swarm-key', keyFile, '--blocks', '0:5', '--host-addrs', '/ip4/127.0.0.1/tcp/0', '--throughput', '1'])
    serverAddr = server.output.find(l => l.includes('share as --initial-peers: '))!.split(': ')[1]
  })
  after(async () => {
    server?.process.kill('SIGKILL')
    await scratch.cleanup()
  })

  it('swarm new-key writes a private key file (0600) and never overwrites one', async () => {
    assert.match(await import('node:fs/promises').then(async fs => await fs.readFile(keyFile, 'utf8')), /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/)
    if (process.platform !== 'win32') assert.equal((await stat(keyFile)).mode & 0o777, 0o600)
    const again = await bmrt('bmrt', ['swarm', 'new-key', keyFile])
    assert.equal(again.code, 1)
    assert.match(again.stderr, /exists: a swarm key is never overwritten/)
  })

  it('peers with the key generate through the private swarm; peers without it cannot connect', async () => {
    const inside = await bmrt('bmrt', ['generate', '--initial-peers', serverAddr, '--swarm-key', keyFile, '--max-new-tokens', '50'])
    assert.equal(inside.code, 0, inside.stderr)
    assert.equal(inside.stdout.trim(), EXPECTED[0].text)

    const outside = await bmrt('bmrt', ['generate', '--initial-peers', serverAddr, '--max-new-tokens', '5'])
    assert.equal(outside.code, 1)
    assert.match(outside.stderr, /could not connect to any initial peer \(check the addresses; a private swarm needs its swarm key\)/)
    const otherKey = join(scratch.dir, 'other.key')
    assert.equal((await bmrt('bmrt', ['swarm', 'new-key', otherKey])).code, 0)
    const wrongKey = await bmrt('bmrt', ['swarm', 'status', '--initial-peers', serverAddr, '--swarm-key', otherKey])
    assert.equal(wrongKey.code, 1)
    assert.match(wrongKey.stderr, /could not connect to any initial peer \(check the addresses; every peer of a private swarm needs the same swarm key\)/)
  })

  it('--swarm FILE names the bootstrap peers; --initial-peers takes precedence; bad files and keys are explained', async () => {
    const swarmFile = join(scratch.dir, 'my-swarm.json')
    await writeFile(swarmFile, JSON.stringify({ initialPeers: [serverAddr] }))
    const status = await bmrt('bmrt', ['swarm', 'status', '--swarm', swarmFile, '--swarm-key', keyFile, '--json'])
    assert.equal(status.code, 0, status.stderr)
    assert.equal(JSON.parse(status.stdout).models[0].servers[0].peerId, server!.peerId)

    const overridden = await bmrt('bmrt', ['swarm', 'status', '--swarm', 'public', '--initial-peers', serverAddr, '--swarm-key', keyFile, '--json'])
    assert.equal(overridden.code, 0, overridden.stderr)

    await writeFile(join(scratch.dir, 'bad-swarm.json'), JSON.stringify({ initialPeers: ['not-an-address'] }))
    await expectFailures('bmrt', [
      { args: ['swarm', 'status', '--swarm', 'public'], code: 2, stderr: /the public swarm has no bootstrap nodes yet: give --initial-peers, or start a swarm with a relay-only node/ },
      { args: ['generate', '--swarm', join(scratch.dir, 'bad-swarm.json')], code: 1, stderr: /bad-swarm\.json: "not-an-address" is not a multiaddr/ },
      { args: ['generate', '--initial-peers', serverAddr, '--swarm-key', swarmFile], code: 1, stderr: /is not a swarm key: expected the lines \/key\/swarm\/psk\/1\.0\.0\/, \/base16\/ and 64 hex digits/ }
    ])
    await expectFailures('bmrt-node', [{ args: ['--swarm', 'nowhere', '--blocks', '0:1'], code: 2, stderr: /--swarm nowhere: not a known swarm \(public\) and not a readable file/ }])
  })
})

describe('a relay that limits circuits (libp2p defaults)', function () {
  this.timeout(60_000)
  it('a client will not open a session through it, and says why', async () => {
    // A stock libp2p relay: 2 minutes and 128 KiB per circuit.
    const relay = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp(), circuitRelayTransport()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionManager: { allow: ['/ip4/127.0.0.0/ipcidr/8'] },
      services: { identify: identify(), relay: circuitRelayServer() }
    })
    const dht = await createNode({ role: 'server' })
    // The server listens only on the relay, so the relay is the one way to reach it.
    const server = await BlockServer.start({ modelDir: BUNDLED_MODEL, blocks: { start: 0, end: 5 }, listen: [], useRelay: true, throughput: 1, initialPeers: [dht.getMultiaddrs()[0].toString(), relay.getMultiaddrs()[0].toString()] })
    const client = await DistributedModel.load(BUNDLED_MODEL, { initialPeers: [dht.getMultiaddrs()[0].toString()], maxRetries: 0 })
    try {
      await assert.rejects(async () => { for await (const _ of client.generate('Once upon a time', { maxNewTokens: 2 })) { /* refused before any token */ } },
        /reachable only through a relay that limits each circuit \(\d+ KiB left, a time limit\), too little for a session; bmrt's relay-only nodes set no such limit/)
    } finally {
      await client.close()
      await server.stop()
      await dht.stop()
      await relay.stop()
    }
  })
})
