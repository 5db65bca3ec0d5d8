// The libp2p node every bmrt process runs: TCP, Noise, Yamux, identify, ping and a Kademlia DHT
// under a swarm-specific protocol (not the public IPFS one). Loopback and private addresses are kept
// (kad-dht's default peerInfoMapper, removePrivateAddressesMapper, drops them, and its default
// client mode, until a public address is seen, never serves records).
// Every node can dial through circuit relays (v2); a relay node relays for others, and a server
// behind NAT reserves a slot on a relay and is reached through it (DCUtR then tries a direct path).
// A private swarm shares a pre-shared key: connections of peers without it fail before any protocol.

import '../util/polyfill.js'
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
import { preSharedKey } from '@libp2p/pnet'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'

/**
 * The part of libp2p's address manager bmrt uses. libp2p announces a public listening address only
 * once something verifies it (its AutoNAT needs 4 peers, which a young swarm lacks), and hands the
 * address manager to services only, so createNode exposes it as the `addresses` service.
 */
export interface AddressBook {
  getAddressesWithMetadata: () => Array<{ multiaddr: Multiaddr, verified: boolean, type: string }>
  confirmObservedAddr: (addr: Multiaddr, options?: { type?: 'transport' }) => void
}

export type BmrtNode = Libp2p<{ identify: Identify, ping: Ping, dht: KadDHT, addresses: AddressBook }>

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
  /** a private swarm's pre-shared key (the 95-byte /key/swarm/psk/1.0.0/ file); peers without it cannot connect */
  swarmKey?: Uint8Array
}

/**
 * Relayed circuits carry whole inference sessions here, not just a hole-punching handshake, so the
 * relay lifts libp2p's default per-circuit limits (2 minutes, 128 KiB), which a 4 MiB frame exceeds.
 */
const RELAY_RESERVATIONS = { applyDefaultLimit: false, maxReservations: 256 }

const keys = new WeakMap<BmrtNode, PrivateKey>()
const initialPeers = new WeakMap<BmrtNode, { addrs: string[], privateSwarm: boolean }>()

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
  const listen = [...(options.listen ?? [`/ip4/${host}/tcp/${options.port ?? 0}`]), ...(options.useRelay === true ? ['/p2p-circuit'] : [])]
  const node = await createLibp2p({
    privateKey,
    addresses: {
      listen,
      announce: options.announce ?? []
    },
    transports: [tcp(), circuitRelayTransport()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(options.swarmKey !== undefined ? { connectionProtector: preSharedKey({ psk: options.swarmKey }) } : {}),
    // Every local peer dials from 127.0.0.1; the default limit of 5 inbound connections per second
    // per host would refuse them.
    connectionManager: { allow: ['/ip4/127.0.0.0/ipcidr/8'] },
    connectionMonitor: options.connectionMonitor,
    peerDiscovery: (options.bootstrap?.length ?? 0) > 0 ? [bootstrap({ list: options.bootstrap!, timeout: 0 })] : [],
    services: {
      identify: identify(),
      ping: ping(),
      addresses: (components: { addressManager: AddressBook }) => components.addressManager,
      ...(options.relayServer === true ? { relay: circuitRelayServer({ reservations: RELAY_RESERVATIONS }), autoNAT: autoNAT() } : {}),
      // DCUtR replaces a relayed connection with a direct one when one side can dial the other. A
      // node that does not listen (a client) cannot be dialed, so it has nothing to gain.
      ...(listen.length > 0 ? { dcutr: dcutr() } : {}),
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
  initialPeers.set(node, { addrs: options.bootstrap ?? [], privateSwarm: options.swarmKey !== undefined })
  return node
}

/** The addresses the node tells peers (announced, else listening), public ones even before they are verified. */
export function ownAddresses (node: BmrtNode): Multiaddr[] {
  return node.services.addresses.getAddressesWithMetadata().filter(a => a.type === 'transport' || a.type === 'announce').map(a => a.multiaddr)
}

/**
 * Lets the node announce its public listening addresses: for a node that peers have dialed back
 * (or whose operator says it is public, as for a relay).
 */
export function confirmListeningAddresses (node: BmrtNode): void {
  for (const addr of node.services.addresses.getAddressesWithMetadata()) {
    if (addr.type === 'transport' && !addr.verified) node.services.addresses.confirmObservedAddr(addr.multiaddr, { type: 'transport' })
  }
}

/**
 * Connects to the initial peers (failing at once, with each peer's error, if none answers), waits
 * until the node has at least `peers` DHT peers, then looks itself up to fill its routing table.
 */
export async function joinSwarm (node: BmrtNode, peers = 1, timeoutMs = 30_000): Promise<void> {
  const routingTableSize = (): number => (node.services.dht as unknown as { routingTable: { size: number } }).routingTable.size
  const deadline = Date.now() + timeoutMs
  const initial = initialPeers.get(node) ?? { addrs: [], privateSwarm: false }
  const dials = await Promise.allSettled(initial.addrs.map(async addr => await node.dial(multiaddr(addr), { signal: AbortSignal.timeout(Math.min(timeoutMs, 10_000)) })))
  if (dials.length > 0 && dials.every(d => d.status === 'rejected')) {
    const reasons = dials.map((d, i) => `${initial.addrs[i]}: ${((d as PromiseRejectedResult).reason as Error).message}`)
    const hint = initial.privateSwarm ? 'every peer of a private swarm needs the same --swarm-key' : 'a private swarm needs its --swarm-key'
    throw new Error(`could not connect to any initial peer (check the addresses; ${hint}):\n  ${reasons.join('\n  ')}`)
  }
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
