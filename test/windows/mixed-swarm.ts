// A mixed swarm (run by test/windows/run.sh, not by `npm test`): a Windows bmrt-node (the official
// node.exe under Wine, with the addon cross-built by mingw-w64) serves the middle span of the
// bundled model, Linux servers the rest, and a Linux client's greedy output equals EXPECTED.md.
// The Windows node gets Windows paths (drive letters, backslashes) for its model and identity,
// keeps its peer id across a restart, and Ctrl-C makes it announce OFFLINE before it exits.

import assert from 'node:assert/strict'
import { once } from 'node:events'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { collect } from '../../src/inference/generate.js'
import { createNode, joinSwarm, type BmrtNode } from '../../src/p2p/node.js'
import { Registry } from '../../src/p2p/registry.js'
import { DistributedModel } from '../../src/petals/client/distributed-model.js'
import type { RouteHop } from '../../src/petals/client/routing.js'
import { BlockServer } from '../../src/petals/server/server.js'
import { EXPECTED } from '../expected.js'
import { BUNDLED_MODEL, ROOT, startNode } from '../helpers.js'

const WINE_NODE = process.env.WINE_NODE ?? join(process.env.HOME ?? '', '.cache', 'bmrt-wine', 'bin', 'wine-node')
const WINE_PREFIX = process.env.WINEPREFIX ?? join(process.env.HOME ?? '', '.cache', 'bmrt-wine', 'prefix')

/** Z:\work\main\... : how Windows programs under Wine see a Linux path. */
function windowsPath (linuxPath: string): string {
  return `Z:${linuxPath.replaceAll('/', '\\')}`
}

type WindowsNode = Awaited<ReturnType<typeof startNode>>

/** Starts bmrt-node under win32 node.exe, on the cross-built addon, and waits for its "online" line. */
async function startWindowsNode (args: string[]): Promise<WindowsNode> {
  return await startNode(args, { command: [WINE_NODE], env: { ...process.env, BMRT_ADDON: windowsPath(join(ROOT, 'addon', 'build-win32', 'bmrt.node')) } })
}

describe('a mixed Windows + Linux swarm', function () {
  this.timeout(180_000)
  let servers: BlockServer[] = []
  let windows: WindowsNode | null = null
  let observer: BmrtNode
  // Under the Wine prefix's user profile: where a Windows user's identity file would live.
  const identityWindows = 'C:\\users\\root\\AppData\\Local\\bmrt-test\\node.key'
  const identityLinux = join(WINE_PREFIX, 'drive_c', 'users', 'root', 'AppData', 'Local', 'bmrt-test')

  before(async () => {
    await rm(identityLinux, { recursive: true, force: true })
    for (const blocks of [[0, 2], [4, 5]] as Array<[number, number]>) {
      servers.push(await BlockServer.start({
        modelDir: BUNDLED_MODEL, blocks: { start: blocks[0], end: blocks[1] }, listen: ['/ip4/127.0.0.1/tcp/0'], throughput: 1, updatePeriodMs: 600_000,
        initialPeers: servers.length > 0 ? servers[0].node.getMultiaddrs().map(String) : []
      }))
    }
    observer = await createNode({ role: 'client', bootstrap: servers[0].node.getMultiaddrs().map(String) })
    await joinSwarm(observer)
  })
  after(async () => {
    windows?.process.kill('SIGKILL')
    await observer?.stop()
    await Promise.all(servers.map(async s => await s.stop()))
    servers = []
    await rm(identityLinux, { recursive: true, force: true })
  })

  const windowsArgs = (): string[] => [
    '--initial-peers', servers[0].node.getMultiaddrs()[0].toString(),
    '--model', windowsPath(BUNDLED_MODEL), // a drive letter and backslashes
    '--identity', identityWindows,
    '--blocks', '2:4', '--backend', 'native', '--host-addrs', '/ip4/127.0.0.1/tcp/0', '--throughput', '1'
  ]

  it('a Windows node serves blocks 2:4 on the native backend and a Linux client generates EXPECTED.md through it', async () => {
    windows = await startWindowsNode(windowsArgs())
    const log = windows.output.join('\n')
    assert.match(log, /created identity C:\\users\\root\\AppData\\Local\\bmrt-test\\node\.key/)
    assert.match(log, /online: serving blocks 2:4 of stories260K \(native backend\)/)

    const routes: RouteHop[][] = []
    const model = await DistributedModel.load(BUNDLED_MODEL, { initialPeers: servers[0].node.getMultiaddrs().map(String), onRoute: route => routes.push([...route]) })
    try {
      const result = await collect(model.generate(EXPECTED[0].prompt, { maxNewTokens: 50, temperature: 0 }))
      assert.deepEqual(result.ids, EXPECTED[0].ids)
      assert.deepEqual(routes[0].map(h => [h.start, h.end, h.peerId]), [
        [0, 2, servers[0].node.peerId.toString()], [2, 4, windows.peerId], [4, 5, servers[1].node.peerId.toString()]
      ])
    } finally {
      await model.close()
    }
  })

  it('keeps its peer id across a restart, and Ctrl-C announces OFFLINE before it exits', async () => {
    const first = windows!.peerId
    windows!.process.kill('SIGKILL')
    await once(windows!.process, 'exit')
    windows = await startWindowsNode(windowsArgs())
    assert.equal(windows.peerId, first, 'the identity file under the Windows profile keeps the peer id')
    assert.ok(!windows.output.some(l => l.startsWith('created identity')))

    // Wine turns a SIGINT into the console's Ctrl-C event, which node.exe reports as SIGINT.
    const exited = once(windows.process, 'exit')
    windows.process.kill('SIGINT')
    const [code] = await exited
    assert.equal(code, 0, windows.output.join('\n'))
    assert.match(windows.output.join('\n'), /SIGINT: announcing offline and stopping\noffline/)
    const record = await new Registry(observer).lookup('stories260K', first)
    assert.ok(record === null || record.state === 'offline', `the Windows node's record after Ctrl-C: ${JSON.stringify(record?.state)}`)
    windows = null
  })
})
