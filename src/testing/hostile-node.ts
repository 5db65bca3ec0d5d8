// A hostile bmrt-node for chaos runs (issue 21): the real bmrt-node, started with its own flags,
// whose server computes wrong once online (hostile-server.ts's corrupt) and may claim to be faster
// than it is. What it prints is bmrt-node's, so a run reads it like any other server.
//
//   node dist/src/testing/hostile-node.js --corrupt noise:0.1|zeros|skip [--claim-speed X] -- <bmrt-node flags>
//
// --claim-speed X announces X times the throughput it was given and X times the decode speed
// routing assumes of a server that announces none. Test tooling only: never shipped in bin/.

import '../util/polyfill.js'
import { parseArgs } from 'node:util'
import { DEFAULT_INFERENCE_RPS } from '../petals/client/routing.js'
import { BlockServer } from '../petals/server/server.js'
import { claimSpeed, corrupt, type Corruption } from './hostile-server.js'

const split = process.argv.indexOf('--')
if (split === -1) throw new Error('usage: hostile-node.js --corrupt noise:R|zeros|skip [--claim-speed X] -- <bmrt-node flags>')
const { values } = parseArgs({ args: process.argv.slice(2, split), options: { corrupt: { type: 'string' }, 'claim-speed': { type: 'string' } } })

/** `--corrupt`'s value as a Corruption. */
function corruption (value: string | undefined): Corruption {
  if (value === 'zeros') return 'zeros'
  if (value === 'skip') return 'skip layers'
  const noise = /^noise:([\d.]+)$/.exec(value ?? '')
  if (noise !== null) return { noise: Number(noise[1]) }
  throw new Error(`--corrupt takes noise:R, zeros or skip, got ${value ?? 'nothing'}`)
}
const how = corruption(values.corrupt)
const factor = values['claim-speed'] !== undefined ? Number(values['claim-speed']) : undefined

// bmrt-node's own start, with the server made hostile as soon as it is online.
const start = BlockServer.start.bind(BlockServer)
BlockServer.start = async options => {
  const server = await start(options)
  corrupt(server, how)
  if (factor !== undefined) {
    const throughput = typeof options.throughput === 'number' ? options.throughput : 1
    await claimSpeed(server, server.modelName, factor * DEFAULT_INFERENCE_RPS, factor * throughput)
  }
  process.stdout.write(`hostile: ${typeof how === 'string' ? how : `noise ${how.noise}`}${factor !== undefined ? `, claiming ${factor}x its speed` : ''}\n`)
  return server
}
process.argv = [process.argv[0], process.argv[1], ...process.argv.slice(split + 1)]
await import('../cli/bmrt-node.js')
