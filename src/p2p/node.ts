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
import { kadDHT, passthroughMapper, type KadDHT } from '@libp2p/kad-dht'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { autoNAT } from '@libp2p/autonat'
import { dcutr } from '@libp2p/dcutr'
import { preSharedKey } from '@libp2p/pnet'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { rememberPrivateKey } from './identity.js'
import { NewestRecordDatastore, registryDhtOptions, type RecordStats } from './registry.js'

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

/**
 * What a node is for; each role fixes how the node takes part in the swarm.
 * - `server` (a block server): listens, serves DHT records for others, unless `useRelay` (behind
 *   NAT nobody can dial in to ask it, as in Petals): then a DHT client reached through a relay.
 * - `relay` (bmrt-node --relay-only, Petals' run_dht): listens, serves DHT records, relays
 *   connections for peers behind NAT and answers their AutoNAT checks.
 * - `client`: a DHT client that listens nowhere unless `listen` says so (clients never need to be
 *   dialable), and pings its connections every 2 s (CLIENT_CONNECTION_MONITOR).
 */
export type NodeRole = 'client' | 'server' | 'relay'

/** The span records' lifetime and refresh, and where the record validator counts what it refuses. */
export interface RecordOptions {
  /**
   * counts of records the validator refused, by reason (a server reports them in its status)
   * @default a count nobody reads
   */
  stats?: RecordStats
  /**
   * how long a record stays valid; provider records expire with it
   * @default DEFAULT_RECORD_TTL_MS (180 s)
   */
  ttlMs?: number
  /**
   * how often the node's records are refreshed (its provider records are re-provided before
   * ttlMs - refreshMs has passed)
   * @default DEFAULT_UPDATE_PERIOD_MS (60 s)
   */
  refreshMs?: number
}

export interface NodeOptions {
  /** what the node is for (see NodeRole) */
  role: NodeRole
  /**
   * the node's identity
   * @default a fresh Ed25519 key
   */
  privateKey?: PrivateKey
  /**
   * address to listen on, unless `listen` is given (not for a client)
   * @default '127.0.0.1'
   */
  host?: string
  /**
   * TCP port, unless `listen` is given (not for a client)
   * @default 0 (any free port)
   */
  port?: number
  /**
   * multiaddrs to listen on (overrides host and port)
   * @default a server or relay: host and port; a client: none
   */
  listen?: string[]
  /**
   * addresses to tell other peers instead of the listening ones (e.g. behind port forwarding)
   * @default []
   */
  announce?: string[]
  /**
   * multiaddrs of peers to join through
   * @default [] (a new swarm)
   */
  bootstrap?: string[]
  /**
   * the DHT protocol id; every node of a swarm must use the same
   * @default DEFAULT_DHT_PROTOCOL ('/bmrt/kad/1.0.0')
   */
  dhtProtocol?: string
  /**
   * a server only: reachable only through a relay, so reserve a slot on one and announce its
   * /p2p-circuit address (and be a DHT client)
   * @default false
   */
  useRelay?: boolean
  /** a private swarm's pre-shared key (the 95-byte /key/swarm/psk/1.0.0/ file); peers without it cannot connect */
  swarmKey?: Uint8Array
  /**
   * the span records' settings, which every node of a swarm shares (see registryDhtOptions)
   * @default { stats: a count nobody reads, ttlMs: DEFAULT_RECORD_TTL_MS, refreshMs: DEFAULT_UPDATE_PERIOD_MS }
   */
  records?: RecordOptions
}

/** The swarm's DHT protocol id (not the public IPFS one). */
export const DEFAULT_DHT_PROTOCOL = '/bmrt/kad/1.0.0'

/**
 * A client pings its connected servers every 2 s (libp2p's default: every 10 s): a hung server
 * (alive socket, no answers) loses its connection within seconds, which ends its sessions and
 * starts failover.
 */
export const CLIENT_CONNECTION_MONITOR: Libp2pInit['connectionMonitor'] = { pingInterval: 2000, pingTimeout: { minTimeout: 1000, maxTimeout: 5000 } }

/**
 * Relayed circuits carry whole inference sessions here, not just a hole-punching handshake, so the
 * relay lifts libp2p's default per-circuit limits (2 minutes, 128 KiB), which a 4 MiB frame exceeds.
 */
const RELAY_RESERVATIONS = { applyDefaultLimit: false, maxReservations: 256 }

const initialPeers = new WeakMap<BmrtNode, { addrs: string[], privateSwarm: boolean }>()

/** A libp2p node for `options.role` (see NodeRole), with the swarm's DHT record settings. */
export async function createNode (options: NodeOptions): Promise<BmrtNode> {
  const { role } = options
  if (options.useRelay === true && role !== 'server') throw new Error(`a ${role} node does not use a relay: only a server behind NAT does`)
  const privateKey = options.privateKey ?? await generateKeyPair('Ed25519')
  const useRelay = options.useRelay === true
  const dhtServer = role === 'relay' || (role === 'server' && !useRelay)
  const defaultListen = role === 'client' ? [] : [`/ip4/${options.host ?? '127.0.0.1'}/tcp/${options.port ?? 0}`]
  const listen = [...(options.listen ?? defaultListen), ...(useRelay ? ['/p2p-circuit'] : [])]
  const node = await createLibp2p({
    privateKey,
    datastore: new NewestRecordDatastore(), // kad-dht's records: a newer one is never replaced by an older one
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
    connectionMonitor: role === 'client' ? CLIENT_CONNECTION_MONITOR : undefined,
    peerDiscovery: (options.bootstrap?.length ?? 0) > 0 ? [bootstrap({ list: options.bootstrap!, timeout: 0 })] : [],
    services: {
      identify: identify(),
      ping: ping(),
      addresses: (components: { addressManager: AddressBook }) => components.addressManager,
      ...(role === 'relay' ? { relay: circuitRelayServer({ reservations: RELAY_RESERVATIONS }), autoNAT: autoNAT() } : {}),
      // DCUtR replaces a relayed connection with a direct one when one side can dial the other. A
      // node that does not listen (a client) cannot be dialed, so it has nothing to gain.
      ...(listen.length > 0 ? { dcutr: dcutr() } : {}),
      dht: kadDHT({
        protocol: options.dhtProtocol ?? DEFAULT_DHT_PROTOCOL,
        clientMode: !dhtServer,
        peerInfoMapper: passthroughMapper,
        // A lone first server must answer queries with an empty routing table; clients must not
        // (they would get empty answers before they know any server).
        allowQueryWithZeroPeers: dhtServer,
        initialQuerySelfInterval: 200,
        ...registryDhtOptions(options.records?.stats ?? { rejected: {} }, options.records?.ttlMs, options.records?.refreshMs)
      })
    }
  })
  rememberPrivateKey(node, privateKey)
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
    const hint = initial.privateSwarm ? 'every peer of a private swarm needs the same swarm key' : 'a private swarm needs its swarm key'
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
