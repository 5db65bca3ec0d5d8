// Per-peer limits of a block server, so that one peer cannot take it over: how many sessions it may
// hold open at once, and how many bytes it may have sent that the server has not processed yet
// (frames buffered on its streams, waiting in the task queue or being computed). Petals has neither.
// A stream counts until it is gone, so a session's slot is free once both sides closed it (the
// handler resets a stream whose peer leaves it open a few seconds after the session ended).
//
// A well-behaved client sends a step and waits for its answer, so each of its sessions has at most
// one frame (4 MiB at most) waiting; the byte limit only bites a peer that sends ahead of the
// answers on many sessions at once, which buys it nothing, since the server computes one task at
// a time. Every peer has its own budget, so the refusals never touch other peers' sessions.

import type { FrameStream } from '../../p2p/frames.js'
import { ErrorCode, ProtocolError } from '../protocol/wire.js'

/** Sessions one peer may hold open at once (a gateway is one peer for all its users). */
export const DEFAULT_MAX_SESSIONS_PER_PEER = 64
/** Bytes one peer may have sent that the server has not processed yet: 64 MiB. */
export const DEFAULT_MAX_PENDING_BYTES_PER_PEER = 64 << 20

export interface PeerLimitOptions {
  /**
   * sessions (inference and forward streams) one peer may hold open at once
   * @default DEFAULT_MAX_SESSIONS_PER_PEER (64)
   */
  maxSessions?: number
  /**
   * bytes one peer may have sent that the server has not processed yet
   * @default DEFAULT_MAX_PENDING_BYTES_PER_PEER (64 MiB)
   */
  maxPendingBytes?: number
}

interface PeerUsage {
  sessions: number
  pendingBytes: number
  streams: number
}

export class PeerLimits {
  readonly maxSessions: number
  readonly maxPendingBytes: number
  /** requests refused so far, by the limit they hit */
  readonly refused = { sessions: 0, pendingBytes: 0 }
  private readonly peers = new Map<string, PeerUsage>()

  constructor (options: PeerLimitOptions = {}) {
    this.maxSessions = options.maxSessions ?? DEFAULT_MAX_SESSIONS_PER_PEER
    this.maxPendingBytes = options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES_PER_PEER
  }

  /** What `peer` holds now (zeros for a peer with no streams). */
  usage (peer: string): { sessions: number, pendingBytes: number } {
    const usage = this.peers.get(peer)
    return { sessions: usage?.sessions ?? 0, pendingBytes: usage?.pendingBytes ?? 0 }
  }

  /**
   * Counts one stream of `peer` against its limits until the stream is gone: what the peer sent on
   * it that the server has not answered yet (buffered, or a frame being computed), from the moment
   * it arrives, and its session once started. `onOver` hears when an arrival puts the peer over
   * its byte limit.
   */
  track (peer: string, frames: FrameStream, onOver: (error: ProtocolError) => void): PeerStream {
    let usage = this.peers.get(peer)
    if (usage === undefined) {
      usage = { sessions: 0, pendingBytes: 0, streams: 0 }
      this.peers.set(peer, usage)
    }
    usage.streams++
    const entry = usage
    return new PeerStream(this, entry, frames, onOver, () => { if (entry.streams === 0) this.peers.delete(peer) })
  }
}

/** One stream's share of its peer's limits. */
export class PeerStream {
  private session = false
  private pending = 0
  private answeredBytes = 0
  private counting = true
  private released = false

  constructor (private readonly limits: PeerLimits, private readonly usage: PeerUsage, private readonly frames: FrameStream,
    onOver: (error: ProtocolError) => void, private readonly onRelease: () => void) {
    frames.stream.addEventListener('message', () => {
      if (!this.counting) return
      try {
        this.setPending(frames.received - this.answeredBytes)
      } catch (err) {
        onOver(err as ProtocolError)
      }
    })
    frames.stream.addEventListener('close', () => this.release(), { once: true })
  }

  /** Takes one of the peer's session slots; throws PEER_LIMIT when it holds all of them. */
  startSession (): void {
    if (this.session || this.released) return
    if (this.usage.sessions >= this.limits.maxSessions) {
      this.limits.refused.sessions++
      throw new ProtocolError(ErrorCode.PEER_LIMIT, `your peer already holds ${this.usage.sessions} sessions on this server, the most one peer may: ` +
        'close one first, or use another server')
    }
    this.session = true
    this.usage.sessions++
  }

  /** Every frame read so far is answered: its bytes no longer count. */
  answered (): void {
    this.answeredBytes = this.frames.consumed
    this.setPending(this.frames.received - this.answeredBytes)
  }

  /** The session is over and whatever else arrives is dropped: no bytes count any more (its slot does, until the stream is gone). */
  stopCounting (): void {
    this.counting = false
    this.setPending(0)
  }

  /**
   * Sets this stream's unanswered bytes. Throws PEER_LIMIT when they grew and put the peer over
   * its limit (they still count until answered or dropped: they are in memory either way).
   */
  private setPending (bytes: number): void {
    if (this.released) return
    const grew = bytes > this.pending
    this.usage.pendingBytes += bytes - this.pending
    this.pending = bytes
    if (grew && this.usage.pendingBytes > this.limits.maxPendingBytes) {
      this.limits.refused.pendingBytes++
      throw new ProtocolError(ErrorCode.PEER_LIMIT, `your peer has sent ${mib(this.usage.pendingBytes)} that this server has not processed yet, ` +
        `more than the ${mib(this.limits.maxPendingBytes)} one peer may: wait for each step's answer before sending the next`)
    }
  }

  /** The stream is gone: its session slot and bytes go back to the peer. */
  private release (): void {
    if (this.released) return
    this.released = true
    this.usage.pendingBytes -= this.pending
    if (this.session) this.usage.sessions--
    this.usage.streams--
    this.onRelease()
  }
}

function mib (bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(2)} MiB`
}
