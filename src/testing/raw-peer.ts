// A peer that speaks the block protocols by hand, frame by frame: the hostile, greedy or broken
// clients of the tests (test/raw-peer.ts adds their assertions) and of bench/attack.ts.

import type { Stream } from '@libp2p/interface'
import { isMultiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { createNode, type BmrtNode } from '../p2p/node.js'
import type { FrameStream } from '../p2p/frames.js'
import { encodeHidden, INFERENCE_PROTOCOL, openFrames, WireDType, type Request, type Tensor } from '../petals/protocol/wire.js'
import type { BlockServer } from '../petals/server/server.js'

/** The bundled model's hidden size. */
export const BUNDLED_HIDDEN = 64

export class RawPeer {
  private constructor (readonly node: BmrtNode) {}

  /** A libp2p node of its own (its own peer id), listening nowhere. */
  static async start (): Promise<RawPeer> {
    return new RawPeer(await createNode({ role: 'client' }))
  }

  /** Opens a stream of `protocol` to an in-process server or to an address (a bmrt-node process's). */
  async dial (target: BlockServer | Multiaddr, protocol = INFERENCE_PROTOCOL): Promise<{ stream: Stream, frames: FrameStream }> {
    const address = isMultiaddr(target) ? target : target.node.getMultiaddrs()[0]
    const stream = await this.node.dialProtocol(address, protocol)
    return { stream, frames: openFrames(stream) }
  }

  async stop (): Promise<void> {
    await this.node.stop()
  }
}

/** An Open frame for the whole bundled model, with `overrides`. */
export function openRequest (model: string, overrides: Partial<NonNullable<Request['open']>> = {}): Request {
  return { open: { model, start: 0, end: 5, maxLength: 32, batch: 1, dtype: WireDType.F32, ...overrides } }
}

/** fp32 hidden states of `shape` (default [1, tokens, 64]), every value `fill`. */
export function hiddenTensor (tokens: number, fill = 0.5, shape: [number, number, number] = [1, tokens, BUNDLED_HIDDEN]): Tensor {
  return encodeHidden(new Float32Array(shape[0] * shape[1] * shape[2]).fill(fill), shape, 'f32')
}
