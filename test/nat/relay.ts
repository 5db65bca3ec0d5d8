// Servers behind NAT, reached through a relay (run by `npm run test:nat`, not by `npm test`: it
// needs root, `ip` and `nft`, and skips with a message where they are missing). The test builds its
// own networks with Linux network namespaces and removes them afterwards:
//
//   "pub" 7.77.0.0/24: the relay (bmrt-node --relay-only, 7.77.0.1:4001), public servers, clients
//        |  veth
//   "router": 7.77.0.2 and 192.168.77.1, masquerading the home network (nftables)
//        |  veth
//   "home" 192.168.77.0/24: a server (192.168.77.2), default route via the router
//
// pub's addresses look public because libp2p's DCUtR only dials public addresses; these namespaces
// have no link to any other network, so nothing can reach the real owners of 7.77.0.0/24. Nothing
// can reach the home network from pub except through the relay.
//
// The home server finds out by itself that it needs the relay, announces usingRelay, and serves a
// client in pub; DCUtR replaces the relayed connection from a public server with a direct one;
// when the home link is cut in the middle of a generation, the client fails over to another server
// with the same output, and the cut-off server leaves the swarm within its expiry.

import assert from 'node:assert/strict'
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { EXPECTED } from '../expected.js'
import { BUNDLED_MODEL, ROOT, startNode, waitFor } from '../helpers.js'

const TAG = `b${process.pid % 100000}`
const NS = { pub: `${TAG}-pub`, router: `${TAG}-router`, home: `${TAG}-home` }
const EXPIRATION_S = 6

function sh (args: string[]): void {
  execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] })
}

function canMakeNamespaces (): string | null {
  if (process.getuid?.() !== 0) return 'needs root'
  for (const [tool, flag] of [['ip', '-V'], ['nft', '--version']]) if (spawnSync(tool, [flag], { stdio: 'ignore' }).status !== 0) return `needs ${tool}`
  const probe = `${TAG}-probe`
  if (spawnSync('ip', ['netns', 'add', probe], { stdio: 'ignore' }).status !== 0) return 'this machine does not allow network namespaces'
  spawnSync('ip', ['netns', 'del', probe], { stdio: 'ignore' })
  return null
}

function makeNetworks (): void {
  for (const ns of Object.values(NS)) sh(['ip', 'netns', 'add', ns])
  sh(['ip', 'link', 'add', `${TAG}p`, 'netns', NS.pub, 'type', 'veth', 'peer', 'name', `${TAG}rp`, 'netns', NS.router])
  sh(['ip', 'link', 'add', `${TAG}h`, 'netns', NS.home, 'type', 'veth', 'peer', 'name', `${TAG}rh`, 'netns', NS.router])
  const inNs = (ns: string, ...args: string[]): void => sh(['ip', '-n', ns, ...args])
  inNs(NS.pub, 'addr', 'add', '7.77.0.1/24', 'dev', `${TAG}p`)
  inNs(NS.router, 'addr', 'add', '7.77.0.2/24', 'dev', `${TAG}rp`)
  inNs(NS.router, 'addr', 'add', '192.168.77.1/24', 'dev', `${TAG}rh`)
  inNs(NS.home, 'addr', 'add', '192.168.77.2/24', 'dev', `${TAG}h`)
  for (const [ns, dev] of [[NS.pub, `${TAG}p`], [NS.router, `${TAG}rp`], [NS.router, `${TAG}rh`], [NS.home, `${TAG}h`]]) inNs(ns, 'link', 'set', dev, 'up')
  for (const ns of Object.values(NS)) inNs(ns, 'link', 'set', 'lo', 'up')
  inNs(NS.home, 'route', 'add', 'default', 'via', '192.168.77.1')
  sh(['ip', 'netns', 'exec', NS.router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1'])
  // The home router: outgoing connections are masqueraded; nothing comes in uninvited.
  sh(['ip', 'netns', 'exec', NS.router, 'nft', 'add', 'table', 'ip', 'nat'])
  sh(['ip', 'netns', 'exec', NS.router, 'nft', 'add', 'chain', 'ip', 'nat', 'post', '{ type nat hook postrouting priority 100 ; }'])
  sh(['ip', 'netns', 'exec', NS.router, 'nft', 'add', 'rule', 'ip', 'nat', 'post', 'oifname', `${TAG}rp`, 'masquerade'])
}

function removeNetworks (): void {
  for (const ns of Object.values(NS)) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' })
}

/** Starts bmrt-node inside a namespace; resolves once it is online. */
async function startIn (ns: string, args: string[]): Promise<Awaited<ReturnType<typeof startNode>>> {
  return await startNode(args, { command: ['ip', 'netns', 'exec', ns, process.execPath] })
}

/** Runs `node args` inside a namespace to the end. */
function runIn (ns: string, args: string[]): { status: number | null, stdout: string, stderr: string } {
  const result = spawnSync('ip', ['netns', 'exec', ns, process.execPath, ...args], { encoding: 'utf8', timeout: 120_000 })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

/** `bmrt swarm status --json` from pub: the servers of the bundled model. */
function swarmServers (relayAddr: string): Array<{ peerId: string, start: number, end: number, state: string, usingRelay: boolean, expiresAt: number }> {
  const status = runIn(NS.pub, [join(ROOT, 'bin', 'bmrt.js'), 'swarm', 'status', '--initial-peers', relayAddr, '--json'])
  assert.equal(status.status, 0, status.stderr)
  return JSON.parse(status.stdout).models[0]?.servers ?? []
}

describe('servers behind NAT, through a relay (network namespaces)', function () {
  this.timeout(180_000)
  const children: ChildProcess[] = []
  let relayAddr = ''
  let home: Awaited<ReturnType<typeof startNode>>
  let pub: Awaited<ReturnType<typeof startNode>>
  // Short announcement expiry, so a server that vanishes leaves the swarm quickly.
  const timing = ['--throughput', '1', '--update-period', String(EXPIRATION_S / 3), '--expiration', String(EXPIRATION_S)]

  before(function () {
    const why = canMakeNamespaces()
    if (why !== null) {
      if (process.env.BMRT_REQUIRE_NAT === '1') throw new Error(`BMRT_REQUIRE_NAT=1 but the NAT test ${why}`)
      console.log(`    (skipped: the NAT test ${why})`)
      this.skip()
    }
    removeNetworks()
    makeNetworks()
  })
  after(() => {
    children.forEach(c => c.kill('SIGKILL'))
    removeNetworks()
  })

  it('the home network is not reachable from pub except through the relay', () => {
    const probe = runIn(NS.pub, ['-e', `require('net').connect({ host: '192.168.77.2', port: 9, timeout: 1500 }).on('error', e => { console.log(e.code); process.exit(0) }).on('timeout', () => { console.log('TIMEOUT'); process.exit(0) }).on('connect', () => { console.log('CONNECTED'); process.exit(0) })`])
    assert.notEqual(probe.stdout.trim(), 'CONNECTED')
  })

  it('servers find out whether they are reachable; the home one announces usingRelay and serves a client on another network', async () => {
    const relay = await startIn(NS.pub, ['--relay-only', '--new-swarm', '--host-addrs', '/ip4/7.77.0.1/tcp/4001'])
    children.push(relay.process)
    relayAddr = relay.output.find(l => l.includes('share as --initial-peers: /ip4/7.77.0.1/'))!.split(': ')[1]
    // Neither is told whether it is reachable: each asks its peers (here, the relay) to dial back.
    pub = await startIn(NS.pub, ['--initial-peers', relayAddr, '--model', BUNDLED_MODEL, '--blocks', '0:2', '--host-addrs', '/ip4/7.77.0.1/tcp/0', ...timing])
    children.push(pub.process)
    assert.match(pub.output.join('\n'), /reachability: directly reachable \(1 of 1 peers dialed back\)/)
    home = await startIn(NS.home, ['--initial-peers', relayAddr, '--model', BUNDLED_MODEL, '--blocks', '2:5', '--host-addrs', '/ip4/0.0.0.0/tcp/0', ...timing])
    children.push(home.process)
    assert.match(home.output.join('\n'), /reachability: not reachable directly \(0 of [12] peers dialed back; .*behind NAT.*\): using a relay/)
    assert.match(home.output.join('\n'), /reachable through a relay: \/ip4\/7\.77\.0\.1\/tcp\/4001\/p2p\/12D3KooW\w+\/p2p-circuit\/p2p\/12D3KooW\w+/)

    const servers = swarmServers(relayAddr)
    assert.deepEqual(servers.map(s => [s.peerId, s.usingRelay]).sort(), [[home.peerId, true], [pub.peerId, false]].sort())

    const generated = runIn(NS.pub, [join(ROOT, 'bin', 'bmrt.js'), 'generate', '--initial-peers', relayAddr, '--max-new-tokens', '50', '--show-route'])
    assert.equal(generated.status, 0, generated.stderr)
    assert.ok(generated.stdout.startsWith(EXPECTED[0].text), generated.stdout)
    assert.ok(generated.stderr.includes(`2:5 via 12D3KooW…${home.peerId.slice(-6)}`), generated.stderr)
  })

  it('DCUtR: a public peer that reaches the home server through the relay gets a direct connection', async () => {
    // Servers behind NAT already reach public servers directly (they dial out); a relayed connection
    // appears when a public peer dials first. The home server then dials that peer back through its
    // NAT, and DCUtR closes the relayed connection.
    const circuit = home.output.find(l => l.startsWith('reachable through a relay: '))!.slice('reachable through a relay: '.length)
    const peer = runIn(NS.pub, [join(ROOT, 'dist', 'test', 'nat', 'dcutr-peer.js'), '/ip4/7.77.0.1/tcp/0', circuit])
    assert.equal(peer.status, 0, peer.stderr)
    const { relayed, direct } = JSON.parse(peer.stdout) as { relayed: string, direct: string | null }
    assert.ok(relayed.includes('/p2p-circuit'), relayed)
    console.log(`    DCUtR report: public peer -> home server: ${direct === null ? 'NOT upgraded, still relayed' : `upgraded to a direct connection (${direct})`}`)
    assert.match(direct ?? '', /^\/ip4\/7\.77\.0\.2\/tcp\/\d+/, 'the direct connection comes from the router, opened from behind the NAT')
    await waitFor('the home server to log the upgrade', () => home.output.some(l => l.includes('DCUtR: direct connection with')))
  })

  it('when the home link is cut in the middle of a generation, the client fails over with the same output, and the cut-off server leaves the swarm within its expiry', async () => {
    const client = spawn('ip', ['netns', 'exec', NS.pub, process.execPath, join(ROOT, 'dist', 'test', 'nat', 'pausing-client.js'), relayAddr, '10'], { stdio: ['pipe', 'pipe', 'inherit'] })
    children.push(client)
    const lines = createInterface({ input: client.stdout! })[Symbol.asyncIterator]()
    assert.equal((await lines.next()).value, 'PAUSED')
    // A second server for the home server's blocks, on the public network, started only now so the
    // client's route goes through the home server.
    const spare = await startIn(NS.pub, ['--initial-peers', relayAddr, '--model', BUNDLED_MODEL, '--blocks', '2:5', '--host-addrs', '/ip4/7.77.0.1/tcp/0', ...timing])
    children.push(spare.process)
    sh(['ip', '-n', NS.router, 'link', 'set', `${TAG}rh`, 'down'])
    const cutAt = Date.now() // no record of the home server can be signed and sent after this
    // The home server cannot refresh its announcement now, so the record the swarm holds lapses
    // within one expiry of the cut; from then on nobody lists the server.
    const lastRecord = swarmServers(relayAddr).find(s => s.peerId === home.peerId)
    client.stdin!.write('go on\n')
    const result = JSON.parse((await lines.next()).value as string) as { ids: number[], routes: Array<{ reason: string, hops: Array<{ peerId: string, start: number }> }>, connections: Record<string, string[]> }
    assert.deepEqual(result.ids, EXPECTED[0].ids)
    assert.equal(result.routes[0].hops.find(h => h.start === 2)?.peerId, home.peerId, 'the session started on the home server')
    assert.equal(result.routes.at(-1)!.hops.find(h => h.start === 2)?.peerId, spare.peerId, 'and failed over to the spare')
    const relayed = result.connections[home.peerId] ?? []
    assert.ok(relayed.length > 0 && relayed.every(a => a.includes('/p2p-circuit')), `the client reached the home server through the relay: ${relayed.join(', ')}`)
    console.log('    DCUtR report: client -> home server: stayed relayed (a client does not listen, so the home server cannot dial it)')

    if (lastRecord !== undefined) {
      assert.ok(lastRecord.expiresAt <= cutAt + EXPIRATION_S * 1000, `the record lapses ${lastRecord.expiresAt - cutAt} ms after the cut`)
      console.log(`    the cut-off server's last record lapses ${((lastRecord.expiresAt - cutAt) / 1000).toFixed(1)} s after the cut (expiry ${EXPIRATION_S} s)`)
      await waitFor('the record to lapse', () => Date.now() > lastRecord.expiresAt, (EXPIRATION_S + 1) * 1000)
    }
    assert.ok(!swarmServers(relayAddr).some(s => s.peerId === home.peerId), 'the cut-off server is gone from the swarm')
  })
})
