// A peer for the NAT test's DCUtR check: listens on a public address in pub, dials the home server
// through the relay (its /p2p-circuit address), then waits up to 20 s for DCUtR to give it a direct
// connection. Prints one JSON line: the relayed address it dialed, and the direct one (or null).
// Usage: node dcutr-peer.js LISTEN_MULTIADDR RELAYED_MULTIADDR_OF_SERVER

import '../../src/util/polyfill.js'
import { multiaddr } from '@multiformats/multiaddr'
import { confirmListeningAddresses, createNode } from '../../src/p2p/node.js'

const [listen, target] = process.argv.slice(2)
const node = await createNode({ role: 'client', listen: [listen] })
confirmListeningAddresses(node) // it is public: let the server see an address to dial
const relayed = await node.dial(multiaddr(target))
const isDirect = (addr: string): boolean => !addr.includes('/p2p-circuit')
const direct = await new Promise<string | null>(resolve => {
  const check = (): void => {
    const found = node.getConnections(relayed.remotePeer).find(c => isDirect(c.remoteAddr.toString()))
    if (found !== undefined) { clearTimeout(timer); node.removeEventListener('connection:open', check); resolve(found.remoteAddr.toString()) }
  }
  const timer = setTimeout(() => resolve(null), 20_000)
  node.addEventListener('connection:open', check)
  check()
})
process.stdout.write(`${JSON.stringify({ relayed: relayed.remoteAddr.toString(), direct })}\n`)
await node.stop()
process.exit(0)
