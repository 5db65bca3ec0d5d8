// The libp2p node every bmrt process runs: TCP, Noise, Yamux, identify, ping and a Kademlia DHT
// under a swarm-specific protocol (not the public IPFS one). Loopback and private addresses are kept
// (see ../shared reference: the stock DHT drops them, and its client mode never serves records).
// Every node can dial through circuit relays (v2); a relay node relays for others, and a server
// behind NAT reserves a slot on a relay and is reached through it (DCUtR then tries a direct path).

import '../polyfill.js'
import { createLibp2p, type Libp2p, type Libp2pInit } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify, type Identify } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { bootstrap } from '@libp2p/bootstrap'
import { kadDHT, passthroughMapper, type KadDHT, type KadDHTInit } from '@libp2p/kad-dht'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { autoNAT } from '@libp2p/autonat'
import { dcutr } from '@libp2p/dcutr'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'

export type BmrtNode = Libp2p<{ identify: Identify, ping: Ping, dht: KadDHT }>

export interface NodeOptions {
  /** the node's identity (default: a fresh Ed25519 key) */
  privateKey?: PrivateKey
  /** address to listen on (default 127.0.0.1), unless `listen` is given */
  host?: string
  /** TCP port (default 0: any free port), unless `listen` is given */
  port?: number
  /** multiaddrs to listen on (overrides host and port) */
  listen?: string[]
  /** addresses to tell other peers instead of the listening ones (e.g. behind port forwarding) */
  announce?: string[]
  /** multiaddrs of peers to join through (empty: a new swarm) */
  bootstrap?: string[]
  /** the DHT protocol id; every node of a swarm must use the same (default /bmrt/kad/1.0.0) */
  dhtProtocol?: string
  /** serve DHT records for others (default true); clients behind NAT set false */
  dhtServer?: boolean
  /** extra kad-dht settings (validators, selectors, record expiry) */
  dht?: Partial<KadDHTInit>
  /** how connections are pinged to find dead peers (libp2p's default: every 10 s) */
  connectionMonitor?: Libp2pInit['connectionMonitor']
  /** relay connections for peers behind NAT, and answer their AutoNAT checks (a public node) */
  relayServer?: boolean
  /** reachable only through a relay: reserve a slot on one and announce its /p2p-circuit address */
  useRelay?: boolean
}

/**
 * Relayed circuits carry whole inference sessions here, not just a hole-punching handshake, so the
 * relay lifts libp2p's default per-circuit limits (2 minutes, 128 KiB), which a 4 MiB frame exceeds.
 */
const RELAY_RESERVATIONS = { applyDefaultLimit: false, maxReservations: 256 }

const keys = new WeakMap<BmrtNode, PrivateKey>()

/** The node's private key, for signing records (libp2p does not expose it). */
export function privateKeyOf (node: BmrtNode): PrivateKey {
  const key = keys.get(node)
  if (key === undefined) throw new Error('node was not made by createNode')
  return key
}

export async function createNode (options: NodeOptions = {}): Promise<BmrtNode> {
  const privateKey = options.privateKey ?? await generateKeyPair('Ed25519')
  const host = options.host ?? '127.0.0.1'
  const server = options.dhtServer ?? true
  const node = await createLibp2p({
    privateKey,
    addresses: {
      listen: [...(options.listen ?? [`/ip4/${host}/tcp/${options.port ?? 0}`]), ...(options.useRelay === true ? ['/p2p-circuit'] : [])],
      announce: options.announce ?? []
    },
    transports: [tcp(), circuitRelayTransport()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // Every local peer dials from 127.0.0.1; the default limit of 5 inbound connections per second
    // per host would refuse them.
    connectionManager: { allow: ['/ip4/127.0.0.0/ipcidr/8'] },
    connectionMonitor: options.connectionMonitor,
    peerDiscovery: (options.bootstrap?.length ?? 0) > 0 ? [bootstrap({ list: options.bootstrap!, timeout: 0 })] : [],
    services: {
      identify: identify(),
      ping: ping(),
      ...(options.relayServer === true ? { relay: circuitRelayServer({ reservations: RELAY_RESERVATIONS }), autoNAT: autoNAT() } : {}),
      ...(options.useRelay === true ? { dcutr: dcutr() } : {}),
      dht: kadDHT({
        protocol: options.dhtProtocol ?? '/bmrt/kad/1.0.0',
        clientMode: !server,
        peerInfoMapper: passthroughMapper,
        // A lone first server must answer queries with an empty routing table; clients must not
        // (they would get empty answers before they know any server).
        allowQueryWithZeroPeers: server,
        initialQuerySelfInterval: 200,
        ...options.dht
      })
    }
  })
  keys.set(node, privateKey)
  return node
}

/** Resolves once the node has at least `peers` DHT peers, then looks itself up to fill its table. */
export async function joinSwarm (node: BmrtNode, peers = 1, timeoutMs = 30_000): Promise<void> {
  const routingTableSize = (): number => (node.services.dht as unknown as { routingTable: { size: number } }).routingTable.size
  const deadline = Date.now() + timeoutMs
  // Re-check whenever a peer finishes identify (that is when kad-dht adds it), and every 100 ms.
  while (routingTableSize() < peers) {
    if (Date.now() > deadline) throw new Error(`found no DHT peers within ${timeoutMs / 1000} s: check the initial peers' addresses`)
    await new Promise<void>(resolve => {
      const done = (): void => { clearTimeout(timer); node.removeEventListener('peer:identify', done); resolve() }
      const timer = setTimeout(done, 100)
      node.addEventListener('peer:identify', done)
    })
  }
  for await (const _ of node.services.dht.getClosestPeers(node.peerId.toMultihash().bytes)) { /* fills the routing table */ }
}
