// A server behind NAT, reached through a relay (run by `npm run test:nat`, not by `npm test`: it
// needs root, `ip` and `nft`, and skips with a message where they are missing). The test builds its
// own networks with Linux network namespaces and removes them afterwards:
//
//   "pub" 10.77.0.0/24: the relay (bmrt-node --relay-only, 10.77.0.1) and the client
//        |  veth
//   "router": 10.77.0.2 and 192.168.77.1, masquerading the home network (nftables)
//        |  veth
//   "home" 192.168.77.0/24: the server (--use-relay, 192.168.77.2), default route via the router
//
// Nothing can reach the home network from pub except through the relay; no traffic leaves these
// namespaces. The client generates EXPECTED.md's tokens through the relayed server, which announces
// usingRelay; when the home link is cut the server disappears from the swarm within its expiry.

import assert from 'node:assert/strict'
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { EXPECTED } from '../expected.js'
import { BUNDLED_MODEL, ROOT, startNode } from '../helpers.js'

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
  inNs(NS.pub, 'addr', 'add', '10.77.0.1/24', 'dev', `${TAG}p`)
  inNs(NS.router, 'addr', 'add', '10.77.0.2/24', 'dev', `${TAG}rp`)
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

describe('a server behind NAT, through a relay (network namespaces)', function () {
  this.timeout(180_000)
  const children: ChildProcess[] = []
  let relayAddr = ''
  let server: Awaited<ReturnType<typeof startNode>>

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

  it('a relayed server is found through the DHT, announces usingRelay, and serves EXPECTED.md to a client on another network', async () => {
    const relay = await startIn(NS.pub, ['--relay-only', '--new-swarm', '--host-addrs', '/ip4/10.77.0.1/tcp/4001'])
    children.push(relay.process)
    relayAddr = relay.output.find(l => l.includes('share as --initial-peers: /ip4/10.77.0.1/'))!.split(': ')[1]
    server = await startIn(NS.home, ['--use-relay', '--initial-peers', relayAddr, '--model', BUNDLED_MODEL,
      '--blocks', '0:5', '--host-addrs', '/ip4/0.0.0.0/tcp/0', '--throughput', '1', '--update-period', String(EXPIRATION_S / 3), '--expiration', String(EXPIRATION_S)])
    children.push(server.process)
    assert.match(server.output.join('\n'), /reachable through a relay: \/ip4\/10\.77\.0\.1\/tcp\/4001\/p2p\/12D3KooW\w+\/p2p-circuit\/p2p\/12D3KooW\w+/)

    const status = runIn(NS.pub, [join(ROOT, 'bin', 'bmrt.js'), 'swarm', 'status', '--initial-peers', relayAddr, '--json'])
    assert.equal(status.status, 0, status.stderr)
    const servers = JSON.parse(status.stdout).models[0].servers
    assert.equal(servers.length, 1)
    assert.equal(servers[0].usingRelay, true)

    const generated = runIn(NS.pub, [join(ROOT, 'bin', 'bmrt.js'), 'generate', '--initial-peers', relayAddr, '--max-new-tokens', '50', '--show-route'])
    assert.equal(generated.status, 0, generated.stderr)
    assert.equal(generated.stdout.trim(), EXPECTED[0].text.slice(0, generated.stdout.trim().length))
    assert.ok(generated.stdout.startsWith(EXPECTED[0].text), generated.stdout)
  })

  it('a server whose link is cut disappears from the swarm within its expiry, and clients go to another', async () => {
    // A second server, on the public network, for the same blocks.
    const direct = await startIn(NS.pub, ['--initial-peers', relayAddr, '--model', BUNDLED_MODEL,
      '--blocks', '0:5', '--host-addrs', '/ip4/10.77.0.1/tcp/0', '--throughput', '1', '--update-period', String(EXPIRATION_S / 3), '--expiration', String(EXPIRATION_S)])
    children.push(direct.process)
    const directId = direct.peerId
    const cutAt = Date.now()
    sh(['ip', '-n', NS.router, 'link', 'set', `${TAG}rh`, 'down'])
    // A client asking now may still find the cut-off server's record: it fails over to the other.
    const generated = runIn(NS.pub, [join(ROOT, 'bin', 'bmrt.js'), 'generate', '--initial-peers', relayAddr, '--max-new-tokens', '50', '--show-route'])
    assert.equal(generated.status, 0, generated.stderr)
    assert.ok(generated.stdout.startsWith(EXPECTED[0].text), generated.stdout)
    assert.ok(generated.stderr.includes(`0:5 via 12D3KooW…${directId.slice(-6)}`), `the client ends up on the public server:\n${generated.stderr}`)
    for (;;) {
      const status = runIn(NS.pub, [join(ROOT, 'bin', 'bmrt.js'), 'swarm', 'status', '--initial-peers', relayAddr, '--json'])
      const servers = status.status === 0 ? (JSON.parse(status.stdout).models[0]?.servers ?? []).filter((s: any) => s.state === 'online') : []
      if (servers.length === 1 && servers[0].peerId === directId) break
      assert.ok(Date.now() - cutAt < (EXPIRATION_S + 10) * 1000, 'the cut-off server is still listed well past its expiry')
    }
  })
})
