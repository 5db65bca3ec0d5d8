// `bmrt plan`: the capacity plan of a model on nodes of a given memory
// (src/petals/planning/capacity-plan.ts does the arithmetic): which model (a shipped config by
// name, a model directory or a config.json), which speed figures, and the table or JSON a person or
// a script reads.

import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Option, type Command } from 'commander'
import { loadConfig, readConfigFile, type ModelConfig } from '../inference/config.js'
import { decodeGBps, readBlockFigures } from '../inference/block-figures.js'
import { WEIGHT_FORMATS, type WeightFormat } from '../inference/dtype.js'
import { headBytesPerValue, planCapacity, type CapacityPlan, type LayerSpeed, type PlanDevice } from '../petals/planning/capacity-plan.js'
import { DEFAULT_INFERENCE_MAX_LENGTH } from '../petals/protocol/server-info.js'
import { DEFAULT_GQA_CACHE_TOKENS, DEFAULT_MHA_CACHE_TOKENS } from '../petals/planning/memory-plan.js'
import { BadFlagsError, byteSize, fail, integer, milliseconds, number } from './options.js'

/** The architectures shipped for planning (config.json files without weights). */
const SHIPPED_CONFIGS = fileURLToPath(new URL('../../../models/configs', import.meta.url))

// Speed figures used when none is given. CPU: the bf16 decode rate of a Llama-2-7B layer that
// `npm run bench:blocks` measured on this project's 2-core VM (2 threads; 405 MB in 9.06 ms, about
// 45 GB/s; docs/performance.md's table, 46). GPU: an assumption, not a measurement (bmrt's CUDA
// path has no figures yet): about 60% of an H100 SXM's 3.35 TB/s, or an A100 80GB's 2.0 TB/s
// peak. Client: the native head's bf16 lm_head on the same VM, 2 threads
// (npm run bench:head -- --hidden 2048: 131 MB in 3.2 ms).
const DEFAULT_DECODE_GBPS: Record<PlanDevice, number> = { cpu: 45, gpu: 2000 }
const DEFAULT_CLIENT_GBPS = 41

const HELP = `
How the numbers are made (Petals' server rules, bmrt's storage):
  block        weights of one decoder block (q, k, v, o, gate, up, down; norms in fp32) as bmrt
               stores them in --dtype (int8: 1 byte + a 4-byte scale per row; int4: half a byte +
               a 4-byte scale per 32 values), x 1.01 (Petals' margin)
  cache        2 (key, value) x KV heads x head dim x 4 bytes (bmrt's fp32 cache) x --attn-cache-tokens
  reserve      2 GiB x hidden size / 14336 (Petals' memory for activations)
  blocks/node  floor((--memory - reserve) / (block + cache)), at most the model's layers
  nodes        ceil(layers / blocks per node); every block twice: two such chains
  session      2 x KV heads x head dim x 4 bytes x --max-length, per block
  tokens/s     for one client, one token at a time:
                 1 / (hops x RTT + layers x layer time + client time)
               hops        = nodes (every hop's output comes back to the client)
               layer time  = (block weights + the KV cache a step reads, averaged over a session)
                             / decode bandwidth; or --layer-ms
               client time = lm_head (vocab x hidden x 2 bytes: the client's native bf16 head; 4 for f32) / its rate
               Not counted: moving the hidden state (hidden x 2 bytes each way per hop), the
               prompt's prefill, and other clients sharing the servers.

Speed figures (one of):
  --figures FILE   what \`npm run bench:blocks -- --save FILE\` measured on a CPU node: the decode rate
                   of the largest layer measured in --dtype, and the client's lm_head rate
  --bandwidth GBS  the rate one layer's decode streams its bytes at, GB/s
  --layer-ms MS    one layer's decode time
  default          cpu ${DEFAULT_DECODE_GBPS.cpu} GB/s: bf16 decode of a Llama-2-7B layer on this project's 2-core VM
                   (bench:blocks, 2 threads); gpu ${DEFAULT_DECODE_GBPS.gpu} GB/s: an assumption (about 60% of an
                   H100 SXM's 3.35 TB/s; an A100 80GB's peak), not measured with bmrt. The client's
                   lm_head: ${DEFAULT_CLIENT_GBPS} GB/s (bf16 on 2 threads, the same VM) unless --figures says.

Units: GiB = 2^30 bytes, GB = 10^9 bytes; a bare K, M, G or T means KiB, MiB, GiB, TiB.
       RTT: 30ms, 0.03s, or a number of milliseconds.

Examples:
  bmrt plan --model llama-2-70b --memory 24GiB
  bmrt plan --model llama-2-70b --memory 80GB --device gpu --rtt 10ms
  bmrt plan --model path/to/model --memory 16G --dtype int8 --figures figures.json --json
`

interface PlanCliOptions {
  model: string
  memory: number
  device: PlanDevice
  dtype: WeightFormat
  rtt: number
  maxLength?: number
  attnCacheTokens?: number
  figures?: string
  bandwidth?: number
  layerMs?: number
  json?: boolean
}

/** Adds `plan` to the bmrt program. */
export function addPlanCommand (program: Command): void {
  program.command('plan')
    .description('plan a swarm for a model: blocks per node, nodes for the whole model, KV cache per session, projected tokens/s')
    .requiredOption('--model <name|dir|config.json>', 'a shipped config by name (see models/configs), a Hugging Face model directory, or its config.json')
    .requiredOption('--memory <size>', 'memory each node gives bmrt (RAM on a CPU node, GPU memory on a GPU node), e.g. 24GiB or 80GB', byteSize)
    .addOption(new Option('--device <kind>', 'what the nodes run blocks on: which formats bmrt serves, and the default speed').choices(['cpu', 'gpu']).default('cpu'))
    .addOption(new Option('--dtype <format>', 'weight storage').choices([...WEIGHT_FORMATS]).default('bf16'))
    .addOption(new Option('--rtt <time>', 'round-trip time between the client and each server').argParser(milliseconds).default(30, '30ms'))
    .option('--max-length <n>', `tokens of one session (default: the model's context, at most ${DEFAULT_INFERENCE_MAX_LENGTH}, bmrt-node's --inference-max-length)`, integer(1))
    .option('--attn-cache-tokens <n>', `KV cache tokens per block each node reserves (bmrt-node's option; default ${DEFAULT_GQA_CACHE_TOKENS} for GQA models, else ${DEFAULT_MHA_CACHE_TOKENS})`, integer(1))
    .addOption(new Option('--figures <file>', 'speed figures saved by `npm run bench:blocks -- --save FILE`').conflicts(['bandwidth', 'layerMs']))
    .addOption(new Option('--bandwidth <GB/s>', "a node's decode bandwidth, GB/s").argParser(number(n => n > 0, 'a number of GB/s > 0')).conflicts(['layerMs']))
    .addOption(new Option('--layer-ms <ms>', "one layer's decode time on a node, ms").argParser(number(n => n > 0, 'a number of ms > 0')))
    .option('--json', 'print JSON for scripts')
    .addHelpText('after', HELP)
    .action(async (o: PlanCliOptions) => {
      try {
        await runPlan(o)
      } catch (err) {
        fail('bmrt plan', err)
      }
    })
}

async function runPlan (o: PlanCliOptions): Promise<void> {
  const { config, path, label } = await loadPlanModel(o.model)
  const { layerSpeed, client } = await speedFigures(o)
  const plan = planCapacity(config, {
    memoryBytes: o.memory,
    device: o.device,
    format: o.dtype,
    maxLength: o.maxLength,
    cacheTokensPerBlock: o.attnCacheTokens,
    rttMs: o.rtt,
    layerSpeed,
    client
  })
  process.stdout.write(o.json === true ? `${JSON.stringify({ model: o.model, configPath: path, config, plan }, null, 2)}\n` : formatPlan(o.model, label, config, plan))
}

/** The names `--model` accepts for the shipped configs. */
async function shippedConfigNames (): Promise<string[]> {
  const entries = await readdir(SHIPPED_CONFIGS, { withFileTypes: true })
  return entries.filter(e => e.isDirectory()).map(e => e.name).sort()
}

/** A shipped config by name, a model directory, or a config.json file; `label` names the file for a person. */
async function loadPlanModel (model: string): Promise<{ config: ModelConfig, path: string, label: string }> {
  const shipped = await shippedConfigNames()
  if (shipped.includes(model)) {
    const path = join(SHIPPED_CONFIGS, model, 'config.json')
    return { config: await readConfigFile(path), path, label: `models/configs/${model}/config.json` }
  }
  const found = await stat(model).catch(() => null)
  if (found === null) throw new BadFlagsError(`no model '${model}': give a shipped config (${shipped.join(', ')}), a model directory or a config.json file`)
  const path = found.isDirectory() ? join(model, 'config.json') : model
  return { config: found.isDirectory() ? await loadConfig(model) : await readConfigFile(model), path, label: path }
}

/** The per-layer speed and the client's rate: given, from a bench:blocks file, or the defaults. */
async function speedFigures (o: PlanCliOptions): Promise<{ layerSpeed: LayerSpeed, client: { gbps: number, source: string } }> {
  const defaultClient = { gbps: DEFAULT_CLIENT_GBPS, source: "default: the native bf16 lm_head on this project's 2-core VM" }
  if (o.layerMs !== undefined) return { layerSpeed: { layerMs: o.layerMs, source: '--layer-ms' }, client: defaultClient }
  if (o.bandwidth !== undefined) return { layerSpeed: { decodeGBps: o.bandwidth, source: '--bandwidth' }, client: defaultClient }
  if (o.figures !== undefined) {
    if (o.device !== 'cpu') throw new Error(`${o.figures} holds CPU figures (bench:blocks runs the CPU path); for --device ${o.device} give --bandwidth or --layer-ms`)
    const figures = await readBlockFigures(o.figures)
    const { gbps, layer } = decodeGBps(figures, o.dtype, o.figures)
    return {
      layerSpeed: { decodeGBps: gbps, source: `${o.figures}: ${o.dtype} decode of a ${layer.shape} layer, ${figures.threads} threads` },
      client: { gbps: figures.clientGBps, source: o.figures }
    }
  }
  const layerSource = o.device === 'cpu'
    ? "default: bf16 decode on this project's 2-core VM; measure yours with npm run bench:blocks -- --save FILE"
    : 'default: an assumed 80 GB GPU, not measured; give --bandwidth'
  return { layerSpeed: { decodeGBps: DEFAULT_DECODE_GBPS[o.device], source: layerSource }, client: defaultClient }
}

const KIB = 2 ** 10
const MIB = 2 ** 20
const GIB = 2 ** 30

/** A memory size in the largest binary unit that keeps it >= 1. */
function size (bytes: number): string {
  if (bytes >= 1000 * MIB) return `${(bytes / GIB).toFixed(2)} GiB`
  if (bytes >= MIB) return `${(bytes / MIB).toFixed(1)} MiB`
  if (bytes >= KIB) return `${(bytes / KIB).toFixed(1)} KiB`
  return `${bytes} B`
}

/** Bytes in SI units (GB = 10^9), to sit beside rates in GB/s. */
function si (bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`
  return `${(bytes / 1e3).toFixed(1)} kB`
}

function ms (value: number): string {
  return `${value < 1 ? value.toPrecision(2) : value < 10 ? value.toFixed(2) : value.toFixed(0)} ms`
}

/** The plan as a person reads it: each figure with the numbers it comes from. */
function formatPlan (name: string, label: string, config: ModelConfig, plan: CapacityPlan): string {
  const { memory, session, speed } = plan
  const c = config
  const lines: string[] = []
  const row = (label: string, text: string): void => { lines.push(`${label.padEnd(11)} ${text}`) }
  lines.push(`${name}${label === name ? '' : ` (${label})`}: ${plan.device.toUpperCase()} nodes with ${size(memory.memoryBytes)} (${si(memory.memoryBytes)}) each, ${plan.format} weights`)
  if (plan.projectionOnly !== null) lines.push(`(a projection only: ${plan.projectionOnly} yet)`)
  lines.push('')
  row('model', `${c.numLayers} blocks, hidden ${c.hiddenSize}, ${c.numHeads} heads, ${c.numKvHeads} KV heads, head dim ${c.headDim}, ` +
    `intermediate ${c.intermediateSize}, vocab ${c.vocabSize}, context ${c.maxPositionEmbeddings}`)
  row('block', `${size(memory.blockBytes)}: ${size(plan.weightBytesPerBlock)} of ${plan.format} weights x 1.01`)
  row('cache', `${size(memory.cacheBytesPerBlock)} per block: ${plan.cacheTokensPerBlock} tokens x ${size(session.bytesPerTokenPerBlock)} (key and value, fp32)`)
  row('reserve', `${size(memory.reserveBytes)} for activations (2 GiB x ${c.hiddenSize} / 14336)`)
  const perBlock = memory.blockBytes + memory.cacheBytesPerBlock
  const share = (memory.memoryBytes - memory.reserveBytes) / perBlock
  const capped = memory.blocks === c.numLayers && share > c.numLayers ? ', all of them' : ''
  row('per node', `${memory.blocks} blocks${capped}: (${size(memory.memoryBytes)} - ${size(memory.reserveBytes)}) / (${size(memory.blockBytes)} + ${size(memory.cacheBytesPerBlock)}) = ${Math.max(0, share).toFixed(1)}`)
  if (plan.nodes === null) {
    row('nodes', `none: one block needs ${size(plan.minMemoryBytes)} with its cache and the reserve; give more --memory, a smaller --dtype or fewer --attn-cache-tokens`)
  } else {
    row('nodes', `${plan.nodes} hold the model once (${c.numLayers} / ${memory.blocks}, rounded up); ${plan.nodesTwice} hold every block twice`)
  }
  const fits = session.perNode > 0
    ? `a node's cache holds ${session.perNode} at once (${plan.cacheTokensPerBlock} / ${session.maxLength})`
    : `more than a node's cache of ${plan.cacheTokensPerBlock} tokens per block: raise --attn-cache-tokens or lower --max-length`
  row('session', `${session.maxLength} tokens: ${size(session.bytesPerBlock)} per block, ${size(session.bytesWholeModel)} over all ${c.numLayers} blocks; ${fits}`)
  row('client', `${size(plan.client.bytes)} for the embeddings and lm_head (${headBytesPerValue(plan.format) === 4 ? 'f32' : 'bf16'})`)
  if (speed !== null) {
    row('speed', `${speed.tokensPerSecond.toPrecision(3)} tokens/s for one client (${ms(speed.tokenMs)} per token):`)
    const kvBytes = speed.layerBytes - plan.weightBytesPerBlock
    const rate = speed.decodeGBps === null ? 'given' : `${si(plan.weightBytesPerBlock)} of weights + ${si(kvBytes)} of KV cache read per layer at ${speed.decodeGBps.toFixed(1)} GB/s`
    const terms: Array<[string, string, number, string]> = [
      ['network', `${speed.hops} hop${speed.hops === 1 ? '' : 's'} x ${ms(speed.rttMs)}`, speed.networkMs, 'round trips'],
      ['blocks', `${c.numLayers} layers x ${ms(speed.layerMs)}`, speed.blocksMs, `${rate} (${speed.source})`],
      ['client', `${si(speed.lmHeadBytes)} at ${speed.clientGBps.toFixed(1)} GB/s`, speed.clientMs, `its lm_head (${speed.clientSource})`]
    ]
    for (const [label, how, value, why] of terms) lines.push(`${''.padEnd(14)}${label.padEnd(8)} ${how.padEnd(28)} = ${ms(value).padStart(8)}   ${why}`)
  }
  return `${lines.join('\n')}\n`
}
