import { decodeMessage, encodeMessage, enumeration, MaxLengthError, message, streamMessage } from 'protons-runtime'
import { alloc as uint8ArrayAlloc } from 'uint8arrays/alloc'
import type { Codec, DecodeOptions } from 'protons-runtime'
import type { Uint8ArrayList } from 'uint8arraylist'

export enum WireDType {
  F32 = 'F32',
  BF16 = 'BF16',
  F16 = 'F16'
}

enum __WireDTypeValues {
  F32 = 0,
  BF16 = 1,
  F16 = 2
}

export namespace WireDType {
  export const codec = (): Codec<WireDType> => {
    return enumeration<WireDType>(__WireDTypeValues)
  }
}

export interface Tensor {
  dtype: WireDType
  shape: number[]
  data: Uint8Array<ArrayBuffer>
}

export namespace Tensor {
  let _codec: Codec<Tensor>

  export const codec = (): Codec<Tensor> => {
    if (_codec == null) {
      _codec = message<Tensor>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.dtype != null && __WireDTypeValues[obj.dtype] !== 0) {
          w.uint32(8)
          WireDType.codec().encode(obj.dtype, w)
        }

        if (obj.shape != null && obj.shape.length > 0) {
          for (const value of obj.shape) {
            w.uint32(16)
            w.uint32(value)
          }
        }

        if ((obj.data != null && obj.data.byteLength > 0)) {
          w.uint32(26)
          w.bytes(obj.data)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          dtype: WireDType.F32,
          shape: [],
          data: uint8ArrayAlloc(0)
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.dtype = WireDType.codec().decode(reader)
              break
            }
            case 2: {
              if (opts.limits?.shape != null && obj.shape.length === opts.limits.shape) {
                throw new MaxLengthError('Decode error - repeated field "shape" had too many elements')
              }

              obj.shape.push(reader.uint32())
              break
            }
            case 3: {
              obj.data = reader.bytes()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const obj = {
          shape: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.dtype`,
                value: WireDType.codec().decode(reader)
              }
              break
            }
            case 2: {
              if (opts.limits?.shape != null && obj.shape === opts.limits.shape) {
                throw new MaxLengthError('Streaming decode error - repeated field "shape" had too many elements')
              }

              yield {
                field: `${prefix}.shape[]`,
                index: obj.shape,
                value: reader.uint32()
              }

              obj.shape++

              break
            }
            case 3: {
              yield {
                field: `${prefix}.data`,
                value: reader.bytes()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface TensorDtypeFieldEvent {
    field: '$.dtype'
    value: WireDType
  }

  export interface TensorShapeFieldEvent {
    field: '$.shape[]'
    index: number
    value: number
  }

  export interface TensorDataFieldEvent {
    field: '$.data'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<Tensor>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Tensor.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Tensor>): Tensor {
    return decodeMessage(buf, Tensor.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Tensor>): Generator<TensorDtypeFieldEvent | TensorShapeFieldEvent | TensorDataFieldEvent> {
    return streamMessage(buf, Tensor.codec(), opts)
  }
}

export interface Open {
  model: string
  start: number
  end: number
  maxLength: number
  batch: number
  dtype?: WireDType
  session?: Uint8Array<ArrayBuffer>
}

export namespace Open {
  let _codec: Codec<Open>

  export const codec = (): Codec<Open> => {
    if (_codec == null) {
      _codec = message<Open>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.model != null && obj.model !== '')) {
          w.uint32(10)
          w.string(obj.model)
        }

        if ((obj.start != null && obj.start !== 0)) {
          w.uint32(16)
          w.uint32(obj.start)
        }

        if ((obj.end != null && obj.end !== 0)) {
          w.uint32(24)
          w.uint32(obj.end)
        }

        if ((obj.maxLength != null && obj.maxLength !== 0)) {
          w.uint32(32)
          w.uint32(obj.maxLength)
        }

        if ((obj.batch != null && obj.batch !== 0)) {
          w.uint32(40)
          w.uint32(obj.batch)
        }

        if (obj.dtype != null) {
          w.uint32(48)
          WireDType.codec().encode(obj.dtype, w)
        }

        if (obj.session != null) {
          w.uint32(58)
          w.bytes(obj.session)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          model: '',
          start: 0,
          end: 0,
          maxLength: 0,
          batch: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.model = reader.string()
              break
            }
            case 2: {
              obj.start = reader.uint32()
              break
            }
            case 3: {
              obj.end = reader.uint32()
              break
            }
            case 4: {
              obj.maxLength = reader.uint32()
              break
            }
            case 5: {
              obj.batch = reader.uint32()
              break
            }
            case 6: {
              obj.dtype = WireDType.codec().decode(reader)
              break
            }
            case 7: {
              obj.session = reader.bytes()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.model`,
                value: reader.string()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.start`,
                value: reader.uint32()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.end`,
                value: reader.uint32()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.maxLength`,
                value: reader.uint32()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.batch`,
                value: reader.uint32()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.dtype`,
                value: WireDType.codec().decode(reader)
              }
              break
            }
            case 7: {
              yield {
                field: `${prefix}.session`,
                value: reader.bytes()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface OpenModelFieldEvent {
    field: '$.model'
    value: string
  }

  export interface OpenStartFieldEvent {
    field: '$.start'
    value: number
  }

  export interface OpenEndFieldEvent {
    field: '$.end'
    value: number
  }

  export interface OpenMaxLengthFieldEvent {
    field: '$.maxLength'
    value: number
  }

  export interface OpenBatchFieldEvent {
    field: '$.batch'
    value: number
  }

  export interface OpenDtypeFieldEvent {
    field: '$.dtype'
    value: WireDType
  }

  export interface OpenSessionFieldEvent {
    field: '$.session'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<Open>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Open.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Open>): Open {
    return decodeMessage(buf, Open.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Open>): Generator<OpenModelFieldEvent | OpenStartFieldEvent | OpenEndFieldEvent | OpenMaxLengthFieldEvent | OpenBatchFieldEvent | OpenDtypeFieldEvent | OpenSessionFieldEvent> {
    return streamMessage(buf, Open.codec(), opts)
  }
}

export interface Step {
  position?: number
  hidden?: Tensor
}

export namespace Step {
  let _codec: Codec<Step>

  export const codec = (): Codec<Step> => {
    if (_codec == null) {
      _codec = message<Step>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.position != null) {
          w.uint32(8)
          w.uint32(obj.position)
        }

        if (obj.hidden != null) {
          w.uint32(18)
          Tensor.codec().encode(obj.hidden, w)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {}

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.position = reader.uint32()
              break
            }
            case 2: {
              obj.hidden = Tensor.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.hidden
              })
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.position`,
                value: reader.uint32()
              }
              break
            }
            case 2: {
              yield * Tensor.codec().stream(reader, reader.uint32(), `${prefix}.hidden`, {
                limits: opts.limits?.hidden
              })

              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface StepPositionFieldEvent {
    field: '$.position'
    value: number
  }

  export interface StepHiddenDtypeFieldEvent {
    field: '$.hidden.dtype'
    value: WireDType
  }

  export interface StepHiddenShapeFieldEvent {
    field: '$.hidden.shape[]'
    index: number
    value: number
  }

  export interface StepHiddenDataFieldEvent {
    field: '$.hidden.data'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<Step>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Step.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Step>): Step {
    return decodeMessage(buf, Step.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Step>): Generator<StepPositionFieldEvent | StepHiddenDtypeFieldEvent | StepHiddenShapeFieldEvent | StepHiddenDataFieldEvent> {
    return streamMessage(buf, Step.codec(), opts)
  }
}

export interface Request {
  open?: Open
  step?: Step
}

export namespace Request {
  let _codec: Codec<Request>

  export const codec = (): Codec<Request> => {
    if (_codec == null) {
      _codec = message<Request>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.open != null) {
          w.uint32(10)
          Open.codec().encode(obj.open, w)
        }

        if (obj.step != null) {
          w.uint32(18)
          Step.codec().encode(obj.step, w)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {}

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.open = Open.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.open
              })
              break
            }
            case 2: {
              obj.step = Step.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.step
              })
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield * Open.codec().stream(reader, reader.uint32(), `${prefix}.open`, {
                limits: opts.limits?.open
              })

              break
            }
            case 2: {
              yield * Step.codec().stream(reader, reader.uint32(), `${prefix}.step`, {
                limits: opts.limits?.step
              })

              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface RequestOpenModelFieldEvent {
    field: '$.open.model'
    value: string
  }

  export interface RequestOpenStartFieldEvent {
    field: '$.open.start'
    value: number
  }

  export interface RequestOpenEndFieldEvent {
    field: '$.open.end'
    value: number
  }

  export interface RequestOpenMaxLengthFieldEvent {
    field: '$.open.maxLength'
    value: number
  }

  export interface RequestOpenBatchFieldEvent {
    field: '$.open.batch'
    value: number
  }

  export interface RequestOpenDtypeFieldEvent {
    field: '$.open.dtype'
    value: WireDType
  }

  export interface RequestOpenSessionFieldEvent {
    field: '$.open.session'
    value: Uint8Array<ArrayBuffer>
  }

  export interface RequestStepPositionFieldEvent {
    field: '$.step.position'
    value: number
  }

  export interface RequestStepHiddenDtypeFieldEvent {
    field: '$.step.hidden.dtype'
    value: WireDType
  }

  export interface RequestStepHiddenShapeFieldEvent {
    field: '$.step.hidden.shape[]'
    index: number
    value: number
  }

  export interface RequestStepHiddenDataFieldEvent {
    field: '$.step.hidden.data'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<Request>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Request.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Request>): Request {
    return decodeMessage(buf, Request.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Request>): Generator<RequestOpenModelFieldEvent | RequestOpenStartFieldEvent | RequestOpenEndFieldEvent | RequestOpenMaxLengthFieldEvent | RequestOpenBatchFieldEvent | RequestOpenDtypeFieldEvent | RequestOpenSessionFieldEvent | RequestStepPositionFieldEvent | RequestStepHiddenDtypeFieldEvent | RequestStepHiddenShapeFieldEvent | RequestStepHiddenDataFieldEvent> {
    return streamMessage(buf, Request.codec(), opts)
  }
}

export enum ErrorCode {
  INTERNAL = 'INTERNAL',
  BAD_REQUEST = 'BAD_REQUEST',
  NOT_SERVED = 'NOT_SERVED',
  CACHE_FULL = 'CACHE_FULL',
  TOO_LONG = 'TOO_LONG',
  TIMEOUT = 'TIMEOUT',
  SHUTTING_DOWN = 'SHUTTING_DOWN',
  PEER_LIMIT = 'PEER_LIMIT'
}

enum __ErrorCodeValues {
  INTERNAL = 0,
  BAD_REQUEST = 1,
  NOT_SERVED = 2,
  CACHE_FULL = 3,
  TOO_LONG = 4,
  TIMEOUT = 5,
  SHUTTING_DOWN = 6,
  PEER_LIMIT = 7
}

export namespace ErrorCode {
  export const codec = (): Codec<ErrorCode> => {
    return enumeration<ErrorCode>(__ErrorCodeValues)
  }
}

export interface Failure {
  code: ErrorCode
  message: string
}

export namespace Failure {
  let _codec: Codec<Failure>

  export const codec = (): Codec<Failure> => {
    if (_codec == null) {
      _codec = message<Failure>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.code != null && __ErrorCodeValues[obj.code] !== 0) {
          w.uint32(8)
          ErrorCode.codec().encode(obj.code, w)
        }

        if ((obj.message != null && obj.message !== '')) {
          w.uint32(18)
          w.string(obj.message)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          code: ErrorCode.INTERNAL,
          message: ''
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.code = ErrorCode.codec().decode(reader)
              break
            }
            case 2: {
              obj.message = reader.string()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.code`,
                value: ErrorCode.codec().decode(reader)
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.message`,
                value: reader.string()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface FailureCodeFieldEvent {
    field: '$.code'
    value: ErrorCode
  }

  export interface FailureMessageFieldEvent {
    field: '$.message'
    value: string
  }

  export function encode (obj: Partial<Failure>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Failure.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Failure>): Failure {
    return decodeMessage(buf, Failure.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Failure>): Generator<FailureCodeFieldEvent | FailureMessageFieldEvent> {
    return streamMessage(buf, Failure.codec(), opts)
  }
}

export interface Response {
  hidden?: Tensor
  error?: Failure
  receipt?: SignedReceipt
}

export namespace Response {
  let _codec: Codec<Response>

  export const codec = (): Codec<Response> => {
    if (_codec == null) {
      _codec = message<Response>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.hidden != null) {
          w.uint32(10)
          Tensor.codec().encode(obj.hidden, w)
        }

        if (obj.error != null) {
          w.uint32(18)
          Failure.codec().encode(obj.error, w)
        }

        if (obj.receipt != null) {
          w.uint32(26)
          SignedReceipt.codec().encode(obj.receipt, w)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {}

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.hidden = Tensor.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.hidden
              })
              break
            }
            case 2: {
              obj.error = Failure.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.error
              })
              break
            }
            case 3: {
              obj.receipt = SignedReceipt.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.receipt
              })
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield * Tensor.codec().stream(reader, reader.uint32(), `${prefix}.hidden`, {
                limits: opts.limits?.hidden
              })

              break
            }
            case 2: {
              yield * Failure.codec().stream(reader, reader.uint32(), `${prefix}.error`, {
                limits: opts.limits?.error
              })

              break
            }
            case 3: {
              yield * SignedReceipt.codec().stream(reader, reader.uint32(), `${prefix}.receipt`, {
                limits: opts.limits?.receipt
              })

              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface ResponseHiddenDtypeFieldEvent {
    field: '$.hidden.dtype'
    value: WireDType
  }

  export interface ResponseHiddenShapeFieldEvent {
    field: '$.hidden.shape[]'
    index: number
    value: number
  }

  export interface ResponseHiddenDataFieldEvent {
    field: '$.hidden.data'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ResponseErrorCodeFieldEvent {
    field: '$.error.code'
    value: ErrorCode
  }

  export interface ResponseErrorMessageFieldEvent {
    field: '$.error.message'
    value: string
  }

  export interface ResponseReceiptReceiptFieldEvent {
    field: '$.receipt.receipt'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ResponseReceiptSignatureFieldEvent {
    field: '$.receipt.signature'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<Response>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Response.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Response>): Response {
    return decodeMessage(buf, Response.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Response>): Generator<ResponseHiddenDtypeFieldEvent | ResponseHiddenShapeFieldEvent | ResponseHiddenDataFieldEvent | ResponseErrorCodeFieldEvent | ResponseErrorMessageFieldEvent | ResponseReceiptReceiptFieldEvent | ResponseReceiptSignatureFieldEvent> {
    return streamMessage(buf, Response.codec(), opts)
  }
}

export interface Receipt {
  model: string
  start: number
  end: number
  session: Uint8Array<ArrayBuffer>
  position: number
  tokens: number
  batch: number
  dtype: WireDType
  inputSha256: Uint8Array<ArrayBuffer>
  outputSha256: Uint8Array<ArrayBuffer>
  format: string
}

export namespace Receipt {
  let _codec: Codec<Receipt>

  export const codec = (): Codec<Receipt> => {
    if (_codec == null) {
      _codec = message<Receipt>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.model != null && obj.model !== '')) {
          w.uint32(10)
          w.string(obj.model)
        }

        if ((obj.start != null && obj.start !== 0)) {
          w.uint32(16)
          w.uint32(obj.start)
        }

        if ((obj.end != null && obj.end !== 0)) {
          w.uint32(24)
          w.uint32(obj.end)
        }

        if ((obj.session != null && obj.session.byteLength > 0)) {
          w.uint32(34)
          w.bytes(obj.session)
        }

        if ((obj.position != null && obj.position !== 0)) {
          w.uint32(40)
          w.uint32(obj.position)
        }

        if ((obj.tokens != null && obj.tokens !== 0)) {
          w.uint32(48)
          w.uint32(obj.tokens)
        }

        if ((obj.batch != null && obj.batch !== 0)) {
          w.uint32(56)
          w.uint32(obj.batch)
        }

        if (obj.dtype != null && __WireDTypeValues[obj.dtype] !== 0) {
          w.uint32(64)
          WireDType.codec().encode(obj.dtype, w)
        }

        if ((obj.inputSha256 != null && obj.inputSha256.byteLength > 0)) {
          w.uint32(74)
          w.bytes(obj.inputSha256)
        }

        if ((obj.outputSha256 != null && obj.outputSha256.byteLength > 0)) {
          w.uint32(82)
          w.bytes(obj.outputSha256)
        }

        if ((obj.format != null && obj.format !== '')) {
          w.uint32(90)
          w.string(obj.format)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          model: '',
          start: 0,
          end: 0,
          session: uint8ArrayAlloc(0),
          position: 0,
          tokens: 0,
          batch: 0,
          dtype: WireDType.F32,
          inputSha256: uint8ArrayAlloc(0),
          outputSha256: uint8ArrayAlloc(0),
          format: ''
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.model = reader.string()
              break
            }
            case 2: {
              obj.start = reader.uint32()
              break
            }
            case 3: {
              obj.end = reader.uint32()
              break
            }
            case 4: {
              obj.session = reader.bytes()
              break
            }
            case 5: {
              obj.position = reader.uint32()
              break
            }
            case 6: {
              obj.tokens = reader.uint32()
              break
            }
            case 7: {
              obj.batch = reader.uint32()
              break
            }
            case 8: {
              obj.dtype = WireDType.codec().decode(reader)
              break
            }
            case 9: {
              obj.inputSha256 = reader.bytes()
              break
            }
            case 10: {
              obj.outputSha256 = reader.bytes()
              break
            }
            case 11: {
              obj.format = reader.string()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.model`,
                value: reader.string()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.start`,
                value: reader.uint32()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.end`,
                value: reader.uint32()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.session`,
                value: reader.bytes()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.position`,
                value: reader.uint32()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.tokens`,
                value: reader.uint32()
              }
              break
            }
            case 7: {
              yield {
                field: `${prefix}.batch`,
                value: reader.uint32()
              }
              break
            }
            case 8: {
              yield {
                field: `${prefix}.dtype`,
                value: WireDType.codec().decode(reader)
              }
              break
            }
            case 9: {
              yield {
                field: `${prefix}.inputSha256`,
                value: reader.bytes()
              }
              break
            }
            case 10: {
              yield {
                field: `${prefix}.outputSha256`,
                value: reader.bytes()
              }
              break
            }
            case 11: {
              yield {
                field: `${prefix}.format`,
                value: reader.string()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface ReceiptModelFieldEvent {
    field: '$.model'
    value: string
  }

  export interface ReceiptStartFieldEvent {
    field: '$.start'
    value: number
  }

  export interface ReceiptEndFieldEvent {
    field: '$.end'
    value: number
  }

  export interface ReceiptSessionFieldEvent {
    field: '$.session'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ReceiptPositionFieldEvent {
    field: '$.position'
    value: number
  }

  export interface ReceiptTokensFieldEvent {
    field: '$.tokens'
    value: number
  }

  export interface ReceiptBatchFieldEvent {
    field: '$.batch'
    value: number
  }

  export interface ReceiptDtypeFieldEvent {
    field: '$.dtype'
    value: WireDType
  }

  export interface ReceiptInputSha256FieldEvent {
    field: '$.inputSha256'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ReceiptOutputSha256FieldEvent {
    field: '$.outputSha256'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ReceiptFormatFieldEvent {
    field: '$.format'
    value: string
  }

  export function encode (obj: Partial<Receipt>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Receipt.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Receipt>): Receipt {
    return decodeMessage(buf, Receipt.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Receipt>): Generator<ReceiptModelFieldEvent | ReceiptStartFieldEvent | ReceiptEndFieldEvent | ReceiptSessionFieldEvent | ReceiptPositionFieldEvent | ReceiptTokensFieldEvent | ReceiptBatchFieldEvent | ReceiptDtypeFieldEvent | ReceiptInputSha256FieldEvent | ReceiptOutputSha256FieldEvent | ReceiptFormatFieldEvent> {
    return streamMessage(buf, Receipt.codec(), opts)
  }
}

export interface SignedReceipt {
  receipt: Uint8Array<ArrayBuffer>
  signature: Uint8Array<ArrayBuffer>
}

export namespace SignedReceipt {
  let _codec: Codec<SignedReceipt>

  export const codec = (): Codec<SignedReceipt> => {
    if (_codec == null) {
      _codec = message<SignedReceipt>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.receipt != null && obj.receipt.byteLength > 0)) {
          w.uint32(10)
          w.bytes(obj.receipt)
        }

        if ((obj.signature != null && obj.signature.byteLength > 0)) {
          w.uint32(18)
          w.bytes(obj.signature)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          receipt: uint8ArrayAlloc(0),
          signature: uint8ArrayAlloc(0)
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.receipt = reader.bytes()
              break
            }
            case 2: {
              obj.signature = reader.bytes()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.receipt`,
                value: reader.bytes()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.signature`,
                value: reader.bytes()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface SignedReceiptReceiptFieldEvent {
    field: '$.receipt'
    value: Uint8Array<ArrayBuffer>
  }

  export interface SignedReceiptSignatureFieldEvent {
    field: '$.signature'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<SignedReceipt>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, SignedReceipt.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<SignedReceipt>): SignedReceipt {
    return decodeMessage(buf, SignedReceipt.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<SignedReceipt>): Generator<SignedReceiptReceiptFieldEvent | SignedReceiptSignatureFieldEvent> {
    return streamMessage(buf, SignedReceipt.codec(), opts)
  }
}

export interface Evidence {
  steps: EvidenceStep[]
}

export namespace Evidence {
  let _codec: Codec<Evidence>

  export const codec = (): Codec<Evidence> => {
    if (_codec == null) {
      _codec = message<Evidence>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.steps != null && obj.steps.length > 0) {
          for (const value of obj.steps) {
            w.uint32(10)
            EvidenceStep.codec().encode(value, w)
          }
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          steps: []
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              if (opts.limits?.steps != null && obj.steps.length === opts.limits.steps) {
                throw new MaxLengthError('Decode error - repeated field "steps" had too many elements')
              }

              obj.steps.push(EvidenceStep.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.steps$
              }))
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const obj = {
          steps: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              if (opts.limits?.steps != null && obj.steps === opts.limits.steps) {
                throw new MaxLengthError('Streaming decode error - repeated field "steps" had too many elements')
              }

              for (const evt of EvidenceStep.codec().stream(reader, reader.uint32(), `${prefix}.steps[]`, {
                limits: opts.limits?.steps$
              })) {
                yield {
                  ...evt,
                  index: obj.steps
                }
              }

              obj.steps++

              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface EvidenceStepsReceiptReceiptFieldEvent {
    field: '$.steps[].receipt.receipt'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface EvidenceStepsReceiptSignatureFieldEvent {
    field: '$.steps[].receipt.signature'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface EvidenceStepsInputFieldEvent {
    field: '$.steps[].input'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface EvidenceStepsOutputFieldEvent {
    field: '$.steps[].output'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export function encode (obj: Partial<Evidence>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Evidence.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Evidence>): Evidence {
    return decodeMessage(buf, Evidence.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Evidence>): Generator<EvidenceStepsReceiptReceiptFieldEvent | EvidenceStepsReceiptSignatureFieldEvent | EvidenceStepsInputFieldEvent | EvidenceStepsOutputFieldEvent> {
    return streamMessage(buf, Evidence.codec(), opts)
  }
}

export interface EvidenceStep {
  receipt?: SignedReceipt
  input: Uint8Array<ArrayBuffer>
  output?: Uint8Array<ArrayBuffer>
}

export namespace EvidenceStep {
  let _codec: Codec<EvidenceStep>

  export const codec = (): Codec<EvidenceStep> => {
    if (_codec == null) {
      _codec = message<EvidenceStep>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.receipt != null) {
          w.uint32(10)
          SignedReceipt.codec().encode(obj.receipt, w)
        }

        if ((obj.input != null && obj.input.byteLength > 0)) {
          w.uint32(18)
          w.bytes(obj.input)
        }

        if (obj.output != null) {
          w.uint32(26)
          w.bytes(obj.output)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          input: uint8ArrayAlloc(0)
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.receipt = SignedReceipt.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.receipt
              })
              break
            }
            case 2: {
              obj.input = reader.bytes()
              break
            }
            case 3: {
              obj.output = reader.bytes()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield * SignedReceipt.codec().stream(reader, reader.uint32(), `${prefix}.receipt`, {
                limits: opts.limits?.receipt
              })

              break
            }
            case 2: {
              yield {
                field: `${prefix}.input`,
                value: reader.bytes()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.output`,
                value: reader.bytes()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface EvidenceStepReceiptReceiptFieldEvent {
    field: '$.receipt.receipt'
    value: Uint8Array<ArrayBuffer>
  }

  export interface EvidenceStepReceiptSignatureFieldEvent {
    field: '$.receipt.signature'
    value: Uint8Array<ArrayBuffer>
  }

  export interface EvidenceStepInputFieldEvent {
    field: '$.input'
    value: Uint8Array<ArrayBuffer>
  }

  export interface EvidenceStepOutputFieldEvent {
    field: '$.output'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<EvidenceStep>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, EvidenceStep.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<EvidenceStep>): EvidenceStep {
    return decodeMessage(buf, EvidenceStep.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<EvidenceStep>): Generator<EvidenceStepReceiptReceiptFieldEvent | EvidenceStepReceiptSignatureFieldEvent | EvidenceStepInputFieldEvent | EvidenceStepOutputFieldEvent> {
    return streamMessage(buf, EvidenceStep.codec(), opts)
  }
}

export interface EvidenceRequest {
  model: string
  accused: string
  evidence?: Evidence
}

export namespace EvidenceRequest {
  let _codec: Codec<EvidenceRequest>

  export const codec = (): Codec<EvidenceRequest> => {
    if (_codec == null) {
      _codec = message<EvidenceRequest>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.model != null && obj.model !== '')) {
          w.uint32(10)
          w.string(obj.model)
        }

        if ((obj.accused != null && obj.accused !== '')) {
          w.uint32(18)
          w.string(obj.accused)
        }

        if (obj.evidence != null) {
          w.uint32(26)
          Evidence.codec().encode(obj.evidence, w)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          model: '',
          accused: ''
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.model = reader.string()
              break
            }
            case 2: {
              obj.accused = reader.string()
              break
            }
            case 3: {
              obj.evidence = Evidence.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.evidence
              })
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.model`,
                value: reader.string()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.accused`,
                value: reader.string()
              }
              break
            }
            case 3: {
              yield * Evidence.codec().stream(reader, reader.uint32(), `${prefix}.evidence`, {
                limits: opts.limits?.evidence
              })

              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface EvidenceRequestModelFieldEvent {
    field: '$.model'
    value: string
  }

  export interface EvidenceRequestAccusedFieldEvent {
    field: '$.accused'
    value: string
  }

  export interface EvidenceRequestEvidenceStepsReceiptReceiptFieldEvent {
    field: '$.evidence.steps[].receipt.receipt'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface EvidenceRequestEvidenceStepsReceiptSignatureFieldEvent {
    field: '$.evidence.steps[].receipt.signature'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface EvidenceRequestEvidenceStepsInputFieldEvent {
    field: '$.evidence.steps[].input'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface EvidenceRequestEvidenceStepsOutputFieldEvent {
    field: '$.evidence.steps[].output'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export function encode (obj: Partial<EvidenceRequest>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, EvidenceRequest.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<EvidenceRequest>): EvidenceRequest {
    return decodeMessage(buf, EvidenceRequest.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<EvidenceRequest>): Generator<EvidenceRequestModelFieldEvent | EvidenceRequestAccusedFieldEvent | EvidenceRequestEvidenceStepsReceiptReceiptFieldEvent | EvidenceRequestEvidenceStepsReceiptSignatureFieldEvent | EvidenceRequestEvidenceStepsInputFieldEvent | EvidenceRequestEvidenceStepsOutputFieldEvent> {
    return streamMessage(buf, EvidenceRequest.codec(), opts)
  }
}

export interface EvidenceResponse {
  evidence?: Evidence
  verdict?: EvidenceVerdict
  error?: string
}

export namespace EvidenceResponse {
  let _codec: Codec<EvidenceResponse>

  export const codec = (): Codec<EvidenceResponse> => {
    if (_codec == null) {
      _codec = message<EvidenceResponse>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.evidence != null) {
          w.uint32(10)
          Evidence.codec().encode(obj.evidence, w)
        }

        if (obj.verdict != null) {
          w.uint32(18)
          EvidenceVerdict.codec().encode(obj.verdict, w)
        }

        if (obj.error != null) {
          w.uint32(26)
          w.string(obj.error)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {}

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.evidence = Evidence.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.evidence
              })
              break
            }
            case 2: {
              obj.verdict = EvidenceVerdict.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.verdict
              })
              break
            }
            case 3: {
              obj.error = reader.string()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield * Evidence.codec().stream(reader, reader.uint32(), `${prefix}.evidence`, {
                limits: opts.limits?.evidence
              })

              break
            }
            case 2: {
              yield * EvidenceVerdict.codec().stream(reader, reader.uint32(), `${prefix}.verdict`, {
                limits: opts.limits?.verdict
              })

              break
            }
            case 3: {
              yield {
                field: `${prefix}.error`,
                value: reader.string()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface EvidenceResponseEvidenceStepsReceiptReceiptFieldEvent {
    field: '$.evidence.steps[].receipt.receipt'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface EvidenceResponseEvidenceStepsReceiptSignatureFieldEvent {
    field: '$.evidence.steps[].receipt.signature'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface EvidenceResponseEvidenceStepsInputFieldEvent {
    field: '$.evidence.steps[].input'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface EvidenceResponseEvidenceStepsOutputFieldEvent {
    field: '$.evidence.steps[].output'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface EvidenceResponseVerdictWrongFieldEvent {
    field: '$.verdict.wrong'
    value: boolean
  }

  export interface EvidenceResponseVerdictDistanceFieldEvent {
    field: '$.verdict.distance'
    value: number
  }

  export interface EvidenceResponseVerdictToleranceFieldEvent {
    field: '$.verdict.tolerance'
    value: number
  }

  export interface EvidenceResponseErrorFieldEvent {
    field: '$.error'
    value: string
  }

  export function encode (obj: Partial<EvidenceResponse>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, EvidenceResponse.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<EvidenceResponse>): EvidenceResponse {
    return decodeMessage(buf, EvidenceResponse.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<EvidenceResponse>): Generator<EvidenceResponseEvidenceStepsReceiptReceiptFieldEvent | EvidenceResponseEvidenceStepsReceiptSignatureFieldEvent | EvidenceResponseEvidenceStepsInputFieldEvent | EvidenceResponseEvidenceStepsOutputFieldEvent | EvidenceResponseVerdictWrongFieldEvent | EvidenceResponseVerdictDistanceFieldEvent | EvidenceResponseVerdictToleranceFieldEvent | EvidenceResponseErrorFieldEvent> {
    return streamMessage(buf, EvidenceResponse.codec(), opts)
  }
}

export interface EvidenceVerdict {
  wrong: boolean
  distance: number
  tolerance: number
}

export namespace EvidenceVerdict {
  let _codec: Codec<EvidenceVerdict>

  export const codec = (): Codec<EvidenceVerdict> => {
    if (_codec == null) {
      _codec = message<EvidenceVerdict>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.wrong != null && obj.wrong !== false)) {
          w.uint32(8)
          w.bool(obj.wrong)
        }

        if ((obj.distance != null && obj.distance !== 0)) {
          w.uint32(17)
          w.double(obj.distance)
        }

        if ((obj.tolerance != null && obj.tolerance !== 0)) {
          w.uint32(25)
          w.double(obj.tolerance)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          wrong: false,
          distance: 0,
          tolerance: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.wrong = reader.bool()
              break
            }
            case 2: {
              obj.distance = reader.double()
              break
            }
            case 3: {
              obj.tolerance = reader.double()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.wrong`,
                value: reader.bool()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.distance`,
                value: reader.double()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.tolerance`,
                value: reader.double()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface EvidenceVerdictWrongFieldEvent {
    field: '$.wrong'
    value: boolean
  }

  export interface EvidenceVerdictDistanceFieldEvent {
    field: '$.distance'
    value: number
  }

  export interface EvidenceVerdictToleranceFieldEvent {
    field: '$.tolerance'
    value: number
  }

  export function encode (obj: Partial<EvidenceVerdict>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, EvidenceVerdict.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<EvidenceVerdict>): EvidenceVerdict {
    return decodeMessage(buf, EvidenceVerdict.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<EvidenceVerdict>): Generator<EvidenceVerdictWrongFieldEvent | EvidenceVerdictDistanceFieldEvent | EvidenceVerdictToleranceFieldEvent> {
    return streamMessage(buf, EvidenceVerdict.codec(), opts)
  }
}

export interface InfoRequest {
  model: string
}

export namespace InfoRequest {
  let _codec: Codec<InfoRequest>

  export const codec = (): Codec<InfoRequest> => {
    if (_codec == null) {
      _codec = message<InfoRequest>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.model != null && obj.model !== '')) {
          w.uint32(10)
          w.string(obj.model)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          model: ''
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.model = reader.string()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.model`,
                value: reader.string()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface InfoRequestModelFieldEvent {
    field: '$.model'
    value: string
  }

  export function encode (obj: Partial<InfoRequest>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, InfoRequest.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<InfoRequest>): InfoRequest {
    return decodeMessage(buf, InfoRequest.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<InfoRequest>): Generator<InfoRequestModelFieldEvent> {
    return streamMessage(buf, InfoRequest.codec(), opts)
  }
}

export interface Info {
  version: string
  model: string
  start: number
  end: number
  dtype: WireDType
  backend: string
  inferenceMaxLength: number
  cacheTokensLeft?: number
  sessions: number
  state: string
}

export namespace Info {
  let _codec: Codec<Info>

  export const codec = (): Codec<Info> => {
    if (_codec == null) {
      _codec = message<Info>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.version != null && obj.version !== '')) {
          w.uint32(10)
          w.string(obj.version)
        }

        if ((obj.model != null && obj.model !== '')) {
          w.uint32(18)
          w.string(obj.model)
        }

        if ((obj.start != null && obj.start !== 0)) {
          w.uint32(24)
          w.uint32(obj.start)
        }

        if ((obj.end != null && obj.end !== 0)) {
          w.uint32(32)
          w.uint32(obj.end)
        }

        if (obj.dtype != null && __WireDTypeValues[obj.dtype] !== 0) {
          w.uint32(40)
          WireDType.codec().encode(obj.dtype, w)
        }

        if ((obj.backend != null && obj.backend !== '')) {
          w.uint32(50)
          w.string(obj.backend)
        }

        if ((obj.inferenceMaxLength != null && obj.inferenceMaxLength !== 0)) {
          w.uint32(56)
          w.uint32(obj.inferenceMaxLength)
        }

        if (obj.cacheTokensLeft != null) {
          w.uint32(64)
          w.uint32(obj.cacheTokensLeft)
        }

        if ((obj.sessions != null && obj.sessions !== 0)) {
          w.uint32(72)
          w.uint32(obj.sessions)
        }

        if ((obj.state != null && obj.state !== '')) {
          w.uint32(82)
          w.string(obj.state)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          version: '',
          model: '',
          start: 0,
          end: 0,
          dtype: WireDType.F32,
          backend: '',
          inferenceMaxLength: 0,
          sessions: 0,
          state: ''
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.version = reader.string()
              break
            }
            case 2: {
              obj.model = reader.string()
              break
            }
            case 3: {
              obj.start = reader.uint32()
              break
            }
            case 4: {
              obj.end = reader.uint32()
              break
            }
            case 5: {
              obj.dtype = WireDType.codec().decode(reader)
              break
            }
            case 6: {
              obj.backend = reader.string()
              break
            }
            case 7: {
              obj.inferenceMaxLength = reader.uint32()
              break
            }
            case 8: {
              obj.cacheTokensLeft = reader.uint32()
              break
            }
            case 9: {
              obj.sessions = reader.uint32()
              break
            }
            case 10: {
              obj.state = reader.string()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.version`,
                value: reader.string()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.model`,
                value: reader.string()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.start`,
                value: reader.uint32()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.end`,
                value: reader.uint32()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.dtype`,
                value: WireDType.codec().decode(reader)
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.backend`,
                value: reader.string()
              }
              break
            }
            case 7: {
              yield {
                field: `${prefix}.inferenceMaxLength`,
                value: reader.uint32()
              }
              break
            }
            case 8: {
              yield {
                field: `${prefix}.cacheTokensLeft`,
                value: reader.uint32()
              }
              break
            }
            case 9: {
              yield {
                field: `${prefix}.sessions`,
                value: reader.uint32()
              }
              break
            }
            case 10: {
              yield {
                field: `${prefix}.state`,
                value: reader.string()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface InfoVersionFieldEvent {
    field: '$.version'
    value: string
  }

  export interface InfoModelFieldEvent {
    field: '$.model'
    value: string
  }

  export interface InfoStartFieldEvent {
    field: '$.start'
    value: number
  }

  export interface InfoEndFieldEvent {
    field: '$.end'
    value: number
  }

  export interface InfoDtypeFieldEvent {
    field: '$.dtype'
    value: WireDType
  }

  export interface InfoBackendFieldEvent {
    field: '$.backend'
    value: string
  }

  export interface InfoInferenceMaxLengthFieldEvent {
    field: '$.inferenceMaxLength'
    value: number
  }

  export interface InfoCacheTokensLeftFieldEvent {
    field: '$.cacheTokensLeft'
    value: number
  }

  export interface InfoSessionsFieldEvent {
    field: '$.sessions'
    value: number
  }

  export interface InfoStateFieldEvent {
    field: '$.state'
    value: string
  }

  export function encode (obj: Partial<Info>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Info.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Info>): Info {
    return decodeMessage(buf, Info.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Info>): Generator<InfoVersionFieldEvent | InfoModelFieldEvent | InfoStartFieldEvent | InfoEndFieldEvent | InfoDtypeFieldEvent | InfoBackendFieldEvent | InfoInferenceMaxLengthFieldEvent | InfoCacheTokensLeftFieldEvent | InfoSessionsFieldEvent | InfoStateFieldEvent> {
    return streamMessage(buf, Info.codec(), opts)
  }
}
