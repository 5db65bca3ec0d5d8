// Option parsers, defaults and option groups shared by the bmrt and bmrt-node commands.

import { fileURLToPath } from 'node:url'
import { availableParallelism } from 'node:os'
import { InvalidArgumentError, Option, type Command } from 'commander'
import { multiaddr } from '@multiformats/multiaddr'
import { DEFAULT_MAX_NEW_TOKENS, type GenerateOptions } from '../inference/generate.js'
import type { LoadOptions } from '../inference/load-span.js'
import { LocalModel, type LanguageModel } from '../inference/model.js'
import { DEFAULT_SAMPLING } from '../inference/sampling.js'
import { DistributedModel } from '../petals/client/distributed-model.js'
import { formatRoute } from '../petals/client/routing.js'
import { DEFAULT_VERIFY_RATE } from '../petals/client/spot-check.js'
import { loadSwarm, loadSwarmKey, SWARM_PRESETS } from '../p2p/swarms.js'
import { DTYPES, type DType, type WeightFormat } from '../inference/dtype.js'
import { LOAD_FORMATS, type LoadFormat } from '../inference/dummy-weights.js'
import { OptionError, type OptionNamer } from '../util/errors.js'

/** The bundled stories260K model, used when --model is not given. */
export const BUNDLED_MODEL = fileURLToPath(new URL('../../../models/stories260K', import.meta.url))

export function integer (min: number) {
  return (value: string): number => {
    const n = Number(value)
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}`)
    return n
  }
}

export function number (check: (n: number) => boolean, expectation: string) {
  return (value: string): number => {
    const n = Number(value)
    if (value.trim() === '' || !Number.isFinite(n) || !check(n)) throw new InvalidArgumentError(`expected ${expectation}`)
    return n
  }
}

/** Multiples of a byte: SI (GB = 10^9) and binary (GiB = 2^30); a bare K, M, G or T is binary, as in `free -g`. */
const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12,
  k: 2 ** 10, kib: 2 ** 10, m: 2 ** 20, mib: 2 ** 20, g: 2 ** 30, gib: 2 ** 30, t: 2 ** 40, tib: 2 ** 40
}

/** Parses a memory size such as 24GiB, 80GB, 24G or 1.5TiB into bytes. */
export function byteSize (value: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value)
  const unit = match === null ? undefined : SIZE_UNITS[match[2].toLowerCase()]
  if (match === null || unit === undefined || Number(match[1]) <= 0) {
    throw new InvalidArgumentError('expected a size such as 24GiB (GiB = 2^30 bytes), 80GB (GB = 10^9 bytes) or 24G (= 24GiB)')
  }
  return Math.floor(Number(match[1]) * unit)
}

/** Parses a duration such as 30ms, 0.03s or 30 (milliseconds) into milliseconds. */
export function milliseconds (value: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$/i.exec(value)
  if (match === null) throw new InvalidArgumentError('expected a time such as 30ms, 0.03s or 30 (milliseconds)')
  return Number(match[1]) * (match[2]?.toLowerCase() === 's' ? 1000 : 1)
}

/** Collects a repeatable option's values. */
export function repeatable (value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

/** Collects a repeatable multiaddr option, refusing what is not one. */
export function multiaddrArgument (value: string, previous: string[] = []): string[] {
  try {
    multiaddr(value)
  } catch {
    throw new InvalidArgumentError('expected a multiaddr such as /ip4/1.2.3.4/tcp/31337/p2p/12D3KooW...')
  }
  return [...previous, value]
}

export interface SwarmCliOptions {
  initialPeers: string[]
  swarm?: string
  swarmKey?: string
}

/** --initial-peers, --swarm and --swarm-key: which swarm a command joins. */
export function addSwarmOptions (command: Command, initialPeersHelp: string): Command {
  return command
    .option('--initial-peers <multiaddr>', initialPeersHelp, multiaddrArgument, [])
    .option('--swarm <name|file>', `join a known swarm (${Object.keys(SWARM_PRESETS).join(', ')}) or the one a JSON file names: { "initialPeers": [MULTIADDR, ...] }; --initial-peers takes precedence`)
    .option('--swarm-key <file>', 'the key of a private swarm (peers without it cannot connect); make one with bmrt swarm new-key FILE')
}

/** The initial peers (--initial-peers, else --swarm's) and the private swarm key, if any. */
export async function resolveSwarm (o: SwarmCliOptions): Promise<{ initialPeers: string[], swarmKey?: Uint8Array }> {
  const initialPeers = o.initialPeers.length > 0 || o.swarm === undefined ? o.initialPeers : (await loadSwarm(o.swarm)).initialPeers
  return { initialPeers, swarmKey: o.swarmKey === undefined ? undefined : await loadSwarmKey(o.swarmKey) }
}

/** Parses `a:b` into the block span [a, b). */
export function blockSpan (value: string): { start: number, end: number } {
  const match = /^(\d+):(\d+)$/.exec(value.trim())
  if (match === null || Number(match[1]) >= Number(match[2])) throw new InvalidArgumentError('expected START:END with START < END, e.g. 0:20')
  return { start: Number(match[1]), end: Number(match[2]) }
}

/** The exit status of a command given flags that cannot work (commander's own parse errors too). */
export const EXIT_BAD_FLAGS = 2
/** The exit status of a command that failed while it ran. */
export const EXIT_FAILURE = 1

/**
 * The flag of each library option that an OptionError may name: the one place where the library's
 * option names (ServerOptions, LoadOptions, DistributedModelOptions) meet the CLI's flags.
 */
export const OPTION_FLAGS: Readonly<Record<string, string>> = {
  modelDir: '--model',
  modelName: '--model-name',
  blocks: '--blocks',
  numBlocks: '--num-blocks',
  'load.backend': '--backend',
  'load.device': '--device',
  'load.format': '--dtype',
  'load.maxCacheTokens': '--attn-cache-tokens',
  'load.python': '--python',
  swarm: '--swarm',
  initialPeers: '--initial-peers',
  swarmKey: '--swarm-key',
  useRelay: '--use-relay',
  inferenceMaxLength: '--inference-max-length',
  allowOrigins: '--allow-origin',
  allowHosts: '--allow-host',
  maxConnectionsPerIp: '--max-connections-per-ip',
  keptJobs: '--kept-jobs',
  maxQueuedJobs: '--max-queued-jobs',
  verifyRate: '--verify-rate'
}

/** An option's flag (see OPTION_FLAGS); an option without one keeps its library name. */
export const flagOf: OptionNamer = option => OPTION_FLAGS[option] ?? `options.${option}`

/** Flags that cannot work together, found by a command before it starts anything. */
export class BadFlagsError extends Error {
  override readonly name = 'BadFlagsError'
}

/** Makes commander's own errors (an unknown flag, a bad value) exit with EXIT_BAD_FLAGS; call before adding subcommands. */
export function exitOnBadFlags (command: Command): Command {
  return command.exitOverride(err => process.exit(err.exitCode === 0 ? 0 : EXIT_BAD_FLAGS))
}

/**
 * Calls `stop` once on Ctrl-C (SIGINT), SIGTERM, a closed terminal or console window (SIGHUP; on
 * Windows the console gives about 10 s) or Ctrl-Break (SIGBREAK, Windows), with the signal's name.
 */
export function onStopSignals (stop: (signal: string) => void): void {
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const
  const handle = (signal: string): void => {
    signals.forEach(s => process.off(s, handle))
    stop(signal)
  }
  signals.forEach(s => process.on(s, handle))
}

/**
 * Prints an error the way every bmrt command does, and sets the exit code: EXIT_BAD_FLAGS, with a
 * pointer to the help, for flags that cannot work (an OptionError is rendered with the flags), else
 * EXIT_FAILURE.
 */
export function fail (command: string, err: unknown): void {
  const badFlags = err instanceof OptionError || err instanceof BadFlagsError
  const message = err instanceof OptionError ? err.render(flagOf) : err instanceof Error ? err.message : String(err)
  process.stderr.write(`${command}: ${message}\n`)
  if (badFlags) process.stderr.write(`(${command} --help lists the options)\n`)
  process.exitCode = badFlags ? EXIT_BAD_FLAGS : EXIT_FAILURE
}

export interface BackendCliOptions {
  backend: 'auto' | 'native' | 'js' | 'torch'
  python?: string
  device?: string
  dtype?: DType
  quant: 'none' | 'int8' | 'int4'
  threads: number
  loadFormat: LoadFormat
}

/** The options that choose how blocks run, shared by every command that runs blocks. */
export function addBackendOptions (command: Command): Command {
  return command
    .addOption(new Option('--backend <name>', 'block executor: native (the C++ addon), js (portable reference), torch (a Python worker with PyTorch and transformers), auto = native when the addon built').choices(['auto', 'native', 'js', 'torch']).default('auto'))
    .addOption(new Option('--dtype <dtype>', "weight storage (native), weights and compute (torch); default: the checkpoint's dtype (torch on cpu: f32)").choices([...DTYPES]))
    .option('--python <path>', "the torch backend's Python interpreter (default: $BMRT_PYTHON, else python3)")
    .option('--device <device>', 'where blocks run: cpu (default); native: cuda, cuda:N or auto (a GPU when there is one); torch: cuda, cuda:N or mps')
    .addOption(new Option('--quant <q>', 'quantise weights at load time (native backend): int8 per-row, int4 per group of 32').choices(['none', 'int8', 'int4']).default('none'))
    .option('--threads <n>', 'threads for the native kernels', integer(1), availableParallelism())
    .addOption(new Option('--load-format <format>', 'safetensors: the model directory\'s weights; dummy: random weights of its shape made in memory, ' +
      'for benchmarks (only config.json and the tokenizer are read; a swarm knows the model as NAME-dummy)').choices([...LOAD_FORMATS]).default('safetensors'))
}

/** LoadOptions from the backend options. */
export function loadOptions (o: BackendCliOptions): LoadOptions {
  const format: WeightFormat | undefined = o.quant !== 'none' ? o.quant : o.dtype
  return { backend: o.backend, format, threads: o.threads, python: o.python, device: o.device, loadFormat: o.loadFormat }
}

export interface SamplingCliOptions {
  maxNewTokens: number
  temperature: number
  topK: number
  topP: number
  repetitionPenalty: number
  seed?: number
  stop: string[]
  ignoreEos?: boolean
}

/** The generation options shared by generate and chat. */
export function addSamplingOptions (command: Command): Command {
  return command
    .option('--max-new-tokens <n>', 'tokens to generate at most', integer(1), DEFAULT_MAX_NEW_TOKENS)
    .option('--temperature <t>', 'sampling temperature; 0 = greedy (argmax)', number(n => n >= 0, 'a number >= 0'), DEFAULT_SAMPLING.temperature)
    .option('--top-k <k>', 'sample among the k most likely tokens; 0 = off', integer(0), DEFAULT_SAMPLING.topK)
    .option('--top-p <p>', 'sample among the most likely tokens reaching probability p; 1 = off', number(n => n > 0 && n <= 1, 'a number in (0, 1]'), DEFAULT_SAMPLING.topP)
    .option('--repetition-penalty <r>', 'penalise tokens already in the context; 1 = off', number(n => n > 0, 'a number > 0'), DEFAULT_SAMPLING.repetitionPenalty)
    .option('--seed <n>', 'seed for sampling (same seed, same output)', integer(Number.MIN_SAFE_INTEGER))
    .option('--stop <text>', 'stop before this text (repeatable)', repeatable, [])
    .option('--ignore-eos', 'keep generating after the end-of-sequence token')
}

export function samplingOptions (o: SamplingCliOptions): GenerateOptions {
  return {
    maxNewTokens: o.maxNewTokens,
    temperature: o.temperature,
    topK: o.topK,
    topP: o.topP,
    repetitionPenalty: o.repetitionPenalty,
    seed: o.seed,
    stop: o.stop,
    ignoreEos: o.ignoreEos === true
  }
}

export interface ModelCliOptions extends BackendCliOptions, SwarmCliOptions {
  model: string
  modelName?: string
  wireDtype?: DType
  showRoute?: boolean
  verifyRate?: number
}

/** --verify-rate, for every command that runs a model on a swarm (generate, chat, the gateway). */
export function verifyRateOption (): Option {
  return new Option('--verify-rate <r>', 'swarm: the share of steps re-run on a second server holding the same blocks, to catch servers that compute wrong (0 = off)')
    .argParser(number(n => n >= 0 && n <= 1, 'a number from 0 to 1')).default(DEFAULT_VERIFY_RATE)
}

/** Where the model runs: this machine, or a swarm (--initial-peers). */
export function addModelOptions (command: Command): Command {
  return addSwarmOptions(addBackendOptions(command)
    .option('--model <dir>', 'Hugging Face model directory (config.json, tokenizer.json; safetensors: all of it here, only embeddings and lm_head for a swarm, whose head runs on --device)', BUNDLED_MODEL),
  'run the blocks on the swarm this peer belongs to (repeatable); without it or --swarm, everything runs here')
    .option('--model-name <name>', "swarm: the name servers announce the model under (default: the --model folder's name)")
    .addOption(new Option('--wire-dtype <dtype>', "swarm: activations on the wire (default: the model's dtype); bf16/f16 halve fp32 traffic").choices([...DTYPES]))
    .option('--show-route', 'swarm: print the chain of servers used, and every failover')
    .addOption(verifyRateOption())
}

/** Loads the model the options name, locally or as a client of a swarm. */
export async function openModel (o: ModelCliOptions, log: (line: string) => void): Promise<LanguageModel & { close: () => Promise<void> | void }> {
  const swarm = await resolveSwarm(o)
  if (swarm.initialPeers.length === 0) {
    log(`loading ${o.model}`)
    return await LocalModel.load(o.model, { ...loadOptions(o), onProgress: m => log(`  ${m}`) })
  }
  log(`loading the embeddings and lm_head of ${o.model}`)
  return await DistributedModel.load(o.model, {
    ...swarm,
    modelName: o.modelName,
    head: loadOptions(o),
    dtype: o.wireDtype,
    verifyRate: o.verifyRate,
    onProgress: m => log(`  ${m}`),
    onRoute: o.showRoute === true ? (route, reason) => log(`route (${reason}): ${formatRoute(route)}`) : undefined
  })
}
