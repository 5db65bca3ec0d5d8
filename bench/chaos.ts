// Chaos on a loopback swarm: a random Llama-2-70B-shaped model (80 blocks, 64 heads, 8 KV heads,
// hidden 128) served by bmrt-node processes with overlapping --num-blocks spans, clients generating
// all along while servers are killed, hung and started again at random (src/testing/chaos/run.ts
// says how). Prints each action and failover as it happens, then a report: generations completed
// and failed, whether each greedy output equals the reference, tokens/s over time, failovers and
// the time they cost, DHT records seen against the servers online, sessions left open, and the
// memory of every process at start and end.
// Linux only (SIGSTOP, /proc); bounded in time; 127.0.0.1 only.
// With --hostile N, the last N servers compute wrong (src/testing/hostile-node.ts) and the report
// says which clients found each out, by their own spot checks or by published evidence.
// Run: npm run bench:chaos [-- --minutes 10 --nodes 14 --clients 4 --seed N --interval 5 --hostile 2 --json]

import '../src/util/polyfill.js'
import { benchArgs } from './bench-args.js'
import { killEveryNode } from '../src/testing/chaos/fleet.js'
import { formatReport } from '../src/testing/chaos/report.js'
import { runChaos } from '../src/testing/chaos/run.js'

const HELP = `npm run bench:chaos -- [options]
A random Llama-2-70B-shaped model (80 blocks, hidden 128) on bmrt-node servers that each take
ceil(3 x 80 / honest nodes) blocks with --num-blocks (refresh and rebalancing checks at bmrt-node's
defaults, 60 s), clients generating 32 tokens at a time (greedy, checked against a local reference;
5 s to open a session, 5 s per step), and a seeded schedule that kills, hangs or restarts a server
every interval without leaving a block unserved. Linux only; 127.0.0.1 only; progress to stderr,
the report to stdout.
  --minutes M    how long the chaos lasts (default 10)
  --nodes N      block servers (default 14)
  --clients N    clients generating at the same time (default 4)
  --seed N       seed of the chaos schedule (default: random; printed, so a run can be repeated)
  --interval S   seconds between chaos actions (default 5)
  --hostile N    the last N servers compute wrong, never killed or hung: the first adds noise and
                 claims ten times its speed, the second skips its layers, a third answers zeros
                 (default 0)
  --verify-rate R  the share of steps clients spot-check (default 1 with --hostile, else the SDK's 0.05)
  --json         print the report as JSON instead of text
Ctrl-C stops everything at once (every server is killed).`

const args = benchArgs('bench:chaos', {
  minutes: { type: 'string', default: '10' },
  nodes: { type: 'string', default: '14' },
  clients: { type: 'string', default: '4' },
  seed: { type: 'string' },
  interval: { type: 'string', default: '5' },
  hostile: { type: 'string', default: '0' },
  'verify-rate': { type: 'string' },
  json: { type: 'boolean', default: false }
}, HELP)
const number = (name: string, value: string, min: number): number => {
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || n < min) {
    console.error(`bench:chaos: --${name} must be a number >= ${min}, got '${value}'\n\n${HELP}`)
    process.exit(2)
  }
  return n
}
const minutes = number('minutes', args.minutes, 0)
const nodes = Math.floor(number('nodes', args.nodes, 2))
const clients = Math.floor(number('clients', args.clients, 1))
const seed = args.seed === undefined ? undefined : Math.floor(number('seed', args.seed, 0))
const intervalMs = 1000 * number('interval', args.interval, 0.1)
const hostile = Math.floor(number('hostile', args.hostile, 0))
if (hostile >= nodes) {
  console.error(`bench:chaos: --hostile ${hostile} leaves no honest server of ${nodes}\n\n${HELP}`)
  process.exit(2)
}
const verifyRate = args['verify-rate'] === undefined ? undefined : number('verify-rate', args['verify-rate'], 0)
if (verifyRate !== undefined && verifyRate > 1) {
  console.error(`bench:chaos: --verify-rate must be 0..1, got ${verifyRate}\n\n${HELP}`)
  process.exit(2)
}

// However the bench ends, no bmrt-node it started outlives it. (On Ctrl-C in a terminal the
// servers get SIGINT too; SIGKILL makes sure of the hung ones.)
process.on('exit', killEveryNode)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    console.error(`bench:chaos: ${signal}: stopping every server`)
    process.exit(130)
  })
}

try {
  const report = await runChaos({ nodes, clients, seed, durationMs: minutes * 60_000, intervalMs, hostile, verifyRate, log: line => console.error(line) })
  process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report))
} catch (err) {
  console.error(`bench:chaos: ${(err as Error).stack ?? String(err)}`)
  process.exitCode = 1
}
