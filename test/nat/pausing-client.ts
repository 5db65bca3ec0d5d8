// A client for the NAT test: generates 50 tokens of EXPECTED.md's first prompt through a swarm,
// stopping after PAUSE_AFTER tokens until a line arrives on stdin (the test cuts a server's link
// meanwhile). Prints "PAUSED" at the pause, then one JSON line: the token ids, every route chosen,
// and the addresses of its connections to each peer (relayed ones contain /p2p-circuit).
// Usage: node pausing-client.js INITIAL_PEER PAUSE_AFTER

import '../../src/util/polyfill.js'
import { createInterface } from 'node:readline'
import { DistributedModel } from '../../src/petals/client/distributed-model.js'
import type { RouteHop } from '../../src/petals/client/routing.js'
import { EXPECTED } from '../expected.js'
import { BUNDLED_MODEL } from '../helpers.js'

const [initialPeer, pauseAfter] = process.argv.slice(2)
const routes: Array<{ reason: string, hops: RouteHop[] }> = []
const model = await DistributedModel.load(BUNDLED_MODEL, { initialPeers: [initialPeer], onRoute: (hops, reason) => routes.push({ reason, hops: [...hops] }) })
const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const ids: number[] = []
const connections: Record<string, string[]> = {}
for await (const token of model.generate(EXPECTED[0].promptIds, { maxNewTokens: EXPECTED[0].ids.length })) {
  if (token.id !== null) ids.push(token.id)
  if (ids.length === Number(pauseAfter)) {
    for (const c of model.node.getConnections()) (connections[c.remotePeer.toString()] ??= []).push(c.remoteAddr.toString())
    process.stdout.write('PAUSED\n')
    await stdin.next()
  }
}
process.stdout.write(`${JSON.stringify({ ids, routes, connections })}\n`)
await model.close()
process.exit(0)
