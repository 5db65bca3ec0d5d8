// Can peers dial this machine? A server asks before it starts, as Petals does (its
// ReachabilityProtocol): a short-lived probe node, listening where the server will listen, joins
// the swarm and asks up to 16 peers to dial it back on a new direct connection. It is directly
// reachable if at least one dial-back arrived: a peer's "I dialed you back" counts only if the
// probe saw a connection from that peer come in, so liars can neither make it reachable nor,
// however many, outvote one dial-back that arrived. Otherwise, if peers answered, it is behind NAT
// or a firewall and must be reached through a relay; if nobody answers, it is taken as reachable.
//
// libp2p's own AutoNAT is not used: it needs 4 confirmations from distinct peers and skips private
// addresses, so it never decides in a small or LAN swarm (see PATCHES.md).

import type { Connection, Stream } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { ReachabilityRequest, ReachabilityResponse } from './reachability-messages.js'
import { confirmListeningAddresses, createNode, joinSwarm, ownAddresses, type BmrtNode, type NodeOptions } from './node.js'
import { FrameStream } from './frames.js'

export const REACHABILITY_PROTOCOL = '/bmrt/reachability/1.0.0'

/**
 * How many peers a server asks (Petals asks up to 5). More than Petals, because one real dial-back
 * is enough: the more peers are asked, the more identities an attacker needs to hide every honest
 * checker (issue 20, row 7).
 */
const PEERS_TO_ASK = 16
/**
 * How long after a peer claims a dial-back its connection may still be on its way in (it arrives
 * before the claim: the checker's dial ends only once the probe has accepted its connection).
 */
const DIAL_BACK_ARRIVAL_MS = 2000
/** How long one dial-back may take (the Petals health check allows 5 s). */
const DIAL_BACK_TIMEOUT_MS = 5000
/** A request names at most this many addresses (a machine has a handful). */
const MAX_ADDRS = 16
/** A request is at most MAX_ADDRS binary multiaddrs of a few dozen bytes; an answer, a line of text. */
const MAX_FRAME_BYTES = 16 << 10

export interface ReachabilityReport {
  /** true: at least one peer's dial-back arrived; false: none did (use a relay); null: no peer answered */
  reachable: boolean | null
  /**
   * peers asked, and what each said; a claimed dial-back whose connection never arrived is
   * reported as `reachable: false`
   */
  answers: Array<{ peerId: string, reachable: boolean | null, detail: string }>
}

/** The IP address in a multiaddr, if it has one. */
function ipOf (addr: Multiaddr): string | undefined {
  return addr.getComponents().find(c => c.name === 'ip4' || c.name === 'ip6')?.value
}

function isRelayed (addr: Multiaddr): boolean {
  return addr.getComponents().some(c => c.name === 'p2p-circuit')
}

/**
 * Answers others' checks: dials the asker back on a new connection, at the addresses it sent that
 * are on the IP its request came from (so nobody can use this node to dial a third party).
 */
/**
 * What a directly reachable node does (a server that peers dialed back or that nobody could check,
 * and a relay, which is meant for a public address): announces its listening addresses, and dials
 * others back when they ask.
 */
export async function serveDirectly (node: BmrtNode): Promise<void> {
  confirmListeningAddresses(node)
  await serveReachabilityChecks(node)
}

export async function serveReachabilityChecks (node: BmrtNode): Promise<void> {
  await node.handle(REACHABILITY_PROTOCOL, async (stream: Stream, connection: Connection) => {
    const frames = new FrameStream(stream, MAX_FRAME_BYTES)
    try {
      const request = await frames.read(ReachabilityRequest, { signal: AbortSignal.timeout(DIAL_BACK_TIMEOUT_MS) })
      if (request !== null) await frames.write(ReachabilityResponse, await dialBack(node, connection, request.addrs))
      await stream.close()
    } catch (err) {
      stream.abort(err as Error)
    }
  }, { maxInboundStreams: 2 })
}

async function dialBack (node: BmrtNode, connection: Connection, addrBytes: Uint8Array[]): Promise<ReachabilityResponse> {
  if (isRelayed(connection.remoteAddr)) return { reachable: false, detail: 'the check was asked over a relayed connection: ask directly' }
  const from = ipOf(connection.remoteAddr)
  const addrs: Multiaddr[] = []
  for (const bytes of addrBytes.slice(0, MAX_ADDRS)) {
    try {
      const addr = multiaddr(bytes)
      if (!isRelayed(addr) && ipOf(addr) === from && addr.getComponents().some(c => c.name === 'tcp')) addrs.push(addr.encapsulate(`/p2p/${connection.remotePeer.toString()}`))
    } catch { /* not a multiaddr: skipped like any other address we will not dial */ }
  }
  if (addrs.length === 0) return { reachable: false, detail: `none of the addresses sent is a TCP address on ${from ?? 'the IP'}, where the request came from (behind NAT?)` }
  try {
    const back = await node.dial(addrs, { force: true, signal: AbortSignal.timeout(DIAL_BACK_TIMEOUT_MS) })
    const detail = `dialed back ${back.remoteAddr.toString()}`
    await back.close()
    return { reachable: true, detail }
  } catch (err) {
    return { reachable: false, detail: `could not dial ${addrs.map(a => a.decapsulateCode(421).toString()).join(', ')}: ${(err as Error).message}` }
  }
}

/**
 * Asks peers of the swarm whether they can dial a node listening at `network.listen` (announcing
 * `network.announce`). Runs a temporary node with its own identity there, and stops it before
 * returning, so the caller can then listen on the same port.
 */
export async function checkReachability (network: Pick<NodeOptions, 'listen' | 'announce' | 'bootstrap' | 'dhtProtocol' | 'swarmKey'>): Promise<ReachabilityReport> {
  const probe = await createNode({ role: 'client', ...network })
  // Peers whose direct connection came in: the dial-backs that arrived.
  const arrived = new Set<string>()
  const waiting = new Map<string, Array<() => void>>()
  const onOpen = (event: CustomEvent<Connection>): void => {
    const connection = event.detail
    if (connection.direction !== 'inbound' || isRelayed(connection.remoteAddr)) return
    const peer = connection.remotePeer.toString()
    arrived.add(peer)
    for (const wake of waiting.get(peer) ?? []) wake()
    waiting.delete(peer)
  }
  probe.addEventListener('connection:open', onOpen)
  /** Whether a connection from `peer` came in, or comes in within DIAL_BACK_ARRIVAL_MS. */
  const arrival = async (peer: string): Promise<boolean> => {
    if (arrived.has(peer)) return true
    await new Promise<void>(resolve => {
      const timer = setTimeout(resolve, DIAL_BACK_ARRIVAL_MS)
      waiting.set(peer, [...(waiting.get(peer) ?? []), () => { clearTimeout(timer); resolve() }])
    })
    return arrived.has(peer)
  }
  try {
    await joinSwarm(probe)
    // Peers known to answer checks first, then peers not identified yet (they may answer too).
    const known = []
    const unidentified = []
    for (const peer of probe.getPeers()) {
      const protocols = (await probe.peerStore.get(peer).catch(() => null))?.protocols ?? []
      if (protocols.includes(REACHABILITY_PROTOCOL)) known.push(peer)
      else if (protocols.length === 0) unidentified.push(peer)
    }
    const asked = [...known, ...unidentified].slice(0, PEERS_TO_ASK)
    const addrs = ownAddresses(probe).map(a => a.bytes)
    const answers = await Promise.all(asked.map(async peer => {
      const peerId = peer.toString()
      let answer: ReachabilityResponse
      try {
        const frames = new FrameStream(await probe.dialProtocol(peer, REACHABILITY_PROTOCOL, { signal: AbortSignal.timeout(DIAL_BACK_TIMEOUT_MS) }), MAX_FRAME_BYTES)
        await frames.write(ReachabilityRequest, { addrs })
        const read = await frames.read(ReachabilityResponse, { signal: AbortSignal.timeout(2 * DIAL_BACK_TIMEOUT_MS) })
        if (read === null) throw new Error('closed the stream without an answer')
        answer = read
      } catch (err) {
        return { peerId, reachable: null, detail: `no answer: ${(err as Error).message}` }
      }
      if (answer.reachable && !(await arrival(peerId))) {
        return { peerId, reachable: false, detail: `said it dialed back (${answer.detail}), but no connection from it arrived` }
      }
      return { peerId, reachable: answer.reachable, detail: answer.detail }
    }))
    const answered = answers.filter(a => a.reachable !== null)
    return { reachable: answered.some(a => a.reachable === true) ? true : answered.length === 0 ? null : false, answers }
  } finally {
    probe.removeEventListener('connection:open', onOpen)
    await probe.stop()
  }
}

/** One line for the log: the verdict and how many peers said what. */
export function describeReachability (report: ReachabilityReport): string {
  const answered = report.answers.filter(a => a.reachable !== null)
  const confirmed = answered.filter(a => a.reachable === true).length
  if (report.reachable === null) return `reachability: no peer could check (${report.answers.length} asked); assuming this machine is reachable`
  const tally = `${confirmed} of ${answered.length} peers dialed back`
  if (report.reachable) return `reachability: directly reachable (${tally})`
  const why = answered.find(a => a.reachable === false)?.detail ?? ''
  return `reachability: not reachable directly (${tally}; ${why}): using a relay`
}
