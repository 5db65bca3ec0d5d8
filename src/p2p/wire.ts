// The block protocols on the wire: their ids, the frame size bound, protobuf-framed streams, and
// the tensor codec. Hidden states travel as raw little-endian bytes in the span's compute dtype
// (fp32, or bf16/fp16 for half-precision models), never as JSON.

import { StreamCloseEvent, type AbortOptions, type Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { Uint8ArrayList } from 'uint8arraylist'
import { fromFloat32, toFloat32, DTYPE_BYTES, type DType } from '../inference/dtype.js'
import { ErrorCode, WireDType, type Tensor } from './messages.js'

export { ErrorCode, Info, InfoRequest, Request, Response, WireDType, type Tensor } from './messages.js'

export const INFERENCE_PROTOCOL = '/bmrt/inference/1.0.0'
export const FORWARD_PROTOCOL = '/bmrt/forward/1.0.0'
export const INFO_PROTOCOL = '/bmrt/info/1.0.0'

/**
 * The most tensor bytes one frame carries. Longer steps (prefills) are split into steps of fewer
 * tokens, so a frame never exceeds this and a receiver never buffers more (libp2p's own default
 * cap is 4 MiB).
 */
export const MAX_TENSOR_BYTES = 4 << 20
/** Frame limit: the tensor plus room for the protobuf header. */
export const MAX_FRAME_BYTES = MAX_TENSOR_BYTES + 4096

/** The error a peer sent in an error frame (or that we send in one). */
export class ProtocolError extends Error {
  constructor (readonly code: ErrorCode, message: string) {
    super(message)
    this.name = 'ProtocolError'
  }
}

export interface Codec<T> {
  encode: (message: T) => Uint8Array
  decode: (bytes: Uint8Array | Uint8ArrayList) => T
}

export interface FrameStreamOptions {
  /** the largest frame accepted, in bytes (default MAX_FRAME_BYTES) */
  maxFrameBytes?: number
}

/**
 * Protobuf messages on a stream, one length-prefixed frame each, at most MAX_FRAME_BYTES. A frame
 * that is too large or does not decode, and a stream that ends inside a frame, are the peer's fault
 * (ProtocolError BAD_REQUEST); the peer closing its side between frames reads as null; anything
 * else means the stream itself broke.
 */
export class FrameStream {
  /** bytes the peer has sent so far, whole frames or not */
  received = 0
  /** bytes of the whole frames read so far, length prefixes included */
  consumed = 0
  private readonly frames: LengthPrefixedStream<Stream>
  private readonly maxFrameBytes: number

  constructor (readonly stream: Stream, options: FrameStreamOptions = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES
    // Counted before the reader below buffers them, so `received` is never behind what it holds.
    stream.addEventListener('message', event => { this.received += event.data.byteLength })
    this.frames = lpStream(stream, {
      maxDataLength: this.maxFrameBytes,
      maxBufferSize: 2 * this.maxFrameBytes,
      lengthDecoder: boundedLengthDecoder(varintLength(this.maxFrameBytes), this.maxFrameBytes)
    })
  }

  async read<T> (codec: Codec<T>, options?: AbortOptions): Promise<T | null> {
    let frame: Uint8ArrayList
    try {
      frame = await this.frames.read(options)
    } catch (err) {
      const name = (err as Error).name
      if (err instanceof ProtocolError) throw err
      if (name === 'UnexpectedEOFError') {
        if (this.received === this.consumed) return null
        throw new ProtocolError(ErrorCode.BAD_REQUEST, `the stream ended inside a frame (${this.received - this.consumed} bytes of it arrived): send whole frames`)
      }
      if (name === 'InvalidDataLengthError' || name === 'InvalidDataLengthLengthError' || name === 'InvalidMessageLengthError') {
        throw new ProtocolError(ErrorCode.BAD_REQUEST, `frame too large: at most ${this.maxFrameBytes} bytes per frame (split long steps)`)
      }
      throw closedError(err)
    }
    this.consumed += varintLength(frame.byteLength) + frame.byteLength
    try {
      return codec.decode(frame)
    } catch (err) {
      throw new ProtocolError(ErrorCode.BAD_REQUEST, `malformed frame: ${(err as Error).message}`)
    }
  }

  async write<T> (codec: Codec<T>, message: T, options?: AbortOptions): Promise<void> {
    try {
      await this.frames.write(codec.encode(message), options)
    } catch (err) {
      throw closedError(err)
    }
  }

  /**
   * Stops reading for good: what the peer has sent and not been read, and whatever it still
   * sends, is dropped as it arrives instead of buffered. For a session that is over.
   */
  discardInput (): void {
    try {
      this.frames.unwrap() // hands unread bytes back to the stream, which dispatches them to the listener above
    } catch {
      // the stream's readable end is closed already: nothing more will come
    }
  }
}

/** A string a peer sent, cut short for an error message (a peer's input is not ours to echo in full). */
export function clip (text: string, max = 64): string {
  return text.length <= max ? text : `${text.slice(0, max)}... (${text.length} characters)`
}

/** A shape a peer sent, for an error message: its first dimensions only. */
function shapeText (shape: readonly number[]): string {
  return shape.length <= 4 ? `[${shape.join(', ')}]` : `[${shape.slice(0, 4).join(', ')}, ... (${shape.length} dimensions)]`
}

/**
 * Decodes a frame's length prefix (an unsigned varint) for lpStream, refusing one longer than the
 * largest frame needs. lpStream's own decoder reads on, a byte at a time and without end, while the
 * varint is unfinished: a peer sending endless continuation bytes kept a server parsing and
 * buffering them (16 MiB of 0x80 grew the heap by 135 MiB).
 */
function boundedLengthDecoder (maxPrefixBytes: number, maxFrameBytes: number): (prefix: Uint8ArrayList) => number {
  return prefix => {
    let value = 0
    let scale = 1
    for (let i = 0; i < prefix.byteLength; i++) {
      const byte = prefix.get(i)
      value += (byte & 0x7f) * scale
      if (byte < 0x80) return value
      scale *= 0x80
    }
    if (prefix.byteLength >= maxPrefixBytes) {
      throw new ProtocolError(ErrorCode.BAD_REQUEST, `frame too large: its length prefix runs past ${maxPrefixBytes} bytes, and frames have at most ${maxFrameBytes} bytes`)
    }
    throw new RangeError('unfinished varint') // lpStream's signal to read one more byte
  }
}

/** Bytes of the unsigned varint that prefixes a frame of `n` bytes. */
function varintLength (n: number): number {
  let bytes = 1
  while (n >= 0x80) { n = Math.floor(n / 0x80); bytes++ }
  return bytes
}

/**
 * A stream that closes under a pending read or write (its connection died) rejects it with the
 * close event itself, which has no message; this makes it an error that says what happened.
 */
function closedError (err: unknown): unknown {
  if (!(err instanceof StreamCloseEvent)) return err
  return err.error ?? new Error(`the stream was closed ${err.local === true ? 'here' : 'by the other side'}`)
}

// WireDType's values are the storage dtype names ('F32', 'BF16', 'F16').
function storage (dtype: WireDType): DType {
  return dtype as unknown as DType
}

/** How a checkpoint's activations travel by default: in its own dtype (fp32 when it does not say). */
export function modelWireDType (checkpointDType: DType | null): WireDType {
  return checkpointDType === null ? WireDType.F32 : checkpointDType as unknown as WireDType
}

export function wireDTypeBytes (dtype: WireDType): number {
  return DTYPE_BYTES[storage(dtype)]
}

/** Parses names people type (f32, bf16, fp16...) into a wire dtype. */
export function parseWireDType (name: string): WireDType {
  const key = name.trim().toLowerCase()
  if (['f32', 'fp32', 'float32'].includes(key)) return WireDType.F32
  if (['bf16', 'bfloat16'].includes(key)) return WireDType.BF16
  if (['f16', 'fp16', 'float16'].includes(key)) return WireDType.F16
  throw new Error(`unknown wire dtype '${name}': use f32, bf16 or f16`)
}

/** Encodes fp32 hidden states [batch, tokens, hidden] for the wire. */
export function encodeHidden (values: Float32Array, shape: readonly [number, number, number], dtype: WireDType): Tensor {
  if (values.length !== shape[0] * shape[1] * shape[2]) throw new Error(`tensor of ${values.length} values does not have shape [${shape.join(', ')}]`)
  return { dtype, shape: [...shape], data: fromFloat32(values, storage(dtype)) as Uint8Array<ArrayBuffer> }
}

/**
 * Decodes hidden states from the wire, checking everything a peer could get wrong: the dtype, a
 * [batch, tokens, hidden] shape with the expected batch and hidden size, the byte count, and
 * finite values. Throws a ProtocolError(BAD_REQUEST) saying what was wrong.
 */
export function decodeHidden (tensor: Tensor | undefined, expected: { batch: number, hidden: number }): { values: Float32Array, tokens: number } {
  const bad = (message: string): ProtocolError => new ProtocolError(ErrorCode.BAD_REQUEST, message)
  if (tensor === undefined) throw bad('the step carries no hidden states')
  const { shape, dtype, data } = tensor
  if (!Object.values(WireDType).includes(dtype)) throw bad(`unknown tensor dtype ${String(dtype)}`)
  if (shape.length !== 3) throw bad(`hidden states must have shape [batch, tokens, hidden], got ${shapeText(shape)}`)
  const [batch, tokens, hidden] = shape
  if (batch !== expected.batch) throw bad(`batch of ${batch} sequences, but the session was opened with ${expected.batch}`)
  if (hidden !== expected.hidden) throw bad(`hidden size ${hidden}, but the model's is ${expected.hidden}`)
  if (tokens < 1) throw bad('a step needs at least one token')
  const bytes = batch * tokens * hidden * wireDTypeBytes(dtype)
  if (data.byteLength !== bytes) throw bad(`shape ${shapeText(shape)} in ${dtype} needs ${bytes} bytes, the frame has ${data.byteLength}`)
  const values = toFloat32(data, storage(dtype))
  if (!fitsWireDType(values, WireDType.F32)) throw bad('hidden states contain NaN or infinite values')
  return { values, tokens }
}

/** The largest magnitude each wire dtype carries; anything larger arrives as an infinity. */
const WIRE_MAX: Record<DType, number> = { F32: 3.4028234663852886e38, BF16: 3.3895313892515355e38, F16: 65504 }

/** Whether every value is finite and stays finite encoded in `dtype`. */
export function fitsWireDType (values: Float32Array, dtype: WireDType): boolean {
  const max = WIRE_MAX[storage(dtype)]
  for (let i = 0; i < values.length; i++) {
    if (!(Math.abs(values[i]) <= max)) return false // NaN fails this too
  }
  return true
}
