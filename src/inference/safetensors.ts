// safetensors files: an 8-byte little-endian header length, a JSON header naming each tensor's
// dtype, shape and byte range, then the raw data. We read the header once and each tensor with one
// positioned read, so a server that holds blocks 10..20 never reads another block's bytes.

import { open, type FileHandle } from 'node:fs/promises'
import { basename } from 'node:path'
import { DTYPE_BYTES, type DType } from './dtype.js'

export interface TensorInfo {
  name: string
  dtype: DType
  shape: number[]
  /** byte offset of the data from the start of the file */
  offset: number
  byteLength: number
}

export interface RawTensor {
  info: TensorInfo
  bytes: Uint8Array
}

/** Largest header we accept: real checkpoints have headers of a few hundred KiB. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024

/** An open safetensors file. Counts the bytes it reads so callers can prove what they touched. */
export class SafetensorsFile {
  readonly path: string
  readonly tensors: ReadonlyMap<string, TensorInfo>
  readonly metadata: Readonly<Record<string, string>>
  /** bytes read so far: the header and every tensor read */
  bytesRead: number
  private readonly handle: FileHandle
  private readonly fileSize: number

  private constructor (path: string, handle: FileHandle, fileSize: number, tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>, headerBytes: number) {
    this.path = path
    this.handle = handle
    this.fileSize = fileSize
    this.tensors = tensors
    this.metadata = metadata
    this.bytesRead = headerBytes
  }

  static async open (path: string): Promise<SafetensorsFile> {
    let handle: FileHandle
    try {
      handle = await open(path, 'r')
    } catch (err) {
      throw new Error(`cannot open ${path}: ${(err as Error).message}`)
    }
    try {
      const fileSize = (await handle.stat()).size
      const name = basename(path)
      if (fileSize < 8) throw new Error(`${path}: not a safetensors file (only ${fileSize} bytes)`)
      const lengthBytes = Buffer.alloc(8)
      await handle.read(lengthBytes, 0, 8, 0)
      const headerLength = Number(lengthBytes.readBigUInt64LE(0))
      if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > fileSize) {
        throw new Error(`${path}: header length ${headerLength} does not fit in a ${fileSize}-byte file (truncated or not safetensors)`)
      }
      const headerBytes = Buffer.alloc(headerLength)
      await handle.read(headerBytes, 0, headerLength, 8)
      let header: unknown
      try {
        header = JSON.parse(headerBytes.toString('utf8'))
      } catch {
        throw new Error(`${path}: the safetensors header is not valid JSON (corrupt file?)`)
      }
      const { tensors, metadata } = parseHeader(header, name, 8 + headerLength)
      return new SafetensorsFile(path, handle, fileSize, tensors, metadata, 8 + headerLength)
    } catch (err) {
      await handle.close()
      throw err
    }
  }

  /** Throws unless the file really holds the bytes of tensor `info` (a truncated download does not). */
  checkInFile (info: TensorInfo): void {
    if (info.offset + info.byteLength > this.fileSize) {
      throw new Error(`${this.path}: tensor '${info.name}' needs bytes ${info.offset}..${info.offset + info.byteLength} but the file has only ${this.fileSize} (truncated download?)`)
    }
  }

  /** Reads one tensor's raw bytes, checking that the file really holds them. */
  async read (name: string): Promise<RawTensor> {
    const info = this.tensors.get(name)
    if (info === undefined) throw new Error(`${this.path}: no tensor '${name}'`)
    this.checkInFile(info)
    const bytes = new Uint8Array(info.byteLength)
    let done = 0
    while (done < info.byteLength) {
      const { bytesRead } = await this.handle.read(bytes, done, info.byteLength - done, info.offset + done)
      if (bytesRead === 0) throw new Error(`${this.path}: tensor '${name}' ends early (file changed while reading?)`)
      done += bytesRead
    }
    this.bytesRead += info.byteLength
    return { info, bytes }
  }

  async close (): Promise<void> {
    await this.handle.close()
  }
}

/** safetensors' names of the dtypes bmrt reads, the one place they are spelled this way. */
const SAFETENSORS_DTYPES: Record<string, DType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' }
const SAFETENSORS_NAMES: Record<DType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16' }

function parseHeader (header: unknown, file: string, dataStart: number): { tensors: Map<string, TensorInfo>, metadata: Record<string, string> } {
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new Error(`${file}: the safetensors header is not a JSON object`)
  }
  const tensors = new Map<string, TensorInfo>()
  let metadata: Record<string, string> = {}
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = (entry ?? {}) as Record<string, string>
      continue
    }
    const e = entry as { dtype?: unknown, shape?: unknown, data_offsets?: unknown }
    const dtype = typeof e?.dtype === 'string' && Object.hasOwn(SAFETENSORS_DTYPES, e.dtype) ? SAFETENSORS_DTYPES[e.dtype] : undefined
    if (dtype === undefined) {
      throw new Error(`${file}: tensor '${name}' has dtype ${JSON.stringify(e?.dtype)}; bmrt reads F32, F16 and BF16 checkpoints`)
    }
    const shape = e.shape
    if (!Array.isArray(shape) || !shape.every(d => Number.isSafeInteger(d) && d >= 0)) {
      throw new Error(`${file}: tensor '${name}' has a malformed shape ${JSON.stringify(shape)}`)
    }
    const offsets = e.data_offsets
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(o => Number.isSafeInteger(o) && o >= 0) || offsets[1] < offsets[0]) {
      throw new Error(`${file}: tensor '${name}' has malformed data_offsets ${JSON.stringify(offsets)}`)
    }
    const byteLength = offsets[1] - offsets[0]
    const expected = shape.reduce((a: number, b: number) => a * b, 1) * DTYPE_BYTES[dtype]
    if (byteLength !== expected) {
      throw new Error(`${file}: tensor '${name}' spans ${byteLength} bytes but shape ${JSON.stringify(shape)} of ${String(e.dtype)} needs ${expected}`)
    }
    tensors.set(name, { name, dtype, shape: shape as number[], offset: dataStart + offsets[0], byteLength })
  }
  return { tensors, metadata }
}

export interface TensorToWrite {
  name: string
  dtype: DType
  shape: number[]
  /** the raw bytes, or a function that makes them when the writer gets to this tensor */
  bytes: Uint8Array | (() => Promise<Uint8Array>)
}

/**
 * Writes tensors as one safetensors file (used by the test-model maker). Tensors given as
 * functions are made one at a time while the file is written, so a checkpoint of many GB never
 * sits in memory whole.
 */
export async function writeSafetensors (path: string, tensors: TensorToWrite[], metadata: Record<string, string> = {}): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: metadata }
  let offset = 0
  for (const t of tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1) * (DTYPE_BYTES[t.dtype] ?? 1)
    const byteLength = t.bytes instanceof Uint8Array ? t.bytes.byteLength : size
    header[t.name] = { dtype: SAFETENSORS_NAMES[t.dtype] ?? t.dtype, shape: t.shape, data_offsets: [offset, offset + byteLength] }
    offset += byteLength
  }
  let json = JSON.stringify(header)
  json += ' '.repeat((8 - (json.length % 8)) % 8) // keep the data 8-byte aligned, as the reference writer does
  const headerBytes = Buffer.from(json, 'utf8')
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(BigInt(headerBytes.length))
  const file = await open(path, 'w')
  try {
    await file.write(Buffer.concat([length, headerBytes]))
    for (const t of tensors) {
      const bytes = t.bytes instanceof Uint8Array ? t.bytes : await t.bytes()
      const [start, end] = (header[t.name] as { data_offsets: [number, number] }).data_offsets
      if (bytes.byteLength !== end - start) throw new Error(`tensor '${t.name}' has ${bytes.byteLength} bytes, its shape and dtype need ${end - start}`)
      await file.write(bytes)
    }
  } finally {
    await file.close()
  }
}
