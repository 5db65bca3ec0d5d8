// `bmrt-node`: serve a span of transformer blocks to a swarm, as Petals' run_server does.

import '../util/polyfill.js'
import { Command, Option } from 'commander'
import { loadConfig } from '../inference/config.js'
import { loadOrCreateIdentity } from '../p2p/identity.js'
import { createNode, joinSwarm, type NodeOptions } from '../p2p/node.js'
import { DEFAULT_UPDATE_PERIOD_MS, TTL_UPDATE_PERIODS } from '../p2p/registry.js'
import { serveDirectly } from '../p2p/reachability.js'
import { DEFAULT_INFERENCE_MAX_LENGTH } from '../petals/protocol/server-info.js'
import { DEFAULT_GQA_CACHE_TOKENS, DEFAULT_MHA_CACHE_TOKENS } from '../petals/planning/memory-plan.js'
import { DEFAULT_BALANCE_QUALITY } from '../petals/server/block-selection.js'
import { DEFAULT_MAX_SESSIONS_PER_PEER } from '../petals/server/peer-limits.js'
import { BlockServer, checkBlocks, DEFAULT_BALANCE_CHECK_PERIOD_MS } from '../petals/server/server.js'
import { addGatewayOptions, startGateway, type GatewayCliOptions, type StartedGateway } from './gateway.js'
import {
  addBackendOptions, addSwarmOptions, BadFlagsError, BUNDLED_MODEL, blockSpan, EXIT_FAILURE, exitOnBadFlags, fail, integer, loadOptions,
  multiaddrArgument, number, onStopSignals, resolveSwarm, type BackendCliOptions, type SwarmCliOptions
} from './options.js'

interface NodeCliOptions extends BackendCliOptions, GatewayCliOptions, SwarmCliOptions {
  model: string
  modelName?: string
  blocks?: { start: number, end: number }
  numBlocks?: number
  newSwarm?: boolean
  publicName?: string
  identity?: string
  hostAddrs: string[]
  port: number
  inferenceMaxLength: number
  maxSessionsPerPeer: number
  announceAddrs: string[]
  publicIp?: string
  throughput: 'auto' | number
  balanceQuality: number
  meanBalanceCheckPeriod: number
  updatePeriod: number
  expiration?: number
  attnCacheTokens?: number
  relayOnly?: boolean
  useRelay?: boolean
}

const program = addSwarmOptions(addGatewayOptions(addBackendOptions(exitOnBadFlags(new Command('bmrt-node'))), 'also serve the HTTP gateway (OpenAI API, chat, swarm monitor, job board) on this port'),
  'a peer of the swarm to join through (repeatable)')
  .description('serve a span of transformer blocks to a bmrt swarm')
  .option('--model <dir>', 'Hugging Face model directory', BUNDLED_MODEL)
  .option('--model-name <name>', "the name the swarm knows the model by (default: the folder's name)")
  .option('--blocks <start:end>', 'serve exactly these blocks, end excluded, e.g. 0:20 (no rebalancing)', blockSpan)
  .option('--num-blocks <n>', 'serve this many blocks where the swarm is weakest (on a GPU: default as many as fit in its free memory)', integer(1))
  .option('--new-swarm', 'start a new swarm (no initial peers)')
  .option('--public-name <name>', 'a name shown to others on the swarm monitor')
  .option('--identity <path>', 'key file for a stable peer id, created on first run (mode 0600; on Windows keep it under %USERPROFILE%); default: a new id each run')
  .option('--port <n>', 'TCP port to listen on, on every interface (0: any free port)', integer(0), 0)
  .option('--host-addrs <multiaddr>', 'listen on this multiaddr instead, e.g. /ip4/127.0.0.1/tcp/31337 (repeatable)', multiaddrArgument, [])
  .option('--announce-addrs <multiaddr>', 'address to tell peers instead of the listening ones (repeatable)', multiaddrArgument, [])
  .option('--public-ip <ip>', 'announce this IP with the listening port (behind port forwarding)')
  .addOption(new Option('--throughput <rps>', "'auto' to measure (cached on disk), or a number to announce").default('auto')
    .argParser(v => (v === 'auto' ? 'auto' : number(n => n >= 0, "'auto' or a number >= 0")(v))))
  .option('--balance-quality <q>', 'move to other blocks when that improves the swarm below this ratio; 0 disables', number(n => n >= 0, 'a number >= 0'), DEFAULT_BALANCE_QUALITY)
  .option('--mean-balance-check-period <seconds>', 'mean time between checks whether moving would balance the swarm better (each waits a random 0 to 2 times this)', number(n => n > 0, 'a number > 0'), DEFAULT_BALANCE_CHECK_PERIOD_MS / 1000)
  .option('--update-period <seconds>', 'how often the announcement is refreshed', number(n => n > 0, 'a number > 0'), DEFAULT_UPDATE_PERIOD_MS / 1000)
  .option('--expiration <seconds>', `how long an announcement stays valid (default: ${TTL_UPDATE_PERIODS} x update period)`, number(n => n > 0, 'a number > 0'))
  .option('--attn-cache-tokens <n>', `KV cache tokens per block that all client sessions may reserve together (Petals' attn_cache_tokens; default ${DEFAULT_GQA_CACHE_TOKENS} for GQA models, else ${DEFAULT_MHA_CACHE_TOKENS})`, integer(1))
  .option('--inference-max-length <n>', "the longest session a client may open, announced to clients (never more than the model's context)", integer(1), DEFAULT_INFERENCE_MAX_LENGTH)
  .option('--max-sessions-per-peer <n>', 'sessions one client peer may hold open here at once; more are refused (a gateway is one peer for all its users)', integer(1), DEFAULT_MAX_SESSIONS_PER_PEER)
  .option('--relay-only', 'serve no blocks: be a bootstrap, relay and DHT node for the swarm (for a machine with a public IP; Petals\' run_dht)')
  .option('--use-relay', 'be reached through a relay without checking (default: ask peers to dial this machine back, and use a relay only if they cannot)')
  .option('--no-use-relay', 'never use a relay, and skip the check (a machine with a public address)')
  .showHelpAfterError()
  .action(async (o: NodeCliOptions) => {
    const log = (line: string): void => { process.stdout.write(`${line}\n`) }
    try {
      const swarm = await resolveSwarm(o)
      if (o.relayOnly === true && (o.blocks !== undefined || o.numBlocks !== undefined || o.useRelay === true)) {
        throw new BadFlagsError('--relay-only serves no blocks and must be reachable: drop --blocks, --num-blocks and --use-relay')
      }
      if (o.relayOnly !== true) {
        if (o.useRelay === true && swarm.initialPeers.length === 0) throw new BadFlagsError('--use-relay needs --initial-peers naming a relay (a node started with --relay-only)')
        if (o.blocks === undefined && o.numBlocks === undefined && (o.device ?? 'cpu') === 'cpu') throw new BadFlagsError('give --blocks START:END or --num-blocks N (on a GPU, --device cuda chooses how many fit)')
      }
      if (swarm.initialPeers.length === 0 && o.newSwarm !== true) throw new BadFlagsError('give --initial-peers MULTIADDR or --swarm NAME|FILE to join a swarm, or --new-swarm to start one')
      if (o.publicIp !== undefined && o.port === 0) throw new BadFlagsError('--public-ip needs a fixed --port (the one forwarded to this machine)')
      // --blocks against the model's config.json, before any node starts (BlockServer.start checks again).
      if (o.relayOnly !== true && o.blocks !== undefined) checkBlocks(await loadConfig(o.model), o.blocks)
      const updatePeriodMs = o.updatePeriod * 1000
      const expirationMs = (o.expiration ?? TTL_UPDATE_PERIODS * o.updatePeriod) * 1000
      const identity = o.identity === undefined ? undefined : await loadOrCreateIdentity(o.identity)
      if (identity?.created === true) log(`created identity ${o.identity}`)
      if (identity?.exposedMode != null) {
        process.stderr.write(`bmrt-node: warning: others can read ${o.identity} (mode 0${identity.exposedMode.toString(8)}): whoever reads it can sign records as this node; chmod 600 it\n`)
      }
      const network = {
        privateKey: identity?.privateKey,
        listen: o.hostAddrs.length > 0 ? o.hostAddrs : [`/ip4/0.0.0.0/tcp/${o.port}`],
        announce: [...o.announceAddrs, ...(o.publicIp !== undefined ? [`/ip4/${o.publicIp}/tcp/${o.port}`] : [])],
        swarmKey: swarm.swarmKey
      }
      if (o.relayOnly === true) {
        await runRelay({ ...network, bootstrap: swarm.initialPeers, records: { ttlMs: expirationMs, refreshMs: updatePeriodMs } }, log)
        return
      }
      const server = await BlockServer.start({
        modelDir: o.model,
        modelName: o.modelName,
        blocks: o.blocks,
        numBlocks: o.numBlocks,
        load: { ...loadOptions(o), maxCacheTokens: o.attnCacheTokens },
        ...network,
        port: o.port,
        initialPeers: swarm.initialPeers,
        publicName: o.publicName,
        inferenceMaxLength: o.inferenceMaxLength,
        peerLimits: { maxSessions: o.maxSessionsPerPeer },
        throughput: o.throughput,
        balanceQuality: o.balanceQuality,
        balanceCheckPeriodMs: o.meanBalanceCheckPeriod * 1000,
        updatePeriodMs,
        expirationMs,
        useRelay: o.useRelay,
        log
      })
      // The gateway is a client of the swarm like any other, joining through this server.
      let gateway: StartedGateway | null = null
      if (o.httpPort !== undefined) {
        try {
          gateway = await startGateway(o.model, { initialPeers: server.node.getMultiaddrs().map(a => a.toString()), swarmKey: swarm.swarmKey }, { ...o, modelName: server.modelName }, log)
        } catch (err) {
          await server.stop() // announces offline rather than leaving a record of a node that quit
          throw err
        }
      }
      const shutdown = (signal: string): void => {
        log(`${signal}: announcing offline and stopping`)
        Promise.resolve(gateway?.close()).then(async () => await server.stop()).then(() => { log('offline'); process.exit(0) }, err => { fail('bmrt-node', err); process.exit(EXIT_FAILURE) })
      }
      onStopSignals(shutdown)
    } catch (err) {
      fail('bmrt-node', err)
      process.exit(process.exitCode ?? EXIT_FAILURE)
    }
  })

/** --relay-only: a DHT server that relays for peers behind NAT, until a stop signal. */
async function runRelay (network: Omit<NodeOptions, 'role'>, log: (line: string) => void): Promise<void> {
  const node = await createNode({ role: 'relay', ...network })
  await serveDirectly(node)
  log(`peer id ${node.peerId.toString()}`)
  for (const addr of node.getMultiaddrs()) log(`  share as --initial-peers: ${addr.toString()}`)
  if ((network.bootstrap ?? []).length > 0) await joinSwarm(node)
  log('online: relaying and serving the DHT (no blocks)')
  onStopSignals(signal => {
    log(`${signal}: stopping`)
    Promise.resolve(node.stop()).then(() => { log('offline'); process.exit(0) }, (err: unknown) => { fail('bmrt-node', err); process.exit(EXIT_FAILURE) })
  })
}

await program.parseAsync(process.argv)
