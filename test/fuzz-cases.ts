// What the fuzz test throws at a server: a seeded random source, hostile frames for the block
// protocols and hostile requests for the HTTP gateway. Each case says, where it can know, what the
// server must answer; fuzz.test.ts sends them and checks.

import { DTYPES } from '../src/inference/dtype.js'
import { seededRandom } from '../src/inference/sampling.js'
import { multiaddr } from '@multiformats/multiaddr'
import { ReachabilityRequest } from '../src/p2p/reachability-messages.js'
import { MAX_RECORD_FRAME_BYTES } from '../src/p2p/registry.js'
import { RecordRequest } from '../src/p2p/registry-messages.js'
import { EvidenceRequest } from '../src/petals/protocol/messages.js'
import { encodeHidden, ErrorCode, InfoRequest, MAX_FRAME_BYTES, Request, WireDType, type Tensor } from '../src/petals/protocol/wire.js'
import { BUNDLED_HIDDEN, frameBytes, prefixed } from './raw-peer.js'

/** A seeded source of random choices. */
export class Rng {
  private readonly next: () => number

  constructor (seed: number) {
    this.next = seededRandom(seed)
  }

  /** An integer in [min, max]. */
  int (min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1))
  }

  chance (p: number): boolean {
    return this.next() < p
  }

  pick<T> (items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]
  }

  bytes (n: number): Uint8Array {
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i++) out[i] = this.int(0, 255)
    return out
  }

  text (n: number, alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.'): string {
    let out = ''
    for (let i = 0; i < n; i++) out += alphabet[this.int(0, alphabet.length - 1)]
    return out
  }

  /** A uint32 a careless or hostile peer might send: edge values as often as uniform ones. */
  uint32 (): number {
    return this.chance(0.5) ? this.pick([0, 1, 2, 3, 5, 63, 64, 65, 255, 4096, 8192, 8193, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]) : this.int(0, 2 ** 32 - 1)
  }

  /** Values in [-2, 2), the range of the bundled model's hidden states. */
  floats (n: number): Float32Array {
    const out = new Float32Array(n)
    for (let i = 0; i < n; i++) out[i] = this.next() * 4 - 2
    return out
  }
}

// ---------------------------------------------------------------------------------------------
// The block protocols (/bmrt/inference and /bmrt/forward share one handler)

export interface FrameCase {
  what: string
  /** raw bytes sent one after the other */
  chunks: Uint8Array[]
  /** 'close': half-close, then read every answer; 'reset': reset the stream right after sending */
  end: 'close' | 'reset'
  /** how many hidden-state answers must come first (undefined: any number) */
  answers?: number
  /** the error that must end the session; null: none (a clean close); undefined: any, or none */
  error?: { code: ErrorCode, message: RegExp } | null
}

/** The server's span and limits, as the cases need them. */
export interface Served {
  model: string
  blocks: number
  inferenceMaxLength: number
  maxBatch: number
}

interface StepPlan { position: number | undefined, tokens: number, at: number, tensor: Tensor }

/** A well-formed session: an Open and up to four steps, some continuing, some rewinding. */
function validSession (rng: Rng, served: Served): { open: NonNullable<Request['open']>, steps: StepPlan[] } {
  const batch = rng.int(1, 3)
  const maxLength = rng.int(4, 48)
  const start = rng.int(0, served.blocks - 1)
  const open = { model: served.model, start, end: rng.int(start + 1, served.blocks), maxLength, batch, dtype: rng.chance(0.2) ? undefined : rng.pick([WireDType.F32, WireDType.BF16, WireDType.F16]) }
  const steps: StepPlan[] = []
  let length = 0
  for (let i = rng.int(1, 4); i > 0; i--) {
    const at = rng.chance(0.3) ? rng.int(0, length) : length // a rewind, sometimes
    if (at >= maxLength) break
    const tokens = rng.int(1, Math.min(8, maxLength - at))
    const position = at === length && rng.chance(0.5) ? undefined : at
    steps.push({ position, tokens, at, tensor: encodeHidden(rng.floats(batch * tokens * BUNDLED_HIDDEN), [batch, tokens, BUNDLED_HIDDEN], rng.pick(DTYPES)) })
    length = at + tokens
  }
  return { open, steps }
}

const stepRequest = (step: StepPlan): Request => ({ step: { position: step.position, hidden: step.tensor } })

/** A valid session with one thing wrong in one frame, and the error that must follow. */
function mutatedSession (rng: Rng, served: Served): FrameCase {
  const { open, steps } = validSession(rng, served)
  const frames: Request[] = [{ open }, ...steps.map(stepRequest)]
  const k = rng.int(0, steps.length - 1) // the step to spoil, for step mutations
  const bad = (message: RegExp): { code: ErrorCode, message: RegExp } => ({ code: ErrorCode.BAD_REQUEST, message })
  const spoil = (what: string, answers: number, error: FrameCase['error']): FrameCase =>
    ({ what, chunks: frames.map(frameBytes), end: 'close', answers, error })
  const setStep = (hidden: Tensor, position = steps[k].position): void => { frames[k + 1] = { step: { position, hidden } } }

  switch (rng.int(0, 15)) {
    case 0: {
      frames[0] = { open: { ...open, model: rng.chance(0.1) ? rng.text(100_000) : rng.text(rng.int(0, 40)) } }
      return spoil('another model', 0, { code: ErrorCode.NOT_SERVED, message: new RegExp(`serves ${served.model}, not`) })
    }
    case 1: {
      const [start, end] = rng.pick([[2, 2], [3, 1], [0, served.blocks + 1], [served.blocks, served.blocks + 4], [rng.uint32(), 0], [1, 2 ** 32 - 1]])
      frames[0] = { open: { ...open, start, end } }
      return spoil(`blocks ${start}:${end}`, 0, { code: ErrorCode.NOT_SERVED, message: /are not within this server's/ })
    }
    case 2: {
      const maxLength = rng.pick([0, served.inferenceMaxLength + 1, 2 ** 32 - 1])
      frames[0] = { open: { ...open, maxLength } }
      return spoil(`max_length ${maxLength}`, 0, { code: ErrorCode.TOO_LONG, message: /max_length must be/ })
    }
    case 3: {
      const batch = rng.pick([0, served.maxBatch + 1, 2 ** 32 - 1])
      frames[0] = { open: { ...open, batch } }
      return spoil(`batch ${batch}`, 0, { code: ErrorCode.TOO_LONG, message: /batch must be/ })
    }
    case 4: {
      frames[0] = { open: { ...open, maxLength: served.inferenceMaxLength, batch: served.maxBatch } }
      return spoil('more cache than the server has', 0, { code: ErrorCode.CACHE_FULL, message: /./ })
    }
    case 5: { // a shape that is not [batch, tokens, hidden] with matching bytes: the first check that fails speaks
      const shape = Array.from({ length: rng.pick([0, 1, 2, 3, 3, 3, 4, 6]) }, () => rng.chance(0.5) ? rng.uint32() : rng.int(0, 4))
      const right = [open.batch, steps[k].tokens, BUNDLED_HIDDEN]
      if (shape.length === 3 && shape.every((d, i) => d === right[i])) shape[2]++
      setStep({ ...steps[k].tensor, shape })
      const message = shape.length !== 3
        ? /must have shape \[batch, tokens, hidden\]/
        : shape[0] !== open.batch ? /batch of \d+ sequences/ : shape[2] !== BUNDLED_HIDDEN ? /hidden size \d+/ : shape[1] < 1 ? /at least one token/ : /needs \d+ bytes/
      return spoil(`shape [${shape.slice(0, 4).join(', ')}]`, k, bad(message))
    }
    case 6: {
      const data = steps[k].tensor.data
      const changed = rng.chance(0.5) ? data.subarray(0, rng.int(0, data.byteLength - 1)) : new Uint8Array([...data, ...rng.bytes(rng.int(1, 100))])
      setStep({ ...steps[k].tensor, data: changed })
      return spoil(`${changed.byteLength} bytes for ${data.byteLength}`, k, bad(/needs \d+ bytes, the frame has/))
    }
    case 7: { // NaN or an infinity, in the tensor's own format
      const tensor = steps[k].tensor
      const data = new Uint8Array(tensor.data)
      const view = new DataView(data.buffer)
      const nan = rng.chance(0.5)
      const sign = rng.chance(0.5) ? 0x8000 : 0
      if (tensor.dtype === WireDType.F32) view.setUint32(4 * rng.int(0, data.byteLength / 4 - 1), ((nan ? 0x7FC0 : 0x7F80) | sign) << 16 >>> 0, true)
      else view.setUint16(2 * rng.int(0, data.byteLength / 2 - 1), (tensor.dtype === WireDType.BF16 ? (nan ? 0x7FC0 : 0x7F80) : (nan ? 0x7E00 : 0x7C00)) | sign, true)
      setStep({ ...tensor, data })
      return spoil(`${nan ? 'NaN' : 'an infinity'} in ${tensor.dtype}`, k, bad(/NaN or infinite/))
    }
    case 8: {
      const cached = k === 0 ? 0 : steps[k - 1].at + steps[k - 1].tokens
      const position = cached + rng.pick([1, 2, 1000, 2 ** 31, 2 ** 32 - 1 - cached])
      setStep(steps[k].tensor, position)
      return spoil(`position ${position} with ${cached} cached`, k, bad(/position \d+ is beyond the \d+ tokens cached/))
    }
    case 9: {
      const at = steps[k].at
      const tokens = open.maxLength - at + rng.int(1, 8)
      setStep(encodeHidden(rng.floats(open.batch * tokens * BUNDLED_HIDDEN), [open.batch, tokens, BUNDLED_HIDDEN], 'f32'), at)
      return spoil(`${tokens} tokens at ${at} of max_length ${open.maxLength}`, k, { code: ErrorCode.TOO_LONG, message: /would exceed it/ })
    }
    case 10: {
      frames.shift()
      return spoil('steps without an Open (no session)', 0, bad(/starts with an Open frame/))
    }
    case 11: {
      frames.splice(k + 1, 0, { open })
      return spoil(`a second Open after ${k} steps`, k, bad(/open already: one Open per stream/))
    }
    case 12: {
      frames[0] = { open, step: stepRequest(steps[0]).step }
      return spoil('an Open and a Step in one frame', 0, bad(/an Open or a Step, not both/))
    }
    case 13: { // another dtype than the data has: the byte count gives it away
      const tensor = steps[k].tensor
      const dtype = rng.pick([WireDType.F32, WireDType.BF16, WireDType.F16].filter(d => (d === WireDType.F32) !== (tensor.dtype === WireDType.F32)))
      setStep({ ...tensor, dtype })
      return spoil(`${tensor.dtype} data labelled ${dtype}`, k, bad(/needs \d+ bytes, the frame has/))
    }
    case 14: { // a dtype no WireDType has: BF16's varint (0x08 0x01, the tensor's first field) made 7
      const body = Request.encode({ step: { hidden: { ...steps[k].tensor, dtype: WireDType.BF16 } } })
      const at = body.findIndex((byte, i) => byte === 0x08 && body[i + 1] === 0x01)
      body[at + 1] = 7
      const chunks = frames.map(frameBytes)
      chunks[k + 1] = prefixed(body)
      return { what: 'an unknown tensor dtype', chunks, end: 'close', answers: k, error: bad(/malformed frame/) }
    }
    default: {
      frames.splice(k + 1, 0, {})
      return spoil(`an empty frame after ${k} steps`, k, bad(/expected a Step frame/))
    }
  }
}

/** One case for /bmrt/inference or /bmrt/forward. */
export function frameCase (rng: Rng, served: Served): FrameCase {
  const kind = rng.int(0, 9)
  if (kind <= 3) return mutatedSession(rng, served)
  if (kind === 4) {
    const { open, steps } = validSession(rng, served)
    return { what: `a valid session of ${steps.length} steps`, chunks: [frameBytes({ open }), ...steps.map(s => frameBytes(stepRequest(s)))], end: 'close', answers: steps.length, error: null }
  }
  if (kind === 5) { // cut anywhere: a reset, or a half-close that may fall inside a frame
    const { open, steps } = validSession(rng, served)
    const frames = [frameBytes({ open }), ...steps.map(s => frameBytes(stepRequest(s)))]
    const all = concat(frames)
    const cut = rng.int(0, all.byteLength - 1)
    if (rng.chance(0.5)) return { what: `a session reset after ${cut} of ${all.byteLength} bytes`, chunks: [all.subarray(0, cut)], end: 'reset' }
    let whole = 0 // frames wholly sent
    let boundary = 0
    while (whole < frames.length && boundary + frames[whole].byteLength <= cut) boundary += frames[whole++].byteLength
    const inside = cut > boundary
    return {
      what: `a session closed after ${cut} of ${all.byteLength} bytes`,
      chunks: [all.subarray(0, cut)],
      end: 'close',
      answers: Math.max(0, whole - 1),
      error: inside ? { code: ErrorCode.BAD_REQUEST, message: /the stream ended inside a frame/ } : null
    }
  }
  if (kind === 6) { // bytes flipped inside one frame of a valid session (its length prefix kept)
    const { open, steps } = validSession(rng, served)
    const bodies = [Request.encode({ open }), ...steps.map(s => Request.encode(stepRequest(s)))]
    const i = rng.int(0, bodies.length - 1)
    const body = new Uint8Array(bodies[i])
    for (let n = rng.int(1, 4); n > 0; n--) body[rng.int(0, body.byteLength - 1)] = rng.int(0, 255)
    bodies[i] = body
    return { what: `bytes flipped in frame ${i}`, chunks: bodies.map(b => prefixed(b)), end: rng.chance(0.8) ? 'close' : 'reset' }
  }
  if (kind === 7) { // a length prefix that lies
    const { open, steps } = validSession(rng, served)
    const bodies = [Request.encode({ open }), ...steps.map(s => Request.encode(stepRequest(s)))]
    const i = rng.int(0, bodies.length - 1)
    const length = Math.max(0, bodies[i].byteLength + rng.pick([-3, -1, 1, 2, 100]))
    return { what: `frame ${i} of ${bodies[i].byteLength} bytes announced as ${length}`, chunks: bodies.map((b, j) => prefixed(b, j === i ? length : b.byteLength)), end: 'close' }
  }
  if (kind === 8) return randomPrefix(rng)
  const n = rng.chance(0.1) ? rng.int(4096, 65536) : rng.int(0, 300)
  return { what: `${n} random bytes`, chunks: [rng.bytes(n)], end: rng.chance(0.9) ? 'close' : 'reset' }
}

/** A length prefix of any size (huge ones too), or one that never ends, and fewer bytes than it says. */
function randomPrefix (rng: Rng): FrameCase {
  if (rng.chance(0.3)) {
    const n = rng.pick([1, 2, 3, 4, 5, 10, 64, 4096])
    const tooLong = n >= 4 // a frame of at most MAX_FRAME_BYTES needs a 4-byte prefix
    return {
      what: `a length prefix of ${n} continuation bytes`,
      chunks: [new Uint8Array(n).fill(0x80)],
      end: 'close',
      answers: 0,
      error: { code: ErrorCode.BAD_REQUEST, message: tooLong ? /frame too large/ : /the stream ended inside a frame/ }
    }
  }
  const length = rng.pick([MAX_FRAME_BYTES + 1, 2 ** 32 - 1, 2 ** 40, 2 ** 52, rng.int(1, 300), rng.int(1, MAX_FRAME_BYTES)])
  const sent = rng.bytes(Math.min(length - 1, rng.int(0, 300)))
  return {
    what: `a frame announced as ${length} bytes, ${sent.byteLength} sent`,
    chunks: [prefixed(sent, length)],
    end: 'close',
    answers: 0,
    error: { code: ErrorCode.BAD_REQUEST, message: length > MAX_FRAME_BYTES ? /frame too large/ : /the stream ended inside a frame/ }
  }
}

// ---------------------------------------------------------------------------------------------
// /bmrt/info

export interface InfoCase {
  what: string
  chunks: Uint8Array[]
  end: 'close' | 'reset'
  /** a well-formed request: an Info frame must answer it */
  valid: boolean
}

export function infoCase (rng: Rng, model: string): InfoCase {
  switch (rng.int(0, 4)) {
    case 0: {
      const asked = rng.chance(0.5) ? model : rng.text(rng.int(0, 200))
      return { what: `info on ${asked.slice(0, 20)}`, chunks: [prefixed(InfoRequest.encode({ model: asked }))], end: 'close', valid: true }
    }
    case 1: {
      const n = rng.int(4000, 20_000) // past the request's size limit, or near it
      const body = InfoRequest.encode({ model: rng.text(n) })
      return { what: `info on a ${n}-character name`, chunks: [prefixed(body)], end: 'close', valid: body.byteLength <= 4096 }
    }
    case 2: return { ...lyingPrefix(rng), valid: false }
    case 3: return { ...cutShort(rng, 'info request', prefixed(InfoRequest.encode({ model }))), valid: false }
    default: return { ...randomBytes(rng), valid: false }
  }
}

// ---------------------------------------------------------------------------------------------
// /bmrt/record

export interface RecordCase {
  what: string
  chunks: Uint8Array[]
  end: 'close' | 'reset'
  /** a well-formed request: a RecordResponse must answer it */
  valid: boolean
  /** the model asked about, when the request is well-formed */
  asked?: string
}

export function recordCase (rng: Rng, model: string): RecordCase {
  switch (rng.int(0, 4)) {
    case 0: {
      const asked = rng.chance(0.5) ? model : rng.text(rng.int(0, 200))
      return { what: `the record of ${asked.slice(0, 20)}`, chunks: [prefixed(RecordRequest.encode({ model: asked }))], end: 'close', valid: true, asked }
    }
    case 1: {
      const n = rng.int(MAX_RECORD_FRAME_BYTES - 200, 2 * MAX_RECORD_FRAME_BYTES) // past the request's size limit, or near it
      const asked = rng.text(n)
      const body = RecordRequest.encode({ model: asked })
      return { what: `the record of a ${n}-character name`, chunks: [prefixed(body)], end: 'close', valid: body.byteLength <= MAX_RECORD_FRAME_BYTES, asked }
    }
    case 2: return { ...lyingPrefix(rng), valid: false }
    case 3: return { ...cutShort(rng, 'record request', prefixed(RecordRequest.encode({ model }))), valid: false }
    default: return { ...randomBytes(rng), valid: false }
  }
}

// ---------------------------------------------------------------------------------------------
// /bmrt/evidence

export interface EvidenceCase {
  what: string
  chunks: Uint8Array[]
  end: 'close' | 'reset'
  /** a well-formed request: an EvidenceResponse must answer it */
  valid: boolean
  /** it hands evidence on: the answer must be an error (random evidence proves nothing), never a verdict against anyone */
  submits: boolean
}

export function evidenceCase (rng: Rng, model: string): EvidenceCase {
  const accused = rng.chance(0.5) ? '12D3KooWFuzzAccused' : rng.text(rng.int(0, 80))
  switch (rng.int(0, 4)) {
    case 0: {
      const asked = rng.chance(0.8) ? model : rng.text(rng.int(0, 40))
      return { what: 'a fetch of evidence', chunks: [prefixed(EvidenceRequest.encode({ model: asked, accused }))], end: 'close', valid: true, submits: false }
    }
    case 1: {
      // Evidence whose parts are random: receipts that do not decode or are not signed, inputs of any size.
      const bytes = (n: number): Uint8Array<ArrayBuffer> => Uint8Array.from(rng.bytes(n))
      const steps = Array.from({ length: rng.int(0, 4) }, () => ({
        receipt: rng.chance(0.8) ? { receipt: bytes(rng.int(0, 120)), signature: bytes(rng.chance(0.5) ? 64 : rng.int(0, 80)) } : undefined,
        input: bytes(rng.int(0, 600)),
        output: rng.chance(0.5) ? bytes(rng.int(0, 600)) : undefined
      }))
      return { what: `evidence of ${steps.length} random steps`, chunks: [prefixed(EvidenceRequest.encode({ model, accused, evidence: { steps } }))], end: 'close', valid: true, submits: true }
    }
    case 2: return { ...lyingPrefix(rng), valid: false, submits: false }
    case 3: return { ...cutShort(rng, 'evidence request', prefixed(EvidenceRequest.encode({ model, accused }))), valid: false, submits: false }
    default: return { ...randomBytes(rng), valid: false, submits: false }
  }
}

// What a one-request protocol (info, record, reachability) gets besides requests, each with how it ends.
interface MalformedRequest { what: string, chunks: Uint8Array[], end: 'close' | 'reset' }

/** A length prefix that lies (randomPrefix's), then the stream closes. */
function lyingPrefix (rng: Rng): MalformedRequest {
  const { what, chunks } = randomPrefix(rng)
  return { what, chunks, end: 'close' }
}

/** A valid `request`, named `what`, cut short. */
function cutShort (rng: Rng, what: string, request: Uint8Array): MalformedRequest {
  return { what: `${what} cut short`, chunks: [request.subarray(0, rng.int(0, request.byteLength - 1))], end: rng.chance(0.5) ? 'close' : 'reset' }
}

/** Up to 600 random bytes. */
function randomBytes (rng: Rng): MalformedRequest {
  const n = rng.int(0, 600)
  return { what: `${n} random bytes`, chunks: [rng.bytes(n)], end: rng.chance(0.9) ? 'close' : 'reset' }
}

// ---------------------------------------------------------------------------------------------
// /bmrt/reachability

export interface ReachabilityCase {
  what: string
  chunks: Uint8Array[]
  end: 'close' | 'reset'
  /** the answer a well-formed request must get: a failed dial-back, or no address to dial */
  expect: RegExp | null
}

/** `closedPort`: a port on 127.0.0.1 nobody listens on (the checker's dial-back must fail there). */
export function reachabilityCase (rng: Rng, closedPort: number): ReachabilityCase {
  switch (rng.int(0, 4)) {
    case 0: {
      const addrs = [multiaddr(`/ip4/127.0.0.1/tcp/${closedPort}`).bytes]
      return { what: 'a dial-back to a closed port', chunks: [prefixed(ReachabilityRequest.encode({ addrs }))], end: 'close', expect: /^could not dial \/ip4\/127\.0\.0\.1\/tcp\// }
    }
    case 1: {
      // Entries that are not multiaddrs, or are on other IPs: the checker must dial none of them.
      const n = rng.int(0, 100)
      const addrs = Array.from({ length: n }, (): Uint8Array<ArrayBuffer> => rng.chance(0.5) ? rng.bytes(rng.int(0, 40)) as Uint8Array<ArrayBuffer> : multiaddr(`/ip4/10.${rng.int(0, 255)}.${rng.int(0, 255)}.${rng.int(1, 254)}/tcp/${rng.int(1, 65535)}`).bytes)
      const dialable = addrs.some(bytes => { try { return multiaddr(bytes).toString().startsWith('/ip4/127.') } catch { return false } })
      return { what: `${n} addresses, none on the asker's IP`, chunks: [prefixed(ReachabilityRequest.encode({ addrs }))], end: 'close', expect: dialable ? null : /^none of the addresses sent is a TCP address on 127\.0\.0\.1/ }
    }
    case 2: return { ...lyingPrefix(rng), expect: null }
    case 3: return { ...cutShort(rng, 'request', prefixed(ReachabilityRequest.encode({ addrs: [multiaddr(`/ip4/127.0.0.1/tcp/${closedPort}`).bytes] }))), expect: null }
    default: return { ...randomBytes(rng), expect: null }
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface HttpCase {
  what: string
  /** the raw request, as it goes on the socket */
  bytes: Uint8Array
  /** well-formed HTTP/1.1 (method, target, headers, body framing): then every error must carry the API's JSON error body */
  wellFormed: boolean
  method: string
}

/** The gateway's routes (and a static file), with a valid body for those that take one. */
const ROUTES: Array<{ path: string, body?: () => Record<string, unknown> }> = [
  { path: '/' }, { path: '/swarm' }, { path: '/swarm/' }, { path: '/jobs' }, { path: '/jobs/' }, { path: '/chat.js' }, { path: '/vendor/marked.js' },
  { path: '/v1/models' },
  { path: '/v1/completions', body: () => ({ prompt: 'Once upon a time', max_tokens: 3, temperature: 0 }) },
  { path: '/v1/chat/completions', body: () => ({ messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }], max_tokens: 3 }) },
  { path: '/api/v1/state' }, { path: '/metrics' },
  { path: '/api/v1/jobs', body: () => ({ prompt: 'One day', max_tokens: 2, priority: 1 }) },
  { path: '/api/v1/jobs/job-0' }
]
const FIELDS = ['model', 'prompt', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'seed', 'stop', 'n', 'best_of',
  'logit_bias', 'logprobs', 'tools', 'echo', 'suffix', 'stream', 'stream_options', 'presence_penalty', 'frequency_penalty', 'priority']
const METHODS = ['GET', 'POST', 'DELETE', 'HEAD', 'OPTIONS', 'PUT', 'PATCH']

/** Any JSON value as text: now and then a long string, or one nested deeper than JSON.stringify can go. */
function randomJson (rng: Rng, depth = 0): string {
  if (depth === 0 && rng.chance(0.15)) return nestedText(rng.pick([100, 5000, 50_000]), rng.chance(0.5))
  switch (rng.int(0, depth > 2 ? 4 : 7)) {
    case 0: return 'null'
    case 1: return String(rng.chance(0.5))
    case 2: return String(rng.pick([0, 1, -1, 2, 0.5, -0.0001, 1e308, -1e308, 2 ** 53, 511, 512, 100_000, 2 ** 31]))
    case 3: return JSON.stringify(rng.chance(0.05) ? rng.text(200_000) : rng.text(rng.int(0, 20)))
    case 4: return JSON.stringify(rng.pick(['', 'stories260K', 'user', 'system', 'text', '\u0000', '\ud800']))
    case 5: return `[${Array.from({ length: rng.int(0, 5) }, () => randomJson(rng, depth + 1)).join(',')}]`
    case 6: return jsonObject(Array.from({ length: rng.int(0, 4) }, () => [rng.pick([...FIELDS, 'role', 'content', 'type', 'text', rng.text(5)]), randomJson(rng, depth + 1)]))
    default: return messagesJson(rng, depth + 1)
  }
}

/** A chat's messages: roles right, wrong or inherited from Object.prototype; contents of any type. */
function messagesJson (rng: Rng, depth: number): string {
  const message = (): string => jsonObject([
    ['role', JSON.stringify(rng.pick(['user', 'system', 'assistant', 'developer', 'tool', 'toString', '__proto__', 'constructor', rng.text(4)]))],
    ['content', rng.chance(0.3) ? JSON.stringify([{ type: 'text', text: rng.text(10) }]) : randomJson(rng, depth)]
  ])
  return `[${Array.from({ length: rng.int(1, 3) }, message).join(',')}]`
}

/** An object's JSON text from its fields' names and JSON texts. */
function jsonObject (fields: Array<[string, string]>): string {
  return `{${fields.map(([name, value]) => `${JSON.stringify(name)}:${value}`).join(',')}}`
}

/** JSON nested `depth` levels deep, as text: arrays or objects. */
function nestedText (depth: number, objects: boolean): string {
  return objects ? '{"a":'.repeat(depth) + '1' + '}'.repeat(depth) : '['.repeat(depth) + ']'.repeat(depth)
}

function body (rng: Rng, route: typeof ROUTES[number]): { text: Uint8Array, what: string } {
  const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s)
  const valid = route.body?.() ?? { prompt: 'Once' }
  switch (rng.int(0, 7)) {
    case 0: return { text: new Uint8Array(0), what: 'no body' }
    case 1: { const n = rng.int(0, 2000); return { text: rng.bytes(n), what: `${n} random bytes` } }
    case 2: { // invalid UTF-8 inside JSON strings
      const json = utf8(JSON.stringify({ ...valid, prompt: 'PLACEHOLDER' }))
      const at = new TextDecoder().decode(json).indexOf('PLACEHOLDER')
      const invalid = Uint8Array.from(rng.pick([[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]]))
      return { text: concat([json.subarray(0, at), invalid, json.subarray(at + 'PLACEHOLDER'.length)]), what: 'bad UTF-8 in a string' }
    }
    case 3: return rng.chance(0.3)
      ? { text: rng.bytes((1 << 20) + rng.int(1, 4096)), what: 'a body past 1 MiB' }
      : { text: utf8(nestedText(rng.pick([1000, 100_000]), rng.chance(0.5))), what: 'deeply nested JSON' }
    case 4: return { text: utf8(JSON.stringify(rng.pick([[], 'prompt', 1, null, true, [valid]]))), what: 'JSON that is not an object' }
    case 5: return { text: utf8(JSON.stringify(valid)), what: 'a valid body' }
    default: return spoiledBody(rng, route)
  }
}

/** The route's valid body but for a few fields, of random types. */
function spoiledBody (rng: Rng, route: typeof ROUTES[number]): { text: Uint8Array, what: string } {
  const fields = new Map(Object.entries(route.body?.() ?? {}).map(([name, value]) => [name, JSON.stringify(value)]))
  const chat = route.path === '/v1/chat/completions'
  const spoiled = Array.from({ length: rng.int(1, 3) }, () => chat && rng.chance(0.3) ? 'messages' : rng.pick(FIELDS))
  for (const field of spoiled) fields.set(field, field === 'messages' && rng.chance(0.7) ? messagesJson(rng, 1) : randomJson(rng))
  return { text: new TextEncoder().encode(jsonObject([...fields])), what: `random ${spoiled.join(', ')}` }
}

/** A well-formed, authorised POST to an endpoint that generates, its body valid but for a few fields most of the time. */
function generationRequest (rng: Rng, key: string): HttpCase {
  const route = rng.pick(ROUTES.filter(r => r.body !== undefined))
  const payload = rng.chance(0.75) ? spoiledBody(rng, route) : body(rng, route)
  const head = `POST ${route.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer ${key}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${payload.text.byteLength}\r\n\r\n`
  return { what: `POST ${route.path} (${payload.what})`, bytes: concat([new TextEncoder().encode(head), payload.text]), wellFormed: true, method: 'POST' }
}

function target (rng: Rng, path: string): { target: string, wellFormed: boolean } {
  switch (rng.int(0, 9)) {
    case 0: return { target: `${path}?${rng.text(rng.int(0, 30), 'abc=&%20xyz0123')}`, wellFormed: true }
    case 1: return { target: `${path}/${rng.text(rng.int(1, 12))}`, wellFormed: true }
    case 2: return { target: `/api/v1/jobs/${rng.pick(['%E0%A4%A', '%', '%zz', '%00', '..', '%2F..%2F', rng.text(300)])}`, wellFormed: true }
    case 3: return { target: `/${Array.from({ length: rng.int(1, 4) }, () => rng.text(rng.int(0, 8), 'abcv1/%.-_~!$&\'()*+,;=:@')).join('/')}`, wellFormed: true }
    case 4: return { target: rng.pick(['http://gateway/v1/models', 'http://[', 'http://a:b@/x', '*', '//v1/models', '/v1/models#frag']), wellFormed: true }
    case 5: return { target: `/${rng.text(rng.int(9000, 20_000))}`, wellFormed: false } // past Node's header limit
    case 6: return { target: `${path}${rng.pick([' x', '\t', '\u0001', '\u007f'])}`, wellFormed: false }
    default: return { target: path, wellFormed: true }
  }
}

/** One raw HTTP request at the gateway, `key` being its API key: half of them reach the generating endpoints' checks. */
export function httpCase (rng: Rng, key: string): HttpCase {
  if (rng.chance(0.5)) return generationRequest(rng, key)
  const route = rng.pick(ROUTES)
  const method = rng.chance(0.05) ? rng.text(rng.int(1, 8), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ') : route.body !== undefined && rng.chance(0.7) ? 'POST' : rng.pick(METHODS)
  const { target: path, wellFormed: targetOk } = target(rng, route.path)
  const sendsBody = method !== 'GET' && method !== 'HEAD' ? rng.chance(0.9) : rng.chance(0.1)
  const payload = sendsBody ? body(rng, route) : { text: new Uint8Array(0), what: 'no body' }
  const headers: string[] = ['Host: 127.0.0.1', 'Connection: close']
  const auth = rng.int(0, 9)
  if (auth < 7) headers.push(`Authorization: Bearer ${key}`)
  else if (auth === 7) headers.push(`Authorization: ${rng.pick(['Bearer', 'Basic abc', `bearer ${key}x`, rng.text(40)])}`)
  if (rng.chance(0.8)) headers.push(`Content-Type: ${rng.pick(['application/json', 'text/plain', 'application/json; charset=latin1', 'multipart/form-data', rng.text(10)])}`)
  for (let i = rng.int(0, 3); i > 0; i--) headers.push(`${rng.text(rng.int(1, 12), 'abcdefghijklmnopqrstuvwxyz-')}: ${rng.text(rng.int(0, 40), 'abcdefghijklmnopqrstuvwxyz0123456789 ;=,./')}`)
  let framing = 'content-length'
  let framingOk = true
  let bodyBytes = payload.text
  switch (rng.int(0, 9)) {
    case 0: { // a length that lies, or is no number
      const lie = rng.pick([String(payload.text.byteLength + 10), String(Math.max(0, payload.text.byteLength - 5)), '-1', 'abc', '1e3', `${payload.text.byteLength}, 7`])
      headers.push(`Content-Length: ${lie}`)
      framing = `content-length ${lie}`
      framingOk = false
      break
    }
    case 1: { // chunked, well or badly
      headers.push('Transfer-Encoding: chunked')
      const good = rng.chance(0.6)
      const ascii = (text: string): Uint8Array => new TextEncoder().encode(text)
      if (good) { // one chunk (none for an empty body), then the last
        const chunk = payload.text.byteLength > 0 ? concat([ascii(`${payload.text.byteLength.toString(16)}\r\n`), payload.text, ascii('\r\n')]) : new Uint8Array(0)
        bodyBytes = concat([chunk, ascii('0\r\n\r\n')])
      } else {
        bodyBytes = concat([ascii(`${rng.pick(['zz', '-1', 'fffffffffffffff', ''])}\r\n`), payload.text, ascii('\r\n')])
      }
      framing = good ? 'chunked' : 'bad chunked'
      framingOk = good
      break
    }
    case 2: {
      if (rng.chance(0.5)) headers.push(`X-Bad: ${rng.pick(['a\u0001b', 'caf\u00e9', 'x\u007fy'])}`)
      else headers.push(`${rng.pick(['Bad Header', 'x(y)', ''])}: value`)
      framing = 'a malformed header'
      framingOk = false
      if (payload.text.byteLength > 0 || sendsBody) headers.push(`Content-Length: ${payload.text.byteLength}`)
      break
    }
    default:
      if (payload.text.byteLength > 0 || sendsBody) headers.push(`Content-Length: ${payload.text.byteLength}`)
  }
  // One byte per character (é goes as Latin-1), as a careless client would send it.
  const head = Uint8Array.from(`${method} ${path} HTTP/1.1\r\n${headers.join('\r\n')}\r\n\r\n`, c => c.charCodeAt(0) & 0xff)
  return {
    what: `${method} ${path.slice(0, 60)}${path.length > 60 ? '...' : ''} (${payload.what}, ${framing})`,
    bytes: concat([head, bodyBytes]),
    wellFormed: targetOk && framingOk && METHODS.includes(method),
    method
  }
}

function concat (parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let offset = 0
  for (const part of parts) { out.set(part, offset); offset += part.byteLength }
  return out
}
