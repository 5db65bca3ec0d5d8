// `bmrt demo` (what `npm start` runs): a whole swarm on this machine. Three servers, each with its
// own libp2p node on 127.0.0.1, serve a third of the model's blocks; a gateway joins them as a
// client and serves the chat, the swarm monitor, the job board and the OpenAI API.

import { loadConfig } from '../inference/config.js'
import { BlockServer } from '../petals/server/server.js'
import { checkGatewayOptions } from '../api/gateway.js'
import { startGateway, type GatewayCliOptions, type StartedGateway } from './gateway.js'

export interface DemoCliOptions extends GatewayCliOptions {
  model: string
}

const NAMES = ['alpha', 'bravo', 'charlie']

export async function runDemo (o: DemoCliOptions, log: (line: string) => void): Promise<{ close: () => Promise<void> }> {
  checkGatewayOptions({ keptJobs: o.keptJobs, allowOrigins: o.allowOrigin, maxConnectionsPerIp: o.maxConnectionsPerIp }) // before starting servers
  const config = await loadConfig(o.model)
  const spans = NAMES.map((_, i): [number, number] => [Math.round(i * config.numLayers / NAMES.length), Math.round((i + 1) * config.numLayers / NAMES.length)])
    .filter(([start, end]) => start < end)
  const servers: BlockServer[] = []
  let gateway: StartedGateway | undefined
  const close = async (): Promise<void> => {
    await gateway?.close()
    await Promise.all(servers.map(async s => await s.stop()))
  }
  try {
    for (const [i, [start, end]] of spans.entries()) {
      const name = NAMES[i]
      log(`${name}: serving blocks ${start}:${end} of ${config.numLayers}`)
      servers.push(await BlockServer.start({
        modelDir: o.model,
        blocks: { start, end },
        listen: ['/ip4/127.0.0.1/tcp/0'],
        initialPeers: servers.length === 0 ? [] : servers[0].node.getMultiaddrs().map(a => a.toString()),
        publicName: name,
        balanceQuality: 0,
        log: line => { if (!line.startsWith('  share as')) log(`${name}: ${line}`) }
      }))
    }
    gateway = await startGateway(o.model, { initialPeers: servers[0].node.getMultiaddrs().map(a => a.toString()) }, o, log)
    log('demo: Ctrl-C stops the servers and the gateway')
    return { close }
  } catch (err) {
    await close()
    throw err
  }
}
