// `bmrt-node`: the server command. This version loads a span of blocks and checks it runs; serving
// the span to a swarm (DHT announcements, the inference protocol) is the next piece of work.

import '../polyfill.js'
import { Command } from 'commander'
import { loadConfig } from '../inference/config.js'
import { loadBlockSpan, resolveBackend } from '../inference/load-span.js'
import { addBackendOptions, BUNDLED_MODEL, blockSpan, fail, loadOptions, type BackendCliOptions } from './options.js'

const program = addBackendOptions(new Command('bmrt-node'))
  .description('load a span of transformer blocks and check that it runs (swarm serving is not built yet)')
  .option('--model <dir>', 'Hugging Face model directory', BUNDLED_MODEL)
  .option('--blocks <start:end>', 'blocks to load, end excluded, e.g. 0:20; default: all', blockSpan)
  .showHelpAfterError()
  .action(async (o: BackendCliOptions & { model: string, blocks?: [number, number] }) => {
    try {
      const config = await loadConfig(o.model)
      const [start, end] = o.blocks ?? [0, config.numLayers]
      const log = (line: string): void => { process.stderr.write(`${line}\n`) }
      log(`loading blocks ${start}:${end} of ${o.model} (${config.numLayers} blocks, ${resolveBackend(o.backend)} backend)`)
      const span = await loadBlockSpan(o.model, start, end, { ...loadOptions(o), onBlock: b => log(`  block ${b} loaded`) })
      const fullSession = span.cacheBytesPerToken * config.maxPositionEmbeddings
      log(`weights in memory: ${(span.weightBytes / 2 ** 20).toFixed(1)} MiB (${span.backend} backend); KV cache: ${span.cacheBytesPerToken} bytes per token, ${(fullSession / 2 ** 20).toFixed(1)} MiB for a session of the full ${config.maxPositionEmbeddings}-token context`)
      const session = span.openSession(8)
      const started = performance.now()
      const out = await span.forward(session, new Float32Array(8 * config.hiddenSize).fill(0.1))
      log(`check: 8 tokens through the span in ${(performance.now() - started).toFixed(1)} ms, outputs finite: ${out.every(Number.isFinite)}`)
      span.close()
      log('serving a span to a swarm is not in this version of bmrt-node; it exits after the check')
    } catch (err) {
      fail('bmrt-node', err)
    }
  })

await program.parseAsync(process.argv)
