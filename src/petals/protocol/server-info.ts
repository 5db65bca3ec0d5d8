// What a server says about itself in its span records' `info` (Petals' ServerInfo,
// petals/data_structures.py): one type, one writer (the server's announcements) and one parser
// (routing, block selection and the swarm monitor read every announcement through it). A peer may
// announce anything, so the parser reads field by field and drops what does not fit.

import { isDType, type DType, type WeightFormat } from '../../inference/dtype.js'

/** The longest session a bmrt-node accepts by default (`--inference-max-length`, Petals' 8192). */
export const DEFAULT_INFERENCE_MAX_LENGTH = 8192

/** Petals' `quant_type`: how the weights were quantised at load time. */
export type Quant = 'none' | 'int8' | 'int4'

const QUANTS: readonly Quant[] = ['none', 'int8', 'int4']

/** A server's announced details. A field that is absent was not said (or was garbage). */
export interface ServerInfo {
  /** bmrt's version */
  version?: string
  /** the name an operator gave the server (--public-name) */
  publicName?: string
  /** the dtype the blocks compute in (the checkpoint's when quantised), Petals' torch_dtype */
  dtype?: DType
  quant?: Quant
  /** Petals' "rps": the throughput block selection and forward routing weigh servers by */
  throughput?: number
  /** decode speed, tokens per second per block (positive) */
  inferenceRps?: number
  /** prefill speed, tokens per second per block */
  forwardRps?: number
  /** what the network carries, tokens per second */
  networkRps?: number
  /** reachable only through a relay */
  usingRelay?: boolean
  /** the longest session a client may open, tokens (a positive integer) */
  inferenceMaxLength?: number
  /**
   * tokens per block a new session could still reserve; absent: unlimited, as Petals treats a
   * missing cache_tokens_left. A negative count reads as 0, "none left" (the conservative reading).
   */
  cacheTokensLeft?: number
  /** the server's own round trips to likely next servers, seconds (Petals' next_pings) */
  nextPings?: Record<string, number>
  /**
   * servers (peer ids) whose evidence this server checked on its own blocks and found wrong; it
   * sends the evidence to whoever asks (EVIDENCE_PROTOCOL), and a client checks it before acting
   */
  disproven?: string[]
}

/** The most servers one announcement may name as disproven; the rest of a longer list is not read. */
export const MAX_DISPROVEN = 32

const FIELDS = ['version', 'publicName', 'dtype', 'quant', 'throughput', 'inferenceRps', 'forwardRps', 'networkRps',
  'usingRelay', 'inferenceMaxLength', 'cacheTokensLeft', 'nextPings', 'disproven'] as const satisfies ReadonlyArray<keyof ServerInfo>

/** `info` as a span record carries it: a JSON-ready object without the fields not said. */
export function serverInfoRecord (info: ServerInfo): Record<string, unknown> {
  const record: Record<string, unknown> = {}
  for (const field of FIELDS) {
    if (info[field] !== undefined) record[field] = info[field]
  }
  return record
}

/**
 * Reads a span record's `info`. Each field is checked on its own: a wrong type, NaN, an infinity or
 * a negative number reads as not said, rather than letting a garbage announcement look fast or
 * roomy; the rest of the announcement still counts.
 */
export function parseServerInfo (value: unknown): ServerInfo {
  const raw = isPlainObject(value) ? value : {}
  const info: ServerInfo = {}
  if (typeof raw.version === 'string') info.version = raw.version
  if (typeof raw.publicName === 'string') info.publicName = raw.publicName
  if (isDType(raw.dtype)) info.dtype = raw.dtype
  if ((QUANTS as readonly unknown[]).includes(raw.quant)) info.quant = raw.quant as Quant
  const throughput = nonNegative(raw.throughput)
  if (throughput !== undefined) info.throughput = throughput
  // routing divides by it, so 0 is not said either
  const inferenceRps = nonNegative(raw.inferenceRps)
  if (inferenceRps !== undefined && inferenceRps > 0) info.inferenceRps = inferenceRps
  const forwardRps = nonNegative(raw.forwardRps)
  if (forwardRps !== undefined) info.forwardRps = forwardRps
  const networkRps = nonNegative(raw.networkRps)
  if (networkRps !== undefined) info.networkRps = networkRps
  if (typeof raw.usingRelay === 'boolean') info.usingRelay = raw.usingRelay
  if (Number.isSafeInteger(raw.inferenceMaxLength) && (raw.inferenceMaxLength as number) > 0) info.inferenceMaxLength = raw.inferenceMaxLength as number
  if (typeof raw.cacheTokensLeft === 'number' && Number.isFinite(raw.cacheTokensLeft)) info.cacheTokensLeft = Math.max(0, raw.cacheTokensLeft)
  if (isPlainObject(raw.nextPings)) info.nextPings = pingsOf(raw.nextPings)
  if (Array.isArray(raw.disproven)) info.disproven = raw.disproven.slice(0, MAX_DISPROVEN).filter((p): p is string => typeof p === 'string' && p.length > 0 && p.length <= 128)
  return info
}

/**
 * Petals' `dtype` and `quant` fields of a server that stores its weights as `format` (undefined:
 * the checkpoint's dtype) from a checkpoint in `checkpointDType` (null: f32). Quantised weights
 * compute in the checkpoint's dtype.
 */
export function formatInfo (format: WeightFormat | undefined, checkpointDType: DType | null): { dtype: DType, quant: Quant } {
  if (format === 'int8' || format === 'int4') return { dtype: checkpointDType ?? 'f32', quant: format }
  return { dtype: format ?? checkpointDType ?? 'f32', quant: 'none' }
}

/** The weight format a server's `dtype` and `quant` describe (formatInfo's inverse); undefined when it says neither. */
export function weightFormat (info: Pick<ServerInfo, 'dtype' | 'quant'>): WeightFormat | undefined {
  return info.quant !== undefined && info.quant !== 'none' ? info.quant : info.dtype
}

function isPlainObject (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

function nonNegative (value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined
}

function pingsOf (value: Record<string, unknown>): Record<string, number> {
  const pings: Record<string, number> = {}
  for (const [peer, rtt] of Object.entries(value)) {
    const seconds = nonNegative(rtt)
    if (seconds !== undefined) pings[peer] = seconds
  }
  return pings
}
