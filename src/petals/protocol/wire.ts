// The block protocols on the wire: their ids, the frame size bound, the errors a frame carries, and
// the tensor codec. Hidden states travel as raw little-endian bytes in the span's compute dtype
// (fp32, or bf16/fp16 for half-precision models), never as JSON.

import type { Stream } from '@libp2p/interface'
import { FrameStream } from '../../p2p/frames.js'
import { fromFloat32, toFloat32, DTYPE_BYTES, type DType } from '../../inference/dtype.js'
import { ErrorCode, WireDType, type Tensor } from './messages.js'

export { ErrorCode, Info, InfoRequest, Request, Response, WireDType, type Tensor } from './messages.js'

export const INFERENCE_PROTOCOL = '/bmrt/inference/1.0.0'
export const FORWARD_PROTOCOL = '/bmrt/forward/1.0.0'
export const INFO_PROTOCOL = '/bmrt/info/1.0.0'
/** Evidence against a server, handed to and fetched from servers of the same blocks (server/disputes.ts). */
export const EVIDENCE_PROTOCOL = '/bmrt/evidence/1.0.0'
/**
 * An evidence frame's bound: a session's inputs in one frame, e.g. 1024 tokens of a 4096-wide
 * model in bf16 (8 MiB) with their receipts. Evidence of longer sessions is not handed on.
 */
export const MAX_EVIDENCE_FRAME_BYTES = 16 << 20

/**
 * The most tensor bytes one frame carries. Longer steps (prefills) are split into steps of fewer
 * tokens, so a frame never exceeds this and a receiver never buffers more (libp2p's own default
 * cap is 4 MiB).
 */
export const MAX_TENSOR_BYTES = 4 << 20
/** Frame limit: the tensor plus room for the protobuf header. */
export const MAX_FRAME_BYTES = MAX_TENSOR_BYTES + 4096

/** A block protocol stream: frames of at most MAX_FRAME_BYTES (or `maxFrameBytes`). */
export function openFrames (stream: Stream, maxFrameBytes = MAX_FRAME_BYTES): FrameStream {
  return new FrameStream(stream, maxFrameBytes)
}

/** The error a peer sent in an error frame (or that we send in one). */
export class ProtocolError extends Error {
  constructor (readonly code: ErrorCode, message: string) {
    super(message)
    this.name = 'ProtocolError'
  }
}

/** A shape a peer sent, for an error message: its first dimensions only. */
function shapeText (shape: readonly number[]): string {
  return shape.length <= 4 ? `[${shape.join(', ')}]` : `[${shape.slice(0, 4).join(', ')}, ... (${shape.length} dimensions)]`
}

// The protobuf enum's names of the dtypes: the one place the wire's spelling meets bmrt's.
const TO_WIRE: Record<DType, WireDType> = { f32: WireDType.F32, bf16: WireDType.BF16, f16: WireDType.F16 }
const FROM_WIRE: Record<WireDType, DType> = { [WireDType.F32]: 'f32', [WireDType.BF16]: 'bf16', [WireDType.F16]: 'f16' }

export function toWireDType (dtype: DType): WireDType {
  return TO_WIRE[dtype]
}

/** A peer's WireDType as a DType: a value the enum lacks is a ProtocolError(BAD_REQUEST). */
export function fromWireDType (dtype: WireDType): DType {
  if (!Object.hasOwn(FROM_WIRE, dtype)) throw new ProtocolError(ErrorCode.BAD_REQUEST, `unknown tensor dtype ${String(dtype)}`)
  return FROM_WIRE[dtype]
}

/** How a checkpoint's activations travel by default: in its own dtype (fp32 when it does not say). */
export function modelWireDType (checkpointDType: DType | null): DType {
  return checkpointDType ?? 'f32'
}

/** Encodes fp32 hidden states [batch, tokens, hidden] for the wire. */
export function encodeHidden (values: Float32Array, shape: readonly [number, number, number], dtype: DType): Tensor {
  if (values.length !== shape[0] * shape[1] * shape[2]) throw new Error(`tensor of ${values.length} values does not have shape [${shape.join(', ')}]`)
  return { dtype: toWireDType(dtype), shape: [...shape], data: fromFloat32(values, dtype) as Uint8Array<ArrayBuffer> }
}

/**
 * Decodes hidden states from the wire, checking everything a peer could get wrong: the dtype, a
 * [batch, tokens, hidden] shape with the expected batch and hidden size, the byte count, and
 * finite values. Throws a ProtocolError(BAD_REQUEST) saying what was wrong.
 */
export function decodeHidden (tensor: Tensor | undefined, expected: { batch: number, hidden: number }): { values: Float32Array, tokens: number } {
  const bad = (message: string): ProtocolError => new ProtocolError(ErrorCode.BAD_REQUEST, message)
  if (tensor === undefined) throw bad('the step carries no hidden states')
  const { shape, data } = tensor
  const dtype = fromWireDType(tensor.dtype)
  if (shape.length !== 3) throw bad(`hidden states must have shape [batch, tokens, hidden], got ${shapeText(shape)}`)
  const [batch, tokens, hidden] = shape
  if (batch !== expected.batch) throw bad(`batch of ${batch} sequences, but the session was opened with ${expected.batch}`)
  if (hidden !== expected.hidden) throw bad(`hidden size ${hidden}, but the model's is ${expected.hidden}`)
  if (tokens < 1) throw bad('a step needs at least one token')
  const bytes = batch * tokens * hidden * DTYPE_BYTES[dtype]
  if (data.byteLength !== bytes) throw bad(`shape ${shapeText(shape)} in ${tensor.dtype} needs ${bytes} bytes, the frame has ${data.byteLength}`)
  const values = toFloat32(data, dtype)
  if (!fitsWireDType(values, 'f32')) throw bad('hidden states contain NaN or infinite values')
  return { values, tokens }
}

/** The largest magnitude each wire dtype carries; anything larger arrives as an infinity. */
const WIRE_MAX: Record<DType, number> = { f32: 3.4028234663852886e38, bf16: 3.3895313892515355e38, f16: 65504 }

/** Whether every value is finite and stays finite encoded in `dtype`. */
export function fitsWireDType (values: Float32Array, dtype: DType): boolean {
  const max = WIRE_MAX[dtype]
  for (let i = 0; i < values.length; i++) {
    if (!(Math.abs(values[i]) <= max)) return false // NaN fails this too
  }
  return true
}
