// Protobuf messages on a libp2p stream, one length-prefixed frame each, with a bound on the frame
// size that holds before a byte is buffered. Which messages, and which bound, is the protocol's
// business (src/petals/protocol/wire.ts, reachability.ts); a frame the peer got wrong is a
// BadFrameError.

import { StreamCloseEvent, type AbortOptions, type Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { Uint8ArrayList } from 'uint8arraylist'

/** A frame the peer got wrong: too large, cut short, or not a message of the expected type. */
export class BadFrameError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'BadFrameError'
  }
}

export interface Codec<T> {
  encode: (message: T) => Uint8Array
  decode: (bytes: Uint8Array | Uint8ArrayList) => T
}

/**
 * Protobuf messages on a stream, one length-prefixed frame each, at most `maxFrameBytes`. A frame
 * that is too large or does not decode, and a stream that ends inside a frame, are the peer's fault
 * (BadFrameError); the peer closing its side between frames reads as null; anything else means the
 * stream itself broke.
 */
export class FrameStream {
  /** bytes the peer has sent so far, whole frames or not */
  received = 0
  /** bytes of the whole frames read so far, length prefixes included */
  consumed = 0
  private readonly frames: LengthPrefixedStream<Stream>

  /** @param maxFrameBytes the largest frame accepted, in bytes */
  constructor (readonly stream: Stream, readonly maxFrameBytes: number) {
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
      if (err instanceof BadFrameError) throw err
      if (name === 'UnexpectedEOFError') {
        if (this.received === this.consumed) return null
        throw new BadFrameError(`the stream ended inside a frame (${this.received - this.consumed} bytes of it arrived): send whole frames`)
      }
      if (name === 'InvalidDataLengthError' || name === 'InvalidDataLengthLengthError' || name === 'InvalidMessageLengthError') {
        throw new BadFrameError(`frame too large: at most ${this.maxFrameBytes} bytes per frame (split long steps)`)
      }
      throw closedError(err)
    }
    this.consumed += varintLength(frame.byteLength) + frame.byteLength
    try {
      return codec.decode(frame)
    } catch (err) {
      throw new BadFrameError(`malformed frame: ${(err as Error).message}`)
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
      throw new BadFrameError(`frame too large: its length prefix runs past ${maxPrefixBytes} bytes, and frames have at most ${maxFrameBytes} bytes`)
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
