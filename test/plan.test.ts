// `bmrt plan`: the capacity arithmetic on the shipped configs, worked out again here from each
// config's own numbers, the shipped configs against the published sizes of those models, and the
// command as a user runs it (table, JSON, every kind of bad input).

import assert from 'node:assert/strict'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { blockParameterCount, readConfigFile, type ModelConfig } from '../src/inference/config.js'
import { meanAttendedTokens, planCapacity, type CapacityPlan } from '../src/petals/planning/capacity-plan.js'
import { byteSize } from '../src/cli/options.js'
import { expectFailures, ROOT, runCommand, scratchDir, type FailingCommand } from './helpers.js'

const CONFIGS = join(ROOT, 'models', 'configs')
const GIB = 2 ** 30

async function shipped (name: string): Promise<{ raw: Record<string, any>, config: ModelConfig }> {
  const path = join(CONFIGS, name, 'config.json')
  return { raw: JSON.parse(await readFile(path, 'utf8')), config: await readConfigFile(path) }
}

describe('bmrt plan', () => {
  describe('the shipped configs', () => {
    // Parameter counts the models' publishers state (Hugging Face model cards / safetensors metadata).
    const PUBLISHED_PARAMETERS: Record<string, number> = {
      'llama-2-70b': 68_976_648_192,
      'llama-3.1-70b': 70_553_706_496,
      'llama-3.1-8b': 8_030_261_248,
      'mistral-7b': 7_241_732_096,
      tinyllama: 1_100_048_384
    }

    it('are the five the issue asks for, and each parses with the project\'s config parser', async () => {
      const names = (await readdir(CONFIGS, { withFileTypes: true })).filter(e => e.isDirectory()).map(e => e.name).sort()
      assert.deepEqual(names, Object.keys(PUBLISHED_PARAMETERS).sort())
      for (const name of names) {
        const { raw, config } = await shipped(name)
        assert.equal(config.numLayers, raw.num_hidden_layers, name)
        assert.equal(config.numKvHeads, raw.num_key_value_heads, name)
      }
    })

    it('describe models of exactly their published sizes', async () => {
      for (const [name, published] of Object.entries(PUBLISHED_PARAMETERS)) {
        const { config } = await shipped(name)
        // blocks, plus embeddings and an untied lm_head, plus the final norm
        const total = config.numLayers * blockParameterCount(config) + (config.tieWordEmbeddings ? 1 : 2) * config.vocabSize * config.hiddenSize + config.hiddenSize
        assert.equal(total, published, name)
      }
    })

    it('carry the context and rotary settings of each model', async () => {
      const l31 = (await shipped('llama-3.1-70b')).config
      assert.deepEqual(l31.ropeScaling, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 })
      assert.equal(l31.ropeTheta, 500000)
      assert.equal(l31.maxPositionEmbeddings, 131072)
      assert.equal((await shipped('llama-2-70b')).config.maxPositionEmbeddings, 4096)
      assert.equal((await shipped('mistral-7b')).config.slidingWindow, 4096)
      assert.equal((await shipped('tinyllama')).config.maxPositionEmbeddings, 2048)
    })
  })

  describe('the arithmetic', () => {
    it('plans Llama-2-70B on 24 GiB nodes as worked out by hand from its config', async () => {
      const { raw, config } = await shipped('llama-2-70b')
      const h: number = raw.hidden_size
      const inter: number = raw.intermediate_size
      const layers: number = raw.num_hidden_layers
      const headDim = h / raw.num_attention_heads
      const kv = raw.num_key_value_heads * headDim
      const vocab: number = raw.vocab_size
      // q and o are h x h; k and v are kv x h; gate, up and down are inter x h; two fp32 norms
      const values = 2 * h * h + 2 * kv * h + 3 * inter * h
      const rows = h + 2 * kv + h + 2 * inter + h
      const norms = 2 * h * 4
      const weights = { bf16: 2 * values + norms, int8: values + 4 * rows + norms, int4: values / 2 + 4 * (values / 32) + norms }
      const cacheTokens = 16384 // Petals' default for a GQA model
      const kvPerToken = 2 * kv * 4 // fp32 key and value
      const reserve = Math.ceil(2 * GIB * h / 14336)
      const memory = 24 * GIB
      const rtt = 30
      const gbps = 45
      const clientGBps = 4

      for (const format of ['bf16', 'int8', 'int4'] as const) {
        const plan = planCapacity(config, { memoryBytes: memory, format, rttMs: rtt, layerSpeed: { decodeGBps: gbps, source: 'test' }, client: { gbps: clientGBps, source: 'test' } })
        const blockBytes = Math.ceil(weights[format] * 1.01)
        const blocks = Math.floor((memory - reserve) / (blockBytes + cacheTokens * kvPerToken))
        const nodes = Math.ceil(layers / blocks)
        assert.equal(plan.weightBytesPerBlock, weights[format], format)
        assert.equal(plan.memory.blockBytes, blockBytes, format)
        assert.equal(plan.memory.cacheBytesPerBlock, cacheTokens * kvPerToken)
        assert.equal(plan.memory.reserveBytes, reserve)
        assert.equal(plan.memory.blocks, blocks, format)
        assert.equal(plan.nodes, nodes, format)
        assert.equal(plan.nodesTwice, 2 * nodes, format)
        assert.equal(plan.projectionOnly, null, `${format} is served on a CPU`)

        // A session of the model's whole context (4096 < bmrt-node's 8192 limit)
        const maxLength: number = raw.max_position_embeddings
        assert.equal(plan.session.maxLength, maxLength)
        assert.equal(plan.session.bytesPerBlock, kvPerToken * maxLength)
        assert.equal(plan.session.bytesWholeModel, kvPerToken * maxLength * layers)
        assert.equal(plan.session.perNode, Math.floor(cacheTokens / maxLength))

        // One token: a round trip per node, every layer's weights and (on average) half a session's cache, the client's bf16 lm_head.
        const layerBytes = weights[format] + kvPerToken * (maxLength + 1) / 2
        const tokenMs = nodes * rtt + layers * layerBytes / (gbps * 1e6) + vocab * h * 2 / (clientGBps * 1e6)
        assert.ok(Math.abs(plan.speed!.tokenMs - tokenMs) < 1e-9 * tokenMs, `${format}: ${plan.speed!.tokenMs} vs ${tokenMs}`)
        assert.ok(Math.abs(plan.speed!.tokensPerSecond - 1000 / tokenMs) < 1e-9, format)
      }
      // The headline case: 13 bf16 blocks a node, 7 nodes for the model.
      const bf16 = planCapacity(config, { memoryBytes: memory, layerSpeed: { decodeGBps: gbps, source: 'test' }, client: { gbps: clientGBps, source: 'test' } })
      assert.deepEqual([bf16.memory.blocks, bf16.nodes], [13, 7])
    })

    it('takes a per-layer time as given, and the GPU path\'s formats as the only ones served there', async () => {
      const { config } = await shipped('llama-2-70b')
      const options = { memoryBytes: 80e9, device: 'gpu' as const, rttMs: 10, layerSpeed: { layerMs: 2, source: 'test' }, client: { gbps: 4, source: 'test' } }
      const plan = planCapacity(config, options)
      assert.equal(plan.speed!.blocksMs, config.numLayers * 2)
      assert.equal(plan.speed!.networkMs, plan.nodes! * 10)
      assert.equal(plan.projectionOnly, null)
      assert.match(planCapacity(config, { ...options, format: 'int4' }).projectionOnly!, /bmrt serves bf16, f16, f32 weights on a GPU, not int4/)
      assert.equal(planCapacity(config, { ...options, format: 'f32' }).projectionOnly, null)
    })

    it('counts a sliding window: Mistral reads at most 4096 cached tokens a step', async () => {
      const { config } = await shipped('mistral-7b')
      // positions 0..4095 attend to 1..4096 tokens, 4096..8191 to 4096 each
      assert.equal(meanAttendedTokens(8192, 4096), (4096 * 4097 / 2 + 4096 * 4096) / 8192)
      assert.equal(meanAttendedTokens(8192, null), 8193 / 2)
      assert.equal(meanAttendedTokens(2048, 4096), 2049 / 2)
      const plan = planCapacity(config, { memoryBytes: 16 * GIB, layerSpeed: { decodeGBps: 45, source: 'test' }, client: { gbps: 4, source: 'test' } })
      assert.equal(plan.session.maxLength, 8192) // bmrt-node's limit, below Mistral's 32768 positions
      assert.equal(plan.speed!.layerBytes, plan.weightBytesPerBlock + plan.session.bytesPerTokenPerBlock * meanAttendedTokens(8192, 4096))
    })

    it('says when not one block fits, and when a session is longer than a node\'s cache', async () => {
      const { config } = await shipped('llama-2-70b')
      const speed = { layerSpeed: { decodeGBps: 45, source: 'test' }, client: { gbps: 4, source: 'test' } }
      const tiny = planCapacity(config, { memoryBytes: 2 * GIB, ...speed })
      assert.deepEqual([tiny.memory.blocks, tiny.nodes, tiny.speed], [0, null, null])
      assert.equal(tiny.minMemoryBytes, tiny.memory.reserveBytes + tiny.memory.blockBytes + tiny.memory.cacheBytesPerBlock)
      assert.equal(planCapacity(config, { memoryBytes: 24 * GIB, cacheTokensPerBlock: 2048, ...speed }).session.perNode, 0)
      assert.throws(() => planCapacity(config, { memoryBytes: 24 * GIB, maxLength: 5000, ...speed }), /a session of 5000 tokens does not fit the model's context of 4096 tokens/)
    })

    it('reads memory sizes in SI and binary units', () => {
      assert.equal(byteSize('24GiB'), 24 * GIB)
      assert.equal(byteSize('24 gib'), 24 * GIB)
      assert.equal(byteSize('24G'), 24 * GIB)
      assert.equal(byteSize('80GB'), 80e9)
      assert.equal(byteSize('1.5TB'), 1.5e12)
      assert.equal(byteSize('512MiB'), 512 * 2 ** 20)
      assert.equal(byteSize('1000'), 1000)
      for (const bad of ['24XB', 'lots', '', '0G', '-1G', 'G']) assert.throws(() => byteSize(bad), /expected a size such as 24GiB/, bad)
    })
  })

  describe('the command', () => {
    it('prints the plan as a table, and the same plan as JSON', async () => {
      const args = ['plan', '--model', 'llama-2-70b', '--memory', '24GiB', '--bandwidth', '45', '--rtt', '30ms']
      const table = await runCommand('bmrt', args)
      assert.equal(table.code, 0, table.stderr)
      const json = await runCommand('bmrt', [...args, '--json'])
      assert.equal(json.code, 0, json.stderr)
      const out = JSON.parse(json.stdout) as { model: string, configPath: string, config: ModelConfig, plan: CapacityPlan }
      const { config } = await shipped('llama-2-70b')
      const expected = planCapacity(config, { memoryBytes: 24 * GIB, rttMs: 30, layerSpeed: { decodeGBps: 45, source: '--bandwidth' }, client: { gbps: out.plan.speed!.clientGBps, source: out.plan.speed!.clientSource } })
      assert.deepEqual(out.plan, expected)
      assert.equal(out.config.numLayers, 80)
      assert.match(out.plan.speed!.clientSource, /default/)
      // The table shows the same plan, with the numbers each line comes from.
      const p = out.plan
      assert.match(table.stdout, /^llama-2-70b \(.*models\/configs\/llama-2-70b\/config\.json\): CPU nodes with 24\.00 GiB \(25\.77 GB\) each, bf16 weights/)
      assert.match(table.stdout, new RegExp(`per node +${p.memory.blocks} blocks: \\(24\\.00 GiB - 1\\.14 GiB\\) / \\(1\\.61 GiB \\+ 128\\.0 MiB\\)`))
      assert.match(table.stdout, new RegExp(`nodes +${p.nodes} hold the model once \\(80 / ${p.memory.blocks}, rounded up\\); ${p.nodesTwice} hold every block twice`))
      assert.match(table.stdout, /session +4096 tokens: 32\.0 MiB per block, 2\.50 GiB over all 80 blocks; a node's cache holds 4 at once/)
      assert.match(table.stdout, new RegExp(`speed +${p.speed!.tokensPerSecond.toPrecision(3)} tokens/s for one client`))
      assert.match(table.stdout, new RegExp(`network +${p.nodes} hops x 30 ms`))
      assert.match(table.stdout, /blocks +80 layers x .* at 45\.0 GB\/s \(--bandwidth\)/)
      assert.doesNotMatch(table.stdout, /projection/)
    })

    it('reads a model directory, a config.json and bench:blocks figures, and marks projections', async () => {
      const { dir, cleanup } = await scratchDir()
      try {
        const figures = join(dir, 'figures.json')
        // The largest layer measured in a format gives its rate: 400 MB in 10 ms = 40 GB/s for bf16.
        await writeFile(figures, JSON.stringify({
          device: 'cpu', threads: 2, kernels: 'avx2', readGBps: 50, clientGBps: 2,
          layers: [{ shape: 'small', format: 'bf16', weightBytes: 1e6, decodeMs: 1 }, { shape: 'big', format: 'bf16', weightBytes: 4e8, decodeMs: 10 }]
        }))
        const fromDir = await runCommand('bmrt', ['plan', '--model', 'models/stories260K', '--memory', '1G', '--figures', figures, '--json'])
        assert.equal(fromDir.code, 0, fromDir.stderr)
        const speed = JSON.parse(fromDir.stdout).plan.speed
        assert.equal(speed.decodeGBps, 40)
        assert.equal(speed.clientGBps, 2)
        assert.match(speed.source, /bf16 decode of a big layer, 2 threads/)
        const fromFile = await runCommand('bmrt', ['plan', '--model', 'models/stories260K/config.json', '--memory', '1G', '--figures', figures])
        assert.equal(fromFile.code, 0, fromFile.stderr)
        assert.match(fromFile.stdout, /per node +5 blocks, all of them/)
        const noInt8 = await runCommand('bmrt', ['plan', '--model', 'tinyllama', '--memory', '1G', '--figures', figures, '--dtype', 'int8'])
        assert.equal(noInt8.code, 1)
        assert.match(noInt8.stderr, /bmrt plan: .*figures\.json has no decode figure for int8: measure it with `npm run bench:blocks -- --formats int8 --save FILE`/)
        const gpuInt8 = await runCommand('bmrt', ['plan', '--model', 'llama-2-70b', '--memory', '80GB', '--device', 'gpu', '--dtype', 'int8'])
        assert.equal(gpuInt8.code, 0, gpuInt8.stderr)
        assert.match(gpuInt8.stdout, /\(a projection only: bmrt serves bf16, f16, f32 weights on a GPU, not int8 yet\)/)
        assert.match(gpuInt8.stdout, /at 2000\.0 GB\/s \(default: an assumed 80 GB GPU, not measured; give --bandwidth\)/)
      } finally {
        await cleanup()
      }
    })

    it('explains bad input, and exits with 2 for flags that cannot work and 1 for what fails later', async () => {
      const { dir, cleanup } = await scratchDir()
      try {
        await writeFile(join(dir, 'broken.json'), '{"device": "cpu", "threads": 2}')
        // EXIT_BAD_FLAGS (2) when the flags themselves are wrong, 1 when
        // they are well formed but the plan fails (a session longer than the context, an unreadable file).
        const plan = (args: string[], stderr: RegExp, code: number): FailingCommand => ({ args: ['plan', ...args], stderr, code })
        await expectFailures('bmrt', [
          plan(['--model', 'llama-9000', '--memory', '24GiB'], /bmrt plan: no model 'llama-9000': give a shipped config \(llama-2-70b, llama-3\.1-70b, llama-3\.1-8b, mistral-7b, tinyllama\), a model directory or a config\.json file/, 2),
          plan(['--model', 'llama-2-70b', '--memory', '24XB'], /option '--memory <size>' argument '24XB' is invalid\. expected a size such as 24GiB \(GiB = 2\^30 bytes\), 80GB \(GB = 10\^9 bytes\)/, 2),
          plan(['--model', 'llama-2-70b'], /required option '--memory <size>' not specified/, 2),
          plan(['--model', 'llama-2-70b', '--memory', '24G', '--rtt', 'fast'], /argument 'fast' is invalid\. expected a time such as 30ms, 0\.03s or 30 \(milliseconds\)/, 2),
          plan(['--model', 'llama-2-70b', '--memory', '24G', '--bandwidth', '10', '--layer-ms', '3'], /option '--bandwidth <GB\/s>' cannot be used with option '--layer-ms <ms>'/, 2),
          plan(['--model', 'llama-2-70b', '--memory', '24G', '--dtype', 'int3'], /Allowed choices are f32, bf16, f16, int8, int4/, 2),
          plan(['--model', 'llama-2-70b', '--memory', '24G', '--max-length', '5000'], /a session of 5000 tokens does not fit the model's context of 4096 tokens/, 1),
          plan(['--model', 'llama-2-70b', '--memory', '24G', '--figures', join(dir, 'missing.json')], /cannot read figures from .*missing\.json \(ENOENT.*\); write it with `npm run bench:blocks -- --save FILE`/, 1),
          plan(['--model', 'llama-2-70b', '--memory', '24G', '--figures', join(dir, 'broken.json')], /broken\.json: 'readGBps' must be a positive number, got undefined; write it with/, 1),
          plan(['--model', 'llama-2-70b', '--memory', '24G', '--device', 'gpu', '--figures', join(dir, 'broken.json')], /holds CPU figures \(bench:blocks runs the CPU path\); for --device gpu give --bandwidth or --layer-ms/, 1),
          plan(['--model', dir, '--memory', '24G'], /no config\.json in .*: point --model at a Hugging Face model directory/, 2)
        ])
      } finally {
        await cleanup()
      }
    })

    it('puts the formula and the units in --help', async () => {
      const { code, stdout } = await runCommand('bmrt', ['plan', '--help'])
      assert.equal(code, 0)
      assert.match(stdout, /1 \/ \(hops x RTT \+ layers x layer time \+ client time\)/)
      assert.match(stdout, /GiB = 2\^30 bytes, GB = 10\^9 bytes/)
      assert.match(stdout, /floor\(\(--memory - reserve\) \/ \(block \+ cache\)\)/)
    })
  })
})
