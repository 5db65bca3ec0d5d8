import { decodeMessage, encodeMessage, MaxLengthError, message, streamMessage } from 'protons-runtime'
import type { Codec, DecodeOptions } from 'protons-runtime'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface ReachabilityRequest {
  addrs: Uint8Array<ArrayBuffer>[]
}

export namespace ReachabilityRequest {
  let _codec: Codec<ReachabilityRequest>

  export const codec = (): Codec<ReachabilityRequest> => {
    if (_codec == null) {
      _codec = message<ReachabilityRequest>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.addrs != null && obj.addrs.length > 0) {
          for (const value of obj.addrs) {
            w.uint32(10)
            w.bytes(value)
          }
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          addrs: []
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              if (opts.limits?.addrs != null && obj.addrs.length === opts.limits.addrs) {
                throw new MaxLengthError('Decode error - repeated field "addrs" had too many elements')
              }

              obj.addrs.push(reader.bytes())
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
          addrs: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              if (opts.limits?.addrs != null && obj.addrs === opts.limits.addrs) {
                throw new MaxLengthError('Streaming decode error - repeated field "addrs" had too many elements')
              }

              yield {
                field: `${prefix}.addrs[]`,
                index: obj.addrs,
                value: reader.bytes()
              }

              obj.addrs++

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

  export interface ReachabilityRequestAddrsFieldEvent {
    field: '$.addrs[]'
    index: number
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<ReachabilityRequest>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, ReachabilityRequest.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ReachabilityRequest>): ReachabilityRequest {
    return decodeMessage(buf, ReachabilityRequest.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ReachabilityRequest>): Generator<ReachabilityRequestAddrsFieldEvent> {
    return streamMessage(buf, ReachabilityRequest.codec(), opts)
  }
}

export interface ReachabilityResponse {
  reachable: boolean
  detail: string
}

export namespace ReachabilityResponse {
  let _codec: Codec<ReachabilityResponse>

  export const codec = (): Codec<ReachabilityResponse> => {
    if (_codec == null) {
      _codec = message<ReachabilityResponse>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.reachable != null && obj.reachable !== false)) {
          w.uint32(8)
          w.bool(obj.reachable)
        }

        if ((obj.detail != null && obj.detail !== '')) {
          w.uint32(18)
          w.string(obj.detail)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          reachable: false,
          detail: ''
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.reachable = reader.bool()
              break
            }
            case 2: {
              obj.detail = reader.string()
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
                field: `${prefix}.reachable`,
                value: reader.bool()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.detail`,
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

  export interface ReachabilityResponseReachableFieldEvent {
    field: '$.reachable'
    value: boolean
  }

  export interface ReachabilityResponseDetailFieldEvent {
    field: '$.detail'
    value: string
  }

  export function encode (obj: Partial<ReachabilityResponse>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, ReachabilityResponse.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ReachabilityResponse>): ReachabilityResponse {
    return decodeMessage(buf, ReachabilityResponse.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ReachabilityResponse>): Generator<ReachabilityResponseReachableFieldEvent | ReachabilityResponseDetailFieldEvent> {
    return streamMessage(buf, ReachabilityResponse.codec(), opts)
  }
}
