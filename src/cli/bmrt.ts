// `bmrt`: the user's command. Subcommands: generate (local text generation), make-test-model.

import '../polyfill.js'
import { Command, Option } from 'commander'
import { LocalModel } from '../inference/model.js'
import { DEFAULT_MAX_NEW_TOKENS, generate, type GenerationResult } from '../inference/generate.js'
import { makeTestModel } from '../inference/test-model.js'
import { parseDType } from '../inference/dtype.js'
import { addBackendOptions, BUNDLED_MODEL, fail, integer, loadOptions, multiaddrArgument, number, repeatable, type BackendCliOptions } from './options.js'
import { createNode, joinSwarm } from '../p2p/node.js'
import { Registry, registryDhtOptions } from '../p2p/registry.js'
import { formatSwarmState, swarmState } from '../petals/swarm-state.js'

const program = new Command('bmrt')
  .description('bmrt: run large language models across ordinary machines, BitTorrent style')
  .showHelpAfterError()

addBackendOptions(program.command('generate'))
  .description('generate text with a model on this machine, streaming it to the terminal')
  .option('--model <dir>', 'Hugging Face model directory (config.json, safetensors, tokenizer.json)', BUNDLED_MODEL)
  .option('--prompt <text>', 'text to continue', 'Once upon a time')
  .option('--chat', "wrap the prompt as a user message in the model's chat template")
  .option('--system <text>', 'system message for --chat')
  .option('--max-new-tokens <n>', 'tokens to generate at most', integer(1), DEFAULT_MAX_NEW_TOKENS)
  .option('--temperature <t>', 'sampling temperature; 0 = greedy (argmax)', number(n => n >= 0, 'a number >= 0'), 0)
  .option('--top-k <k>', 'sample among the k most likely tokens; 0 = off', integer(0), 0)
  .option('--top-p <p>', 'sample among the most likely tokens reaching probability p; 1 = off', number(n => n > 0 && n <= 1, 'a number in (0, 1]'), 1)
  .option('--repetition-penalty <r>', 'penalise tokens already in the context; 1 = off', number(n => n > 0, 'a number > 0'), 1)
  .option('--seed <n>', 'seed for sampling (same seed, same output)', integer(Number.MIN_SAFE_INTEGER))
  .option('--stop <text>', 'stop before this text (repeatable)', repeatable, [])
  .option('--ignore-eos', 'keep generating after the end-of-sequence token')
  .option('--show-ids', 'print the prompt and generated token ids at the end')
  .action(async (o) => {
    try {
      await runGenerate(o)
    } catch (err) {
      fail('bmrt generate', err)
    }
  })

program.command('make-test-model')
  .description('write a random-weight Llama checkpoint of any shape (for tests and benchmarks)')
  .requiredOption('--out <dir>', 'directory to write config.json and the safetensors files into')
  .option('--layers <n>', 'decoder blocks', integer(1), 4)
  .option('--hidden <n>', 'hidden size', integer(2), 64)
  .option('--intermediate <n>', 'MLP intermediate size', integer(1), 160)
  .option('--heads <n>', 'attention heads', integer(1), 8)
  .option('--kv-heads <n>', 'key/value heads (fewer than --heads for grouped-query attention); default: --heads', integer(1))
  .option('--head-dim <n>', 'size of each head; default: hidden / heads', integer(2))
  .option('--vocab <n>', 'vocabulary size', integer(1), 512)
  .option('--dtype <dtype>', 'weight storage: f32, f16 or bf16', 'f32')
  .option('--shards <n>', 'safetensors files; more than 1 writes model.safetensors.index.json', integer(1), 1)
  .option('--tied', 'tie lm_head to the token embeddings')
  .option('--attention-bias', 'give q/k/v/o projections biases')
  .option('--mlp-bias', 'give the MLP projections biases')
  .option('--rope-theta <n>', 'rotary base', number(n => n > 0, 'a number > 0'), 10000)
  .option('--llama3-rope <factor>', 'llama3 rope scaling with this factor (low 1, high 4, original context 64)', number(n => n > 0, 'a number > 0'))
  .addOption(new Option('--model-type <type>', 'config.json model_type').choices(['llama', 'mistral']).default('llama'))
  .option('--sliding-window <n>', 'mistral sliding attention window in tokens', integer(1))
  .option('--max-positions <n>', 'max_position_embeddings', integer(1), 512)
  .option('--seed <n>', 'random seed for the weights', integer(0), 1)
  .option('--tokenizer-from <dir>', 'copy tokenizer.json and tokenizer_config.json from this model', BUNDLED_MODEL)
  .action(async (o) => {
    try {
      const config = await makeTestModel(o.out, {
        modelType: o.modelType,
        layers: o.layers,
        hidden: o.hidden,
        intermediate: o.intermediate,
        heads: o.heads,
        kvHeads: o.kvHeads,
        headDim: o.headDim,
        vocab: o.vocab,
        dtype: parseDType(o.dtype),
        shards: o.shards,
        tied: o.tied === true,
        attentionBias: o.attentionBias === true,
        mlpBias: o.mlpBias === true,
        ropeTheta: o.ropeTheta,
        ropeScaling: o.llama3Rope === undefined
          ? null
          : { rope_type: 'llama3', factor: o.llama3Rope, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
        slidingWindow: o.slidingWindow,
        maxPositions: o.maxPositions,
        seed: o.seed,
        tokenizerFrom: o.tokenizerFrom
      })
      process.stdout.write(`wrote a ${config.numLayers}-block ${config.modelType} model (hidden ${config.hiddenSize}, ${config.numHeads} heads, ${config.numKvHeads} KV heads, ${o.dtype}) to ${o.out}\n`)
    } catch (err) {
      fail('bmrt make-test-model', err)
    }
  })

program.command('swarm')
  .description('look at a swarm')
  .command('status')
  .description("each model's block coverage and servers (span, state, throughput, name, cache left), read from the DHT")
  .requiredOption('--initial-peers <multiaddr>', 'a peer of the swarm (repeatable)', multiaddrArgument)
  .option('--model <name>', 'only this model')
  .option('--json', 'print JSON for scripts')
  .action(async (o: { initialPeers: string[], model?: string, json?: boolean }) => {
    // A DHT client: it reads the swarm without storing records for others.
    const node = await createNode({ bootstrap: o.initialPeers, dhtServer: false, dht: registryDhtOptions({ rejected: {} }) })
    try {
      await joinSwarm(node, 1, 15_000)
      const state = await swarmState(new Registry(node), o.model)
      process.stdout.write(o.json === true ? `${JSON.stringify({ models: state }, null, 2)}\n` : formatSwarmState(state))
    } catch (err) {
      fail('bmrt swarm status', err)
    } finally {
      await node.stop()
    }
  })

interface GenerateCliOptions extends BackendCliOptions {
  model: string
  prompt: string
  chat?: boolean
  system?: string
  maxNewTokens: number
  temperature: number
  topK: number
  topP: number
  repetitionPenalty: number
  seed?: number
  stop: string[]
  ignoreEos?: boolean
  showIds?: boolean
}

async function runGenerate (o: GenerateCliOptions): Promise<void> {
  const log = (line: string): void => { process.stderr.write(`${line}\n`) }
  log(`loading ${o.model}`)
  const model = await LocalModel.load(o.model, { ...loadOptions(o), onProgress: m => log(`  ${m}`) })
  const chat = o.chat === true || o.system !== undefined
  const promptIds = chat
    ? model.tokenizer.encodeChat([...(o.system !== undefined ? [{ role: 'system' as const, content: o.system }] : []), { role: 'user', content: o.prompt }])
    : model.tokenizer.encode(o.prompt)
  const controller = new AbortController()
  process.once('SIGINT', () => controller.abort())

  if (!chat) process.stdout.write(o.prompt)
  const generation = generate(model, promptIds, {
    maxNewTokens: o.maxNewTokens,
    temperature: o.temperature,
    topK: o.topK,
    topP: o.topP,
    repetitionPenalty: o.repetitionPenalty,
    seed: o.seed,
    stop: o.stop,
    ignoreEos: o.ignoreEos === true,
    signal: controller.signal
  })
  let result: GenerationResult
  for (;;) {
    const next = await generation.next()
    if (next.done === true) { result = next.value; break }
    process.stdout.write(next.value.text)
  }
  process.stdout.write('\n')
  log(`[${result.ids.length} tokens, finished by ${result.finishReason}; prompt ${result.promptTokens} tokens in ${(result.prefillSeconds * 1000).toFixed(1)} ms; ${result.tokensPerSecond.toFixed(1)} tokens/s]`)
  if (o.showIds === true) log(`prompt ids: ${JSON.stringify(promptIds)}\ngenerated ids: ${JSON.stringify(result.ids)}`)
  model.close()
}

await program.parseAsync(process.argv)
