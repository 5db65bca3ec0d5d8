// The HTTP gateway as the CLI starts it, shared by `bmrt gateway` (a client of a swarm),
// `bmrt-node --http-port` (a server that also serves the API) and `bmrt demo`.

import { Command, Option } from 'commander'
import { ApiModel } from '../api/api-model.js'
import { checkGatewayOptions, DEFAULT_GATEWAY_HOST, DEFAULT_GATEWAY_PORT, DEFAULT_MAX_CONNECTIONS_PER_IP, Gateway } from '../api/gateway.js'
import { readContributorKeys } from '../api/contributor-keys.js'
import { DEFAULT_JOB_CONCURRENCY, DEFAULT_KEPT_JOBS, DEFAULT_MAX_QUEUED_JOBS } from '../api/jobs.js'
import { DistributedModel } from '../petals/client/distributed-model.js'
import { formatRoute } from '../petals/client/routing.js'
import { integer, repeatable, verifyRateOption } from './options.js'

export interface GatewayCliOptions {
  httpPort?: number
  httpHost: string
  apiKey?: string
  contributorKeys?: string
  jobsFile?: string
  modelAlias: string[]
  maxQueuedJobs: number
  jobConcurrency: number
  allowOrigin?: string[]
  allowHost?: string[]
  maxConnectionsPerIp?: number
  keptJobs?: number
  verifyRate?: number
}

/** The gateway's options, with --http-port's help worded for the command. */
export function addGatewayOptions (command: Command, portHelp: string, defaultPort?: number): Command {
  return command
    .option('--http-port <n>', portHelp, integer(0), defaultPort)
    .option('--http-host <host>', 'interface the HTTP gateway listens on; 0.0.0.0 exposes it to the network', DEFAULT_GATEWAY_HOST)
    .addOption(new Option('--api-key <key>', 'require Authorization: Bearer <key> on the API (default: none, open to whoever reaches the port)').env('BMRT_API_KEY'))
    .option('--contributor-keys <file>', 'API keys bound to contributors: lines of "<api-key> <peer-id>"; such a key lets its holder use the API, and the jobs it submits are queued by the verified credits of the servers with that peer id')
    .option('--jobs-file <path>', 'where the job board keeps its jobs (default: bmrt/jobs.jsonl in the user data directory)')
    .option('--model-alias <id>', 'another id the API answers to, for clients that only accept OpenAI model names (repeatable)', (v: string, all: string[]) => [...all, v], [])
    .option('--max-queued-jobs <n>', 'jobs that may wait; more are refused with 429', integer(1), DEFAULT_MAX_QUEUED_JOBS)
    .option('--job-concurrency <n>', 'jobs generating at once', integer(1), DEFAULT_JOB_CONCURRENCY)
    .option('--kept-jobs <n>', 'ended jobs the board keeps, in memory and in its file; older ones leave only their contributions', integer(1), DEFAULT_KEPT_JOBS)
    .option('--allow-origin <origin>', 'let web pages of this origin (https://app.example:8443) call the API; by default only the gateway\'s own pages may (repeatable)', repeatable, [])
    .option('--allow-host <name>', 'answer to this host name too; by default only IP addresses and localhost, against DNS rebinding (repeatable)', repeatable, [])
    .option('--max-connections-per-ip <n>', 'connections one IP address may hold open; more are closed', integer(1), DEFAULT_MAX_CONNECTIONS_PER_IP)
    .addOption(verifyRateOption())
}

export interface StartedGateway {
  gateway: Gateway
  model: DistributedModel
  close: () => Promise<void>
}

/**
 * Joins the swarm through `swarm.initialPeers` as a client for the model in `modelDir` and serves the gateway
 * on it. Logs the URLs a person opens.
 */
export async function startGateway (modelDir: string, swarm: { initialPeers: string[], swarmKey?: Uint8Array }, o: GatewayCliOptions & { modelName?: string },
  log: (line: string) => void): Promise<StartedGateway> {
  const guards = { keptJobs: o.keptJobs, allowOrigins: o.allowOrigin, allowHosts: o.allowHost, maxConnectionsPerIp: o.maxConnectionsPerIp }
  checkGatewayOptions(guards) // before joining the swarm
  const contributorKeys = o.contributorKeys !== undefined ? await readContributorKeys(o.contributorKeys) : undefined
  const model = await DistributedModel.load(modelDir, {
    ...swarm,
    modelName: o.modelName,
    verifyRate: o.verifyRate,
    onProgress: m => log(`gateway: ${m}`),
    onRoute: (route, reason) => { if (reason !== 'open') log(`gateway: route ${formatRoute(route)} (${reason})`) }
  })
  try {
    const id = model.manager.model
    const gateway = await Gateway.start({
      model: new ApiModel(model, id, o.modelAlias),
      work: model,
      node: model.node,
      host: o.httpHost,
      port: o.httpPort ?? DEFAULT_GATEWAY_PORT,
      apiKey: o.apiKey,
      contributorKeys,
      jobsFile: o.jobsFile,
      maxQueuedJobs: o.maxQueuedJobs,
      jobConcurrency: o.jobConcurrency,
      ...guards,
      log: line => log(`gateway: ${line}`)
    })
    const url = gateway.url
    log(`gateway: serving ${id} at ${url}`)
    log(`  chat            ${url}`)
    log(`  swarm monitor   ${url}swarm`)
    log(`  job board       ${url}jobs`)
    log(`  OpenAI API      ${url}v1  (model "${id}"${o.apiKey !== undefined ? ', needs the API key' : ''})`)
    if (contributorKeys !== undefined) log(`  contributor keys: ${contributorKeys.size}; their jobs are queued by their servers' verified credits`)
    return {
      gateway,
      model,
      close: async () => {
        await gateway.close()
        await model.close()
      }
    }
  } catch (err) {
    await model.close()
    throw err
  }
}
