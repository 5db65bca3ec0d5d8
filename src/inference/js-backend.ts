// The JS reference backend: a Llama decoder written as plainly as we can, in fp32 with
// double-precision accumulation. It runs anywhere and is the oracle the native addon is tested
// against, so clarity beats speed here.

import type { BlockRange, BlockSpan, ModelHead, SpanStep, TensorReader } from './backend.js'
import { checkSpan, type ModelConfig } from './config.js'
import { tensorNames } from './checkpoint.js'
import { layerTensors, type LayerTensorSuffix } from './llama-layout.js'
import { applyRope, ropeAngles, ropeInverseFrequencies } from './rope.js'
import { checkCacheTokens, SessionTable, type TableSession } from './session-table.js'

interface LayerWeights {
  inputNorm: Float32Array
  q: Float32Array; k: Float32Array; v: Float32Array; o: Float32Array
  qBias?: Float32Array; kBias?: Float32Array; vBias?: Float32Array; oBias?: Float32Array
  postAttentionNorm: Float32Array
  gate: Float32Array; up: Float32Array; down: Float32Array
  gateBias?: Float32Array; upBias?: Float32Array; downBias?: Float32Array
}

interface Session extends TableSession {
  /** per block it runs: [maxLength, numKvHeads * headDim] */
  keys: Float32Array[]
  values: Float32Array[]
}

export interface JsSpanOptions {
  /** hears of each block loaded */
  onBlock?: (block: number) => void
  /** cache tokens per block, Petals' attn_cache_tokens (default 0: no limit); see BlockSpan */
  maxCacheTokens?: number
}

/** Reads the weights of blocks [start, end) and nothing else (from a checkpoint, or dummy ones). */
export async function loadJsSpan (checkpoint: TensorReader, config: ModelConfig, start: number, end: number,
  options: JsSpanOptions = {}): Promise<BlockSpan> {
  checkSpan(config, start, end)
  const maxCacheTokens = checkCacheTokens(options.maxCacheTokens ?? 0)
  const layers: LayerWeights[] = []
  for (let i = start; i < end; i++) {
    const t: Partial<Record<LayerTensorSuffix, Float32Array>> = {}
    for (const tensor of layerTensors(config, i)) {
      if (tensor.present) t[tensor.suffix] = await checkpoint.readFloat32(tensor.name, tensor.shape)
    }
    layers.push({
      inputNorm: t['input_layernorm.weight']!,
      q: t['self_attn.q_proj.weight']!,
      k: t['self_attn.k_proj.weight']!,
      v: t['self_attn.v_proj.weight']!,
      o: t['self_attn.o_proj.weight']!,
      postAttentionNorm: t['post_attention_layernorm.weight']!,
      gate: t['mlp.gate_proj.weight']!,
      up: t['mlp.up_proj.weight']!,
      down: t['mlp.down_proj.weight']!,
      qBias: t['self_attn.q_proj.bias'],
      kBias: t['self_attn.k_proj.bias'],
      vBias: t['self_attn.v_proj.bias'],
      oBias: t['self_attn.o_proj.bias'],
      gateBias: t['mlp.gate_proj.bias'],
      upBias: t['mlp.up_proj.bias'],
      downBias: t['mlp.down_proj.bias']
    })
    options.onBlock?.(i)
  }
  return new JsBlockSpan(config, start, end, layers, maxCacheTokens)
}

class JsBlockSpan implements BlockSpan {
  readonly backend = 'js'
  readonly config: ModelConfig
  readonly start: number
  readonly end: number
  readonly weightBytes: number
  readonly cacheBytesPerToken: number
  private layers: LayerWeights[]
  private readonly inverseFrequencies: Float32Array
  private readonly sessions: SessionTable<Session>

  constructor (config: ModelConfig, start: number, end: number, layers: LayerWeights[], maxCacheTokens: number) {
    this.config = config
    this.start = start
    this.end = end
    this.layers = layers
    this.inverseFrequencies = ropeInverseFrequencies(config)
    this.weightBytes = layers.reduce((sum, layer) => sum + Object.values(layer).reduce((s, t?: Float32Array) => s + (t?.byteLength ?? 0), 0), 0)
    this.cacheBytesPerToken = layers.length * 2 * config.numKvHeads * config.headDim * 4
    this.sessions = new SessionTable(this, config.hiddenSize, maxCacheTokens)
  }

  openSession (maxLength: number, blocks?: BlockRange): number {
    return this.sessions.open(maxLength, blocks, session => {
      const cache = (): Float32Array[] => Array.from({ length: session.end - session.start },
        () => new Float32Array(maxLength * this.config.numKvHeads * this.config.headDim))
      return { ...session, keys: cache(), values: cache() }
    })
  }

  sessionLength (session: number): number {
    return this.sessions.get(session).length
  }

  closeSession (session: number): void {
    this.sessions.close(session)
  }

  cacheUsage (): { sessions: number, reserved: number, limit: number } {
    return this.sessions.usage()
  }

  close (): void {
    this.sessions.clear()
    this.layers = []
  }

  async forward (session: number, hidden: Float32Array, position?: number): Promise<Float32Array> {
    const [out] = await this.forwardBatch([{ session, hidden, position }])
    return out
  }

  /** A plain loop over the steps, after checking them all, so a bad step leaves every session as it was. */
  async forwardBatch (steps: SpanStep[]): Promise<Float32Array[]> {
    const checked = this.sessions.checkBatch(steps)
    return await this.sessions.running(checked, async () => {
      const outputs: Float32Array[] = []
      for (const { id, session, hidden, n, start } of checked) {
        session.length = start
        const x = Float32Array.from(hidden)
        for (let l = 0; l < session.keys.length; l++) {
          this.layer(this.layers[session.start - this.start + l], session.keys[l], session.values[l], x, n, start)
          // Yield between layers so a long forward never starves the event loop for its whole span.
          await new Promise(resolve => setImmediate(resolve))
          if (!this.sessions.has(id)) throw new Error(`session ${id} was closed during a step`)
        }
        session.length = start + n
        outputs.push(x)
      }
      return outputs
    })
  }

  /** One decoder block on x ([n, hidden], updated in place) at positions start..start+n-1. */
  private layer (w: LayerWeights, keyCache: Float32Array, valueCache: Float32Array, x: Float32Array, n: number, start: number): void {
    const { hiddenSize: h, intermediateSize: inter, numHeads, numKvHeads, headDim, rmsNormEps, slidingWindow } = this.config
    const qDim = numHeads * headDim
    const kvDim = numKvHeads * headDim
    const groupSize = numHeads / numKvHeads
    const scale = 1 / Math.sqrt(headDim)

    // Attention: project, rotate, append to the cache, attend over the cached prefix.
    const normed = rmsNorm(x, w.inputNorm, n, h, rmsNormEps)
    const q = linear(normed, w.q, w.qBias, n, h, qDim)
    const k = linear(normed, w.k, w.kBias, n, h, kvDim)
    const v = linear(normed, w.v, w.vBias, n, h, kvDim)
    for (let t = 0; t < n; t++) {
      const { cos, sin } = ropeAngles(this.inverseFrequencies, start + t)
      applyRope(q, t * qDim, numHeads, headDim, cos, sin)
      applyRope(k, t * kvDim, numKvHeads, headDim, cos, sin)
    }
    keyCache.set(k, start * kvDim)
    valueCache.set(v, start * kvDim)

    const attention = new Float32Array(n * qDim)
    for (let t = 0; t < n; t++) {
      const pos = start + t
      const first = slidingWindow === null ? 0 : Math.max(0, pos - slidingWindow + 1)
      const scores = new Float64Array(pos + 1 - first)
      for (let head = 0; head < numHeads; head++) {
        const kvHead = Math.floor(head / groupSize)
        const qOffset = t * qDim + head * headDim
        let max = -Infinity
        for (let j = first; j <= pos; j++) {
          let dot = 0
          const kOffset = j * kvDim + kvHead * headDim
          for (let d = 0; d < headDim; d++) dot += q[qOffset + d] * keyCache[kOffset + d]
          const s = dot * scale
          scores[j - first] = s
          if (s > max) max = s
        }
        let sum = 0
        for (let j = 0; j < scores.length; j++) {
          scores[j] = Math.exp(scores[j] - max)
          sum += scores[j]
        }
        for (let d = 0; d < headDim; d++) {
          let acc = 0
          for (let j = first; j <= pos; j++) acc += scores[j - first] * valueCache[j * kvDim + kvHead * headDim + d]
          attention[qOffset + d] = acc / sum
        }
      }
    }
    addInPlace(x, linear(attention, w.o, w.oBias, n, qDim, h))

    // MLP: down(silu(gate(x)) * up(x)).
    const normed2 = rmsNorm(x, w.postAttentionNorm, n, h, rmsNormEps)
    const gate = linear(normed2, w.gate, w.gateBias, n, h, inter)
    const up = linear(normed2, w.up, w.upBias, n, h, inter)
    for (let i = 0; i < gate.length; i++) gate[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i]
    addInPlace(x, linear(gate, w.down, w.downBias, n, inter, h))
  }
}

/** Loads the embeddings, final norm and lm_head (the embeddings again when they are tied). */
export async function loadJsHead (checkpoint: TensorReader, config: ModelConfig): Promise<ModelHead> {
  const { vocabSize, hiddenSize } = config
  const embeddings = await checkpoint.readFloat32(tensorNames.embed, [vocabSize, hiddenSize])
  const finalNorm = await checkpoint.readFloat32(tensorNames.finalNorm, [hiddenSize])
  const lmHead = config.tieWordEmbeddings ? embeddings : await checkpoint.readFloat32(tensorNames.lmHead, [vocabSize, hiddenSize])
  return new JsModelHead(config, embeddings, finalNorm, lmHead)
}

class JsModelHead implements ModelHead {
  readonly backend = 'js'
  readonly device = 'cpu'
  readonly weightBytes: number

  constructor (readonly config: ModelConfig, private readonly embeddings: Float32Array,
    private readonly finalNorm: Float32Array, private readonly lmHead: Float32Array) {
    this.weightBytes = embeddings.byteLength + finalNorm.byteLength + (lmHead === embeddings ? 0 : lmHead.byteLength)
  }

  embed (ids: readonly number[]): Float32Array {
    const { vocabSize, hiddenSize: h } = this.config
    const out = new Float32Array(ids.length * h)
    ids.forEach((id, t) => {
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`token id ${id} is outside the vocabulary (0..${vocabSize - 1})`)
      out.set(this.embeddings.subarray(id * h, (id + 1) * h), t * h)
    })
    return out
  }

  async logits (hidden: Float32Array): Promise<Float32Array> {
    const { vocabSize, hiddenSize: h, rmsNormEps } = this.config
    if (hidden.length === 0 || hidden.length % h !== 0) throw new Error(`hidden states must be [tokens, ${h}] floats, got ${hidden.length} values`)
    const last = hidden.subarray(hidden.length - h)
    return linear(rmsNorm(last, this.finalNorm, 1, h, rmsNormEps), this.lmHead, undefined, 1, h, vocabSize)
  }

  close (): void {}
}

/** Row-wise RMSNorm of x ([n, dim]) scaled by weight. */
function rmsNorm (x: Float32Array, weight: Float32Array, n: number, dim: number, eps: number): Float32Array {
  const out = new Float32Array(n * dim)
  for (let t = 0; t < n; t++) {
    let sumSquares = 0
    for (let i = 0; i < dim; i++) sumSquares += x[t * dim + i] * x[t * dim + i]
    // fp32 like Hugging Face: the normalised value is rounded before the weight multiplies it.
    const inv = Math.fround(1 / Math.sqrt(Math.fround(sumSquares / dim) + eps))
    for (let i = 0; i < dim; i++) out[t * dim + i] = weight[i] * Math.fround(x[t * dim + i] * inv)
  }
  return out
}

/** y = x W^T + b for x [n, inDim] and W [outDim, inDim] (PyTorch's Linear layout). */
function linear (x: Float32Array, w: Float32Array, bias: Float32Array | undefined, n: number, inDim: number, outDim: number): Float32Array {
  const y = new Float32Array(n * outDim)
  for (let t = 0; t < n; t++) {
    const xOffset = t * inDim
    for (let o = 0; o < outDim; o++) {
      const wOffset = o * inDim
      let acc = bias === undefined ? 0 : bias[o]
      for (let i = 0; i < inDim; i++) acc += x[xOffset + i] * w[wOffset + i]
      y[t * outDim + o] = acc
    }
  }
  return y
}

function addInPlace (x: Float32Array, y: Float32Array): void {
  for (let i = 0; i < x.length; i++) x[i] += y[i]
}
