// `bmrt`: the user's command. Subcommands: generate, chat (here or through a swarm), gateway (the
// HTTP API and web pages for a swarm), demo (a local swarm plus gateway: `npm start`),
// make-test-model, swarm status, plan (capacity planning).

import '../util/polyfill.js'
import { Command, Option } from 'commander'
import { createInterface } from 'node:readline'
import { collect, Conversation, generate, type GeneratedToken, type GenerationResult } from '../inference/generate.js'
import { makeTestModel } from '../inference/test-model.js'
import { parseDType } from '../inference/dtype.js'
import type { ChatMessage } from '../inference/tokenizer.js'
import { addModelOptions, addSamplingOptions, addSwarmOptions, BadFlagsError, BUNDLED_MODEL, EXIT_FAILURE, exitOnBadFlags, fail, integer, number, onStopSignals, openModel, resolveSwarm, samplingOptions, type ModelCliOptions, type SamplingCliOptions, type SwarmCliOptions } from './options.js'
import { createSwarmKey } from '../p2p/swarms.js'
import { createNode, joinSwarm } from '../p2p/node.js'
import { Registry } from '../p2p/registry.js'
import { formatSwarmState, swarmState } from '../petals/client/swarm-state.js'
import { runDemo, type DemoCliOptions } from './demo.js'
import { DEFAULT_GATEWAY_PORT } from '../api/gateway.js'
import { addGatewayOptions, startGateway, type GatewayCliOptions } from './gateway.js'
import { addPlanCommand } from './plan.js'

const program = exitOnBadFlags(new Command('bmrt'))
  .description('bmrt: run large language models across ordinary machines, BitTorrent style')
  .showHelpAfterError()

addModelOptions(addSamplingOptions(program.command('generate')))
  .description('generate text, streaming it to the terminal: on this machine, or through a swarm with --initial-peers')
  .option('--prompt <text>', 'text to continue', 'Once upon a time')
  .option('--chat', "wrap the prompt as a user message in the model's chat template")
  .option('--system <text>', 'system message for --chat')
  .option('--show-ids', 'print the prompt and generated token ids at the end')
  .action(async (o) => {
    try {
      await runGenerate(o)
    } catch (err) {
      fail('bmrt generate', err)
    }
  })

addModelOptions(addSamplingOptions(program.command('chat')))
  .description("talk with a model, turn after turn (one line of stdin per turn; earlier turns stay in the KV cache, here or on the swarm's servers)")
  .option('--system <text>', 'system message')
  .option('--max-length <n>', "tokens the conversation may hold (default: the model's context)", integer(2))
  .action(async (o) => {
    try {
      await runChat(o)
    } catch (err) {
      fail('bmrt chat', err)
    }
  })

addSwarmOptions(addGatewayOptions(program.command('gateway'), 'port to serve on (0: any free port)', DEFAULT_GATEWAY_PORT), 'a peer of the swarm (repeatable)')
  .description('serve an OpenAI-compatible API, a web chat, a swarm monitor and a job board for a model running on a swarm')
  .option('--model <dir>', 'the model directory (config.json, tokenizer.json, and the embeddings and lm_head weights)', BUNDLED_MODEL)
  .option('--model-name <name>', "the name servers announce the model under (default: the --model folder's name)")
  .action(async (o: GatewayCliOptions & SwarmCliOptions & { model: string, modelName?: string }) => {
    const log = (line: string): void => { process.stdout.write(`${line}\n`) }
    try {
      const started = await startGateway(o.model, await joinedSwarm(o), o, log)
      stopOnSignals(log, started.close)
    } catch (err) {
      fail('bmrt gateway', err)
      process.exit(process.exitCode ?? EXIT_FAILURE)
    }
  })

addGatewayOptions(program.command('demo'), 'port of the gateway', DEFAULT_GATEWAY_PORT)
  .description('start a local swarm of the bundled model (3 servers with different spans) and a gateway, then print the URL to open; Ctrl-C stops everything')
  .option('--model <dir>', 'the model the servers serve', BUNDLED_MODEL)
  .action(async (o: DemoCliOptions) => {
    const log = (line: string): void => { process.stdout.write(`${line}\n`) }
    try {
      stopOnSignals(log, (await runDemo(o, log)).close)
    } catch (err) {
      fail('bmrt demo', err)
      process.exit(process.exitCode ?? EXIT_FAILURE)
    }
  })

/** Ctrl-C, SIGTERM or a closed console: a clean `close`, then exit (a second Ctrl-C exits at once). */
function stopOnSignals (log: (line: string) => void, close: () => Promise<void>): void {
  onStopSignals(signal => {
    log(`${signal}: stopping (again to exit at once)`)
    process.once(signal, () => process.exit(130))
    close().then(() => { log('stopped'); process.exit(0) }, err => { fail('bmrt', err); process.exit(EXIT_FAILURE) })
  })
}

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

const swarmCommand = program.command('swarm').description('look at a swarm, or make a private one')

addSwarmOptions(swarmCommand.command('status'), 'a peer of the swarm (repeatable)')
  .description("each model's block coverage and servers (span, state, throughput, name, cache left), read from the DHT")
  .option('--model <name>', 'only this model')
  .option('--json', 'print JSON for scripts')
  .action(async (o: SwarmCliOptions & { model?: string, json?: boolean }) => {
    let swarm: Awaited<ReturnType<typeof joinedSwarm>>
    try {
      swarm = await joinedSwarm(o)
    } catch (err) {
      fail('bmrt swarm status', err)
      return
    }
    // A DHT client: it reads the swarm without storing records for others.
    const node = await createNode({ role: 'client', bootstrap: swarm.initialPeers, swarmKey: swarm.swarmKey })
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

swarmCommand.command('new-key')
  .description('write a new private-swarm key to FILE (mode 0600): give it to every server and client of the swarm with --swarm-key FILE')
  .argument('<file>', 'where to write the key (never overwritten)')
  .action(async (file: string) => {
    try {
      await createSwarmKey(file)
      process.stdout.write(`wrote a swarm key to ${file}: peers started with --swarm-key ${file} form a swarm no one else can connect to\n`)
    } catch (err) {
      fail('bmrt swarm new-key', err)
    }
  })

/** The swarm a command that needs one joins: --initial-peers or --swarm must name it. */
async function joinedSwarm (o: SwarmCliOptions): Promise<{ initialPeers: string[], swarmKey?: Uint8Array }> {
  const swarm = await resolveSwarm(o)
  if (swarm.initialPeers.length === 0) throw new BadFlagsError('give --initial-peers MULTIADDR (a peer of the swarm) or --swarm NAME|FILE')
  return swarm
}

addPlanCommand(program)

interface GenerateCliOptions extends ModelCliOptions, SamplingCliOptions {
  prompt: string
  chat?: boolean
  system?: string
  showIds?: boolean
}

async function runGenerate (o: GenerateCliOptions): Promise<void> {
  const log = (line: string): void => { process.stderr.write(`${line}\n`) }
  const model = await openModel(o, log)
  try {
    const chat = o.chat === true || o.system !== undefined
    const promptIds = chat
      ? model.tokenizer.encodeChat([...(o.system !== undefined ? [{ role: 'system' as const, content: o.system }] : []), { role: 'user', content: o.prompt }])
      : model.tokenizer.encode(o.prompt)
    const controller = new AbortController()
    process.once('SIGINT', () => controller.abort())
    if (!chat) process.stdout.write(o.prompt)
    const result = await streamToStdout(generate(model, promptIds, { ...samplingOptions(o), signal: controller.signal }))
    log(`[${result.ids.length} tokens, finished by ${result.finishReason}; prompt ${result.promptTokens} tokens in ${(result.prefillSeconds * 1000).toFixed(1)} ms; ${result.tokensPerSecond.toFixed(1)} tokens/s]`)
    if (o.showIds === true) log(`prompt ids: ${JSON.stringify(promptIds)}\ngenerated ids: ${JSON.stringify(result.ids)}`)
  } finally {
    await model.close()
  }
}

interface ChatCliOptions extends ModelCliOptions, SamplingCliOptions {
  system?: string
  maxLength?: number
}

/** The chat loop: every line is a user turn; /reset starts over, /exit (or end of input) leaves. */
async function runChat (o: ChatCliOptions): Promise<void> {
  const log = (line: string): void => { process.stderr.write(`${line}\n`) }
  const model = await openModel(o, log)
  const maxLength = Math.min(o.maxLength ?? model.config.maxPositionEmbeddings, model.config.maxPositionEmbeddings)
  const start = (): ChatMessage[] => (o.system !== undefined ? [{ role: 'system', content: o.system }] : [])
  let messages = start()
  let conversation = await Conversation.open(model, maxLength)
  const lines = createInterface({ input: process.stdin, terminal: process.stdin.isTTY })
  let generation: AbortController | null = null
  lines.on('SIGINT', () => { if (generation !== null) generation.abort(); else lines.close() })
  const interactive = process.stdin.isTTY === true
  const input = lines[Symbol.asyncIterator]() // buffers lines that arrive while a reply is generated
  if (interactive) log('type a message; /reset starts over, /exit or Ctrl-D leaves')
  try {
    for (;;) {
      if (interactive) process.stdout.write('> ')
      const next = await input.next()
      const line: string | null = next.done === true ? null : next.value
      if (line === null || line.trim() === '/exit') break
      if (line.trim() === '') continue
      if (line.trim() === '/reset') {
        await conversation.close()
        conversation = await Conversation.open(model, maxLength)
        messages = start()
        log('[conversation reset]')
        continue
      }
      messages.push({ role: 'user', content: line })
      generation = new AbortController()
      let result: GenerationResult
      try {
        result = await streamToStdout(conversation.generate(model.tokenizer.encodeChat(messages), { ...samplingOptions(o), signal: generation.signal }))
      } catch (err) {
        if (!(err instanceof RangeError)) throw err
        log(`[${err.message}; type /reset to start a new conversation]`)
        messages.pop()
        continue
      } finally {
        generation = null
      }
      messages.push({ role: 'assistant', content: result.text })
      log(`[${result.ids.length} tokens, ${result.finishReason}, ${result.tokensPerSecond.toFixed(1)} tokens/s; conversation ${conversation.length} of ${maxLength} tokens]`)
    }
  } finally {
    lines.close()
    await conversation.close()
    await model.close()
  }
}


/** Writes a generation's text as it comes, then a newline; returns its result. */
async function streamToStdout (generation: AsyncGenerator<GeneratedToken, GenerationResult>): Promise<GenerationResult> {
  const result = await collect(generation, token => process.stdout.write(token.text))
  process.stdout.write('\n')
  return result
}

await program.parseAsync(process.argv)
