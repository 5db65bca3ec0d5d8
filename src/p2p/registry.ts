// Who serves which blocks, in the DHT. Two kinds of record (why, with the measurements:
// PATCHES.md, "Swarm registry"): a provider record per (model, group of BLOCKS_PER_KEY blocks)
// says "this peer serves some of these blocks", and one signed, expiring span record per (model,
// server) says which span, in which state, with what details. The span record is authoritative; a
// stale provider record after a span change does no harm. A client reads a provider's span record
// from the provider itself (/bmrt/record) and falls back to the DHT only where it asks for that.

import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { peerIdFromString } from '@libp2p/peer-id'
import { UnsupportedProtocolError, type RoutingOptions, type Stream } from '@libp2p/interface'
import type { KadDHTInit, SelectFn, ValidateFn } from '@libp2p/kad-dht'
import { Queue } from '@libp2p/utils'
import { Libp2pRecord } from '@libp2p/record'
import { MemoryDatastore } from 'datastore-core/memory'
import type { Key } from 'interface-datastore'
import { FrameStream } from './frames.js'
import { privateKeyOf } from './identity.js'
import type { BmrtNode } from './node.js'
import { RecordRequest, RecordResponse } from './registry-messages.js'

export type SpanState = 'joining' | 'online' | 'offline'

/** One server's announcement for one model. */
export interface SpanRecord {
  model: string
  peerId: string
  /** blocks [start, end) */
  start: number
  end: number
  state: SpanState
  /** when it was signed (ms since the epoch); the newest record of a server wins */
  ts: number
  /** after this (ms since the epoch) the record is invalid everywhere */
  expiresAt: number
  /** server details the registry does not interpret (throughput, dtype, cache left, …) */
  info: Record<string, unknown>
}

/** Counts of records the validator refused, by reason (a node serves these in its status). */
export interface RecordStats {
  rejected: Record<string, number>
}

/** How often a server refreshes its records, and a client its view of the swarm (Petals' update_period). */
export const DEFAULT_UPDATE_PERIOD_MS = 60_000
/**
 * A record outlives this many refreshes (Petals' expiration = 3 × update_period), so one refresh
 * lost or late does not make a live server vanish.
 */
export const TTL_UPDATE_PERIODS = 3
/** How long a record stays valid: TTL_UPDATE_PERIODS × DEFAULT_UPDATE_PERIOD_MS = 180 s. */
export const DEFAULT_RECORD_TTL_MS = TTL_UPDATE_PERIODS * DEFAULT_UPDATE_PERIOD_MS

const NAMESPACE = 'bmrt'
const SIGNATURE_BYTES = 64
const MAX_RECORD_BYTES = 16 * 1024
const encoder = new TextEncoder()
const decoder = new TextDecoder()

export function recordKey (model: string, peerId: string): Uint8Array {
  return encoder.encode(`/${NAMESPACE}/${encodeURIComponent(model)}/${peerId}`)
}

/** The models one server serves, for listing what a swarm runs. Its key: /bmrt/_models/<peer id>. */
export interface ModelIndexRecord {
  peerId: string
  models: Array<{ name: string, blocks: number }>
  ts: number
  expiresAt: number
}

const INDEX_SEGMENT = '_models'

export function indexKey (peerId: string): Uint8Array {
  return encoder.encode(`/${NAMESPACE}/${INDEX_SEGMENT}/${peerId}`)
}

async function indexCid (): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(encoder.encode('bmrt/models')))
}

/**
 * Blocks that share one provider key. Petals keys every block, but in kad-dht each key costs a
 * whole query: a server re-provides each of its keys every refresh (FIND_NODE to the closest peers,
 * then ADD_PROVIDER to each of them), and a lookup of the whole model runs one GET_PROVIDERS query
 * per key. With a key per block, 14 idle servers of 18 blocks of an 80-block model took 119 s of
 * CPU a minute between them (a 2-core machine full) and a client's findSpans took 36-53 s; see
 * PATCHES.md for the figures with groups. A key may name servers that do not serve the block
 * asked for: their span records, read anyway, tell.
 */
export const BLOCKS_PER_KEY = 16

/** The provider key of the group of blocks that holds `block`. */
export async function blockGroupCid (model: string, block: number): Promise<CID> {
  const first = block - block % BLOCKS_PER_KEY
  return CID.createV1(raw.code, await sha256.digest(encoder.encode(`bmrt/${model}/blocks/${first}-${first + BLOCKS_PER_KEY}`)))
}

/** The first block of each group that [start, end) touches. */
function groupsOf (start: number, end: number): number[] {
  const groups: number[] = []
  for (let first = start - start % BLOCKS_PER_KEY; first < end; first += BLOCKS_PER_KEY) groups.push(first)
  return groups
}

/** Checks key shape, size and signature; returns the key's parts and the parsed JSON payload. */
async function verifySigned (key: Uint8Array, value: Uint8Array): Promise<{ parts: string[], payload: any }> {
  const parts = decoder.decode(key).split('/')
  if (parts.length !== 4 || parts[1] !== NAMESPACE) throw new RecordError('malformed-key', 'record key is not /bmrt/<model>/<peer id>')
  if (value.length <= SIGNATURE_BYTES) throw new RecordError('unsigned', `record of ${value.length} bytes has no room for a signature`)
  if (value.length > MAX_RECORD_BYTES) throw new RecordError('oversized', `record of ${value.length} bytes exceeds ${MAX_RECORD_BYTES}`)
  let publicKey
  try {
    publicKey = peerIdFromString(parts[3]).publicKey
  } catch {
    throw new RecordError('malformed-key', 'record key names no valid peer id')
  }
  if (publicKey == null) throw new RecordError('malformed-key', 'peer id does not embed its public key (bmrt uses Ed25519 ids)')
  const payload = value.subarray(0, value.length - SIGNATURE_BYTES)
  const signature = value.subarray(value.length - SIGNATURE_BYTES)
  if (!(await publicKey.verify(concat(key, payload), signature))) throw new RecordError('bad-signature', 'record is not signed by the peer it names')
  try {
    return { parts, payload: JSON.parse(decoder.decode(payload)) }
  } catch {
    throw new RecordError('malformed', 'record payload is not JSON')
  }
}

/** Parses and checks a span record under `key`; throws with the reason it is refused. */
export async function verifyRecord (key: Uint8Array, value: Uint8Array, now = Date.now()): Promise<SpanRecord> {
  const { parts, payload } = await verifySigned(key, value)
  const record = payload as SpanRecord
  const ok = record !== null && typeof record === 'object' &&
    record.model === decodeURIComponent(parts[2]) && record.peerId === parts[3] &&
    Number.isSafeInteger(record.start) && Number.isSafeInteger(record.end) && record.start >= 0 && record.start < record.end &&
    ['joining', 'online', 'offline'].includes(record.state) &&
    Number.isFinite(record.ts) && Number.isFinite(record.expiresAt) &&
    record.info !== null && typeof record.info === 'object' && !Array.isArray(record.info)
  if (!ok) throw new RecordError('malformed', 'record fields are missing, of the wrong type, or do not match its key')
  if (record.expiresAt <= now) throw new RecordError('expired', 'record expired')
  return record
}

/** Parses and checks a model index record under `key`. */
export async function verifyIndexRecord (key: Uint8Array, value: Uint8Array, now = Date.now()): Promise<ModelIndexRecord> {
  const { parts, payload } = await verifySigned(key, value)
  const record = payload as ModelIndexRecord
  const ok = parts[2] === INDEX_SEGMENT && record !== null && typeof record === 'object' && record.peerId === parts[3] &&
    Array.isArray(record.models) && record.models.every(m => typeof m?.name === 'string' && Number.isSafeInteger(m.blocks) && m.blocks > 0) &&
    Number.isFinite(record.ts) && Number.isFinite(record.expiresAt)
  if (!ok) throw new RecordError('malformed', 'index record fields are missing, of the wrong type, or do not match its key')
  if (record.expiresAt <= now) throw new RecordError('expired', 'record expired')
  return record
}

class RecordError extends Error {
  constructor (readonly reason: string, message: string) {
    super(message)
  }
}

function concat (a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}

/** The signed payload of a record (span or index), or null if it is not JSON. */
function payloadOf (value: Uint8Array): { ts?: unknown, expiresAt?: unknown } | null {
  try {
    return JSON.parse(decoder.decode(value.subarray(0, value.length - SIGNATURE_BYTES)))
  } catch {
    return null
  }
}

/** kad-dht's selector for bmrt records: the index of the newest one (largest `ts`; the first of equals). */
const selectNewest: SelectFn = (_key, records) => {
  let best = 0
  let bestTs = -Infinity
  records.forEach((value, i) => {
    const ts = payloadOf(value)?.ts
    if (typeof ts === 'number' && ts > bestTs) { best = i; bestTs = ts }
  })
  return best
}

/** Where kad-dht keeps the records it stores (its default datastorePrefix '/dht', then '/record'). */
const DHT_RECORD_PREFIX = '/dht/record/'

/**
 * The datastore of a bmrt node: kad-dht's own, except that a stored bmrt record is never replaced
 * by an older one of the same key (one selectNewest does not pick) while the stored one is still
 * valid. js kad-dht's PUT_VALUE handler overwrites whatever it holds with any record that passes
 * the validator, and runs the selector only on reads; so anyone could replay a server's older
 * signed record after the server moved, and a storing peer served that until it expired (180 s),
 * the server's blocks looking unserved once the server itself, which held the newer copy, was gone.
 * go-libp2p-kad-dht compares on PUT and keeps the better record, as this does (PATCHES.md).
 */
export class NewestRecordDatastore extends MemoryDatastore {
  override async put (key: Key, value: Uint8Array, options?: Parameters<MemoryDatastore['put']>[2]): Promise<Key> {
    if (key.toString().startsWith(DHT_RECORD_PREFIX) && await this.keepsStored(key, value)) return key
    return await super.put(key, value, options)
  }

  /** Whether the record stored under `key` is a valid bmrt record newer than `value`. */
  private async keepsStored (key: Key, value: Uint8Array): Promise<boolean> {
    let incoming: Libp2pRecord, stored: Libp2pRecord
    try {
      if (!(await this.has(key))) return false
      incoming = Libp2pRecord.deserialize(value)
      stored = Libp2pRecord.deserialize(await this.get(key))
    } catch {
      return false // not a record kad-dht wrote: not ours to judge
    }
    if (!decoder.decode(incoming.key).startsWith(`/${NAMESPACE}/`)) return false
    const expiresAt = payloadOf(stored.value)?.expiresAt
    if (typeof expiresAt !== 'number' || expiresAt <= Date.now()) return false
    return selectNewest(incoming.key, [incoming.value, stored.value]) === 1
  }
}

/**
 * kad-dht settings every node of a swarm must share: the span-record validator (counting what it
 * refuses in `stats`) and newest-wins selector, and provider-record expiry. createNode applies them
 * (NodeOptions.records).
 */
export function registryDhtOptions (stats: RecordStats, ttlMs = DEFAULT_RECORD_TTL_MS, refreshMs = DEFAULT_UPDATE_PERIOD_MS): Partial<KadDHTInit> {
  const validate: ValidateFn = async (key, value) => {
    try {
      if (decoder.decode(key).startsWith(`/${NAMESPACE}/${INDEX_SEGMENT}/`)) await verifyIndexRecord(key, value)
      else await verifyRecord(key, value)
    } catch (err) {
      const reason = err instanceof RecordError ? err.reason : 'malformed'
      stats.rejected[reason] = (stats.rejected[reason] ?? 0) + 1
      throw err
    }
  }
  return {
    validators: { [NAMESPACE]: validate },
    selectors: { [NAMESPACE]: selectNewest },
    reprovide: { validity: ttlMs, interval: Math.min(15_000, ttlMs / 4), threshold: ttlMs - refreshMs },
    // How long one DHT request may take. kad-dht's adaptive timeout starts at 5 s and doubles after
    // failures up to 60 s, and a query ends only when its last request does: with servers hung now
    // and then (bench/chaos), lookups took 19 s at the median. Capped at 10 s here; the 5 s floor
    // stays (Petals' DHT waits 3 s, but a 3-5 s range measured slower lookups in bench/chaos).
    networkDialTimeout: { maxTimeout: 10_000 }
  }
}

export interface AnnounceOptions {
  /**
   * how long the record stays valid
   * @default DEFAULT_RECORD_TTL_MS (180 s)
   */
  ttlMs?: number
}

/**
 * DHT queries (lookups and provides) a node runs at once. Each opens a stream to each peer it
 * asks, and kad-dht lets a peer hold at most 32 inbound streams per connection
 * (DEFAULT_MAX_INBOUND_STREAMS), resetting the rest: a burst of more queries (one per block of an
 * 80-block model) got empty answers instead of waiting. 16 leaves room for the node's own
 * background queries.
 */
export const MAX_CONCURRENT_LOOKUPS = 16
const lookupQueues = new WeakMap<BmrtNode, Queue<unknown>>()

/** Runs `lookup` when fewer than MAX_CONCURRENT_LOOKUPS of `node`'s DHT queries are running. */
async function limited<T> (node: BmrtNode, lookup: () => Promise<T>): Promise<T> {
  let queue = lookupQueues.get(node)
  if (queue === undefined) lookupQueues.set(node, queue = new Queue<unknown>({ concurrency: MAX_CONCURRENT_LOOKUPS }))
  return await queue.add(lookup) as T
}

/**
 * A server's span record, asked of the server itself: the request names a model, the answer is the
 * signed record the server last stored in the DHT for it (the same bytes), or none. The record is
 * checked as one from the DHT is. A DHT lookup of one advertiser's record is a query over the swarm;
 * 40 identities that advertised a block group and published no record made each client lookup cost
 * 40 of them (4.5-8.3 s, issue 20 row 4). Asking costs one round trip per advertiser, all at once.
 */
export const RECORD_PROTOCOL = '/bmrt/record/1.0.0'
/** How long asking an advertiser for its record may take, the dial included. */
export const RECORD_ASK_TIMEOUT_MS = 3000
/** A request names a model, an answer holds one record: nothing larger is read. */
export const MAX_RECORD_FRAME_BYTES = MAX_RECORD_BYTES + 1024
/**
 * Advertisers one call asks at once. Each ask is a stream to a different peer, so kad-dht's limit
 * of streams per connection, which holds DHT lookups to RECORD_LOOKUPS_AT_ONCE, does not apply.
 */
const OWNER_ASKS_AT_ONCE = 64

/** The signed record each node answers RECORD_PROTOCOL with, by model: the last one it stored. */
const ownRecords = new WeakMap<BmrtNode, Map<string, Uint8Array<ArrayBuffer>>>()

/** The records `node` answers with; the first call starts answering. */
async function servedRecords (node: BmrtNode): Promise<Map<string, Uint8Array<ArrayBuffer>>> {
  const existing = ownRecords.get(node)
  if (existing !== undefined) return existing
  const served = new Map<string, Uint8Array<ArrayBuffer>>()
  ownRecords.set(node, served)
  await node.handle(RECORD_PROTOCOL, async (stream: Stream) => {
    const frames = new FrameStream(stream, MAX_RECORD_FRAME_BYTES)
    try {
      const request = await frames.read(RecordRequest, { signal: AbortSignal.timeout(RECORD_ASK_TIMEOUT_MS) })
      if (request !== null) await frames.write(RecordResponse, { record: served.get(request.model) })
      await stream.close()
    } catch (err) {
      stream.abort(err as Error)
    }
  }, { runOnLimitedConnection: true }) // a server behind NAT is reached through its relay
  return served
}

/**
 * The record `peerId` answers with for `model`: null when it has none, refuses the protocol, or
 * answers with one that does not verify. Throws when it cannot be asked (not reachable, or no
 * answer within RECORD_ASK_TIMEOUT_MS).
 */
async function askOwner (node: BmrtNode, model: string, peerId: string): Promise<SpanRecord | null> {
  const signal = AbortSignal.timeout(RECORD_ASK_TIMEOUT_MS)
  let stream: Stream
  try {
    stream = await node.dialProtocol(peerIdFromString(peerId), RECORD_PROTOCOL, { signal, runOnLimitedConnection: true })
  } catch (err) {
    if (err instanceof UnsupportedProtocolError) return null // a peer, but not a bmrt server
    throw err
  }
  let response: RecordResponse | null
  try {
    const frames = new FrameStream(stream, MAX_RECORD_FRAME_BYTES)
    await frames.write(RecordRequest, { model }, { signal })
    response = await frames.read(RecordResponse, { signal })
    await stream.close({ signal })
  } catch (err) {
    stream.abort(err as Error) // a peer that stalls must not hold the stream
    throw err
  }
  if (response?.record === undefined) return null
  try {
    return await verifyRecord(recordKey(model, peerId), response.record)
  } catch {
    return null
  }
}

/**
 * Options that make kad-dht's findProviders run its query to the end instead of stopping at the
 * first kBucketSize (20) providers found. `maxProviders` is ours: patches/@libp2p+kad-dht+*.patch
 * (PATCHES.md, "Every provider of a block group"). With 40 advertisers of a block group and 2
 * honest servers, the first response held 20 or more advertisers, the query stopped there, and a
 * new client found no honest server (9 lookups of 10 in the attack run).
 */
const EVERY_PROVIDER: RoutingOptions & { maxProviders: number } = { maxProviders: Infinity }

/** An advertiser of a block group whose span record was not found is not looked up again for this long; doubling with each further miss. */
export const NO_RECORD_SKIP_MS = 60_000
const MAX_NO_RECORD_SKIP_MS = 10 * 60_000
/**
 * DHT record lookups of advertisers that could not be asked, run at once by one Registry. With all
 * of them at once (up to MAX_CONCURRENT_LOOKUPS), 16 advertisers without a record and 2 honest
 * servers on a loopback swarm: all 18 DHT gets ended in NotFoundError, the honest ones too, while
 * the same gets one by one found them; with 4 at once the honest records are found.
 */
const RECORD_LOOKUPS_AT_ONCE = 4
/** Advertisers without a record remembered at most (the oldest is forgotten first). */
const MAX_REMEMBERED_MISSES = 10_000

export interface FindSpansOptions {
  /**
   * once the records found cover every block, return this long after, without waiting for the
   * rest; unset: wait for every lookup
   */
  graceMs?: number
  /**
   * take records only from the servers themselves: a server that cannot be asked is left out
   * instead of looked up in the DHT. For routing, which has no use for a server it cannot reach;
   * the swarm monitor wants the records of servers that stopped answering too.
   * @default false
   */
  ownersOnly?: boolean
}

/** Announces this node's spans and finds other servers'. */
export class Registry {
  /** model -> the first block of each group this node provides */
  private readonly provided = new Map<string, Set<number>>()
  private indexProvided = false
  /** `${model}/${peer id}` of advertisers whose record was not found: misses in a row, skipped until */
  private readonly misses = new Map<string, { count: number, until: number }>()
  /** lookups of advertisers' records now running, by `${model}/${peer id}` */
  private readonly pending = new Map<string, Promise<SpanRecord | null>>()
  /** DHT lookups of records whose servers could not be asked */
  private readonly dhtLookups = new Queue<SpanRecord | null>({ concurrency: RECORD_LOOKUPS_AT_ONCE })

  constructor (private readonly node: BmrtNode) {}

  /** Stores `record` as JSON followed by this node's signature over key + JSON; returns what it stored. */
  private async putSigned (key: Uint8Array, record: object): Promise<Uint8Array<ArrayBuffer>> {
    const payload = encoder.encode(JSON.stringify(record))
    const value = concat(payload, await privateKeyOf(this.node).sign(concat(key, payload)))
    await this.node.contentRouting.put(key, value)
    return value
  }

  /** Peer ids of the providers of `cid`: every one the DHT query finds. */
  private async providers (cid: CID): Promise<string[]> {
    return await limited(this.node, async () => {
      const peers = new Set<string>()
      for await (const provider of this.node.contentRouting.findProviders(cid, EVERY_PROVIDER)) peers.add(provider.id.toString())
      return [...peers]
    })
  }

  /** Signs and stores this node's span record, and provides every block of the span. */
  async announce (model: string, span: { start: number, end: number, state: SpanState, info?: Record<string, unknown> },
    options: AnnounceOptions = {}): Promise<SpanRecord> {
    if (model === INDEX_SEGMENT) throw new Error(`'${INDEX_SEGMENT}' is reserved and cannot name a model`)
    const peerId = this.node.peerId.toString()
    const ts = Date.now()
    const record: SpanRecord = { model, peerId, start: span.start, end: span.end, state: span.state, ts, expiresAt: ts + (options.ttlMs ?? DEFAULT_RECORD_TTL_MS), info: span.info ?? {} }
    const signed = await this.putSigned(recordKey(model, peerId), record)
    const served = await servedRecords(this.node)
    served.set(model, signed) // before providing: a client asks an advertiser as soon as it finds it

    const groups = new Set(span.state === 'offline' ? [] : groupsOf(span.start, span.end))
    const before = this.provided.get(model) ?? new Set<number>()
    await Promise.all([...groups].filter(g => !before.has(g)).map(async g => await limited(this.node, async () => await this.node.contentRouting.provide(await blockGroupCid(model, g)))))
    await Promise.all([...before].filter(g => !groups.has(g)).map(async g => await this.node.contentRouting.cancelReprovide(await blockGroupCid(model, g))))
    this.provided.set(model, groups)
    return record
  }

  /** Signs and stores the list of models this node serves (empty when it stops serving). */
  async announceModels (models: Array<{ name: string, blocks: number }>, options: AnnounceOptions = {}): Promise<void> {
    const peerId = this.node.peerId.toString()
    const ts = Date.now()
    const record: ModelIndexRecord = { peerId, models, ts, expiresAt: ts + (options.ttlMs ?? DEFAULT_RECORD_TTL_MS) }
    await this.putSigned(indexKey(peerId), record)
    if (!this.indexProvided) {
      await this.node.contentRouting.provide(await indexCid())
      this.indexProvided = true
    }
  }

  /** The models the swarm's servers announce, with their block counts. */
  async listModels (): Promise<Array<{ name: string, blocks: number }>> {
    const models = new Map<string, number>()
    await Promise.all((await this.providers(await indexCid())).map(async peer => {
      try {
        const key = indexKey(peer)
        for (const m of (await verifyIndexRecord(key, await limited(this.node, async () => await this.node.contentRouting.get(key)))).models) models.set(m.name, m.blocks)
      } catch {} // gone or invalid
    }))
    return [...models].map(([name, blocks]) => ({ name, blocks })).sort((a, b) => a.name.localeCompare(b.name))
  }

  /** Announces OFFLINE at once and stops providing the blocks (a clean shutdown). */
  async withdraw (model: string, span: { start: number, end: number, info?: Record<string, unknown> }): Promise<void> {
    await this.announce(model, { ...span, state: 'offline' })
  }

  /** The newest valid record of one server, or null. */
  async lookup (model: string, peerId: string): Promise<SpanRecord | null> {
    const key = recordKey(model, peerId)
    try {
      return await verifyRecord(key, await limited(this.node, async () => await this.node.contentRouting.get(key)))
    } catch {
      return null // not found, or nothing valid left
    }
  }

  /**
   * The record of an advertiser of a block group: asked of the advertiser (RECORD_PROTOCOL); when
   * it cannot be asked, looked up in the DHT unless `ownersOnly`. Skipped while an earlier call found
   * it has none (NO_RECORD_SKIP_MS, doubling with each further miss), and shared with a call for it
   * still running. A server stores its record before it provides (announce), so an advertiser without one
   * is gone, or never served (PATCHES.md, "Advertisers without a record").
   */
  private async advertiserRecord (model: string, peerId: string, ownersOnly: boolean): Promise<SpanRecord | null> {
    const id = `${model}/${peerId}`
    const miss = this.misses.get(id)
    if (miss !== undefined && miss.until > Date.now()) return null
    let pending = this.pending.get(id)
    if (pending === undefined) {
      pending = this.fetchRecord(model, peerId, ownersOnly).then(found => {
        if (found === 'unreachable') return null // not a miss: a server that hung a while is asked again next time
        if (found !== null) {
          this.misses.delete(id)
        } else {
          const count = (this.misses.get(id)?.count ?? 0) + 1
          this.misses.set(id, { count, until: Date.now() + Math.min(NO_RECORD_SKIP_MS * 2 ** (count - 1), MAX_NO_RECORD_SKIP_MS) })
          if (this.misses.size > MAX_REMEMBERED_MISSES) this.misses.delete(this.misses.keys().next().value!)
        }
        return found
      }).finally(() => this.pending.delete(id))
      this.pending.set(id, pending)
    }
    return await pending
  }

  /** The advertiser's record; null: it has none, by its own word or the DHT's; 'unreachable': not asked, and (ownersOnly) not looked up. */
  private async fetchRecord (model: string, peerId: string, ownersOnly: boolean): Promise<SpanRecord | null | 'unreachable'> {
    try {
      return await askOwner(this.node, model, peerId)
    } catch {
      return ownersOnly ? 'unreachable' : await this.dhtLookups.add(async () => await this.lookup(model, peerId))
    }
  }

  /**
   * The records of `peers`, OWNER_ASKS_AT_ONCE at a time: when every lookup ended, or, with
   * `graceMs`, that long after the records found satisfy `enough`. Lookups still running then go
   * on, and what they find (or do not) is remembered for the next call.
   */
  private async records (model: string, peers: readonly string[], enough: (found: readonly SpanRecord[]) => boolean,
    options: FindSpansOptions = {}): Promise<SpanRecord[]> {
    const found: SpanRecord[] = []
    if (peers.length === 0) return found
    return await new Promise(resolve => {
      let left = peers.length
      let timer: ReturnType<typeof setTimeout> | undefined
      const done = (): void => { clearTimeout(timer); resolve([...found]) }
      let next = 0
      const work = (): void => {
        if (next >= peers.length) return
        this.advertiserRecord(model, peers[next++], options.ownersOnly ?? false).then(record => { if (record !== null) found.push(record) }, () => {}).finally(() => {
          if (--left === 0) done()
          else if (options.graceMs !== undefined && timer === undefined && enough(found)) timer = setTimeout(done, options.graceMs)
          work()
        })
      }
      for (let i = 0; i < OWNER_ASKS_AT_ONCE; i++) work()
    })
  }

  /**
   * Servers whose current, unexpired record says they serve `block` in one of `states` (default:
   * online only, the servers a client may route to; block selection also counts joining ones).
   */
  async findServers (model: string, block: number, states: readonly SpanState[] = ['online']): Promise<SpanRecord[]> {
    const peers = await this.providers(await blockGroupCid(model, block))
    const serves = (r: SpanRecord): boolean => states.includes(r.state) && r.start <= block && block < r.end
    return (await this.records(model, peers, () => false)).filter(serves)
  }

  /**
   * Every server's record for the model's blocks [0, blocks), one per server: the providers of
   * every group of blocks, then each provider's record once. With `options.graceMs`, returns that
   * long after the records found cover every block, without waiting for the slowest lookups.
   */
  async findSpans (model: string, blocks: number, states: readonly SpanState[] = ['online'], options: FindSpansOptions = {}): Promise<SpanRecord[]> {
    const provided = new Map<string, number[]>() // peer -> the first block of each group it provides
    await Promise.all(groupsOf(0, blocks).map(async first => {
      for (const peer of await this.providers(await blockGroupCid(model, first))) provided.set(peer, [...(provided.get(peer) ?? []), first])
    }))
    // As in findServers: a record counts where its span still touches a group its server provides.
    const counts = (r: SpanRecord): boolean => states.includes(r.state) &&
      provided.get(r.peerId)!.some(first => r.start < first + BLOCKS_PER_KEY && first < r.end)
    const covered = (found: readonly SpanRecord[]): boolean => {
      const held = new Uint8Array(blocks)
      for (const r of found) if (counts(r)) held.fill(1, Math.max(0, r.start), Math.min(blocks, r.end))
      return held.every(b => b === 1)
    }
    return (await this.records(model, [...provided.keys()], covered, options)).filter(counts)
  }
}
