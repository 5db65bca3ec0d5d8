// The JS reference backend: a Llama decoder written as plainly as we can, in fp32 with
// double-precision accumulation. It runs anywhere and is the oracle the native addon is tested
// against, so clarity beats speed here.

import { sessionBlocks, type BlockRange, type BlockSpan, type ModelHead, type SpanStep } from './backend.js'
import { checkSpan, type ModelConfig } from './config.js'
import { tensorNames, type Checkpoint } from './checkpoint.js'
import { layerTensors, type LayerTensorSuffix } from './llama-layout.js'
import { applyRope, ropeAngles, ropeInverseFrequencies } from './rope.js'

interface LayerWeights {
  inputNorm: Float32Array
  q: Float32Array; k: Float32Array; v: Float32Array; o: Float32Array
  qBias?: Float32Array; kBias?: Float32Array; vBias?: Float32Array; oBias?: Float32Array
  postAttentionNorm: Float32Array
  gate: Float32Array; up: Float32Array; down: Float32Array
  gateBias?: Float32Array; upBias?: Float32Array; downBias?: Float32Array
}

interface Session {
  maxLength: number
  length: number
  /** the span's layers it runs: [first, first + keys.length) */
  first: number
  /** per layer it runs: [maxLength, numKvHeads * headDim] */
  keys: Float32Array[]
  values: Float32Array[]
  busy: boolean
}

export interface JsSpanOptions {
  /** hears of each block loaded */
  onBlock?: (block: number) => void
  /** cache tokens per block, Petals' attn_cache_tokens (default 0: no limit); see BlockSpan */
  maxCacheTokens?: number
}

/** Reads the weights of blocks [start, end) and nothing else. */
export async function loadJsSpan (checkpoint: Checkpoint, config: ModelConfig, start: number, end: number,
  options: JsSpanOptions = {}): Promise<BlockSpan> {
  checkSpan(config, start, end)
  const maxCacheTokens = options.maxCacheTokens ?? 0
  if (!Number.isSafeInteger(maxCacheTokens) || maxCacheTokens < 0) throw new Error(`maxCacheTokens must be a non-negative integer, got ${maxCacheTokens}`)
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
  private readonly sessions = new Map<number, Session>()
  private nextSession = 1
  /** block-tokens the open sessions reserve (maxLength × blocks, summed) */
  private reserved = 0

  constructor (config: ModelConfig, start: number, end: number, layers: LayerWeights[], private readonly maxCacheTokens: number) {
    this.config = config
    this.start = start
    this.end = end
    this.layers = layers
    this.inverseFrequencies = ropeInverseFrequencies(config)
    this.weightBytes = layers.reduce((sum, layer) => sum + Object.values(layer).reduce((s, t?: Float32Array) => s + (t?.byteLength ?? 0), 0), 0)
    this.cacheBytesPerToken = layers.length * 2 * config.numKvHeads * config.headDim * 4
  }

  openSession (maxLength: number, blocks?: BlockRange): number {
    if (!Number.isSafeInteger(maxLength) || maxLength <= 0) throw new Error(`session max length must be a positive integer, got ${maxLength}`)
    const { start, end } = sessionBlocks(this, blocks)
    const count = end - start
    // Petals' accounting (the same words as the addon's): maxCacheTokens per block, and a session
    // pays for the blocks it uses.
    const blocksHeld = this.end - this.start
    const budget = this.maxCacheTokens * blocksHeld
    if (this.maxCacheTokens > 0 && this.reserved + maxLength * count > budget) {
      throw Object.assign(new Error(`attention cache full: ${this.reserved} of ${budget} tokens reserved (${this.maxCacheTokens} per block x ` +
        `${blocksHeld} blocks); a session of ${maxLength} tokens over ${count} blocks needs ${maxLength * count}`), { code: 'CACHE_FULL' })
    }
    const cache = (): Float32Array[] => Array.from({ length: count }, () => new Float32Array(maxLength * this.config.numKvHeads * this.config.headDim))
    const id = this.nextSession++
    this.sessions.set(id, { maxLength, length: 0, first: start - this.start, keys: cache(), values: cache(), busy: false })
    this.reserved += maxLength * count
    return id
  }

  sessionLength (session: number): number {
    return this.session(session).length
  }

  closeSession (session: number): void {
    const s = this.sessions.get(session)
    if (s === undefined) return
    this.reserved -= s.maxLength * s.keys.length
    this.sessions.delete(session)
  }

  cacheUsage (): { sessions: number, reserved: number, limit: number } {
    return { sessions: this.sessions.size, reserved: this.reserved / (this.end - this.start), limit: this.maxCacheTokens }
  }

  close (): void {
    this.sessions.clear()
    this.reserved = 0
    this.layers = []
  }

  private session (id: number): Session {
    const s = this.sessions.get(id)
    if (s === undefined) throw new Error(`unknown or closed session ${id}`)
    return s
  }

  async forward (session: number, hidden: Float32Array, position?: number): Promise<Float32Array> {
    const [out] = await this.forwardBatch([{ session, hidden, position }])
    return out
  }

  /** A plain loop over the steps, after checking them all, so a bad step leaves every session as it was. */
  async forwardBatch (steps: SpanStep[]): Promise<Float32Array[]> {
    if (steps.length === 0) throw new Error('a forward needs at least one step')
    const checked = steps.map(step => ({ ...this.check(step), id: step.session, hidden: step.hidden }))
    const first = checked[0].session
    checked.forEach(({ id, session }, i) => {
      if (checked.findIndex(c => c.id === id) !== i) throw new Error(`session ${id} appears twice in one batch`)
      if (session.first !== first.first || session.keys.length !== first.keys.length) {
        throw new Error(`all sessions in one batch must run the same blocks: session ${id} runs ${this.blocksOf(session)}, ` +
          `session ${checked[0].id} runs ${this.blocksOf(first)}`)
      }
      if (session.busy) throw new Error(`session ${id} is already running a step`)
    })
    for (const { session } of checked) session.busy = true
    try {
      const outputs: Float32Array[] = []
      for (const { id, session, hidden, n, start } of checked) {
        session.length = start
        const x = Float32Array.from(hidden)
        for (let l = 0; l < session.keys.length; l++) {
          this.layer(this.layers[session.first + l], session.keys[l], session.values[l], x, n, start)
          // Yield between layers so a long forward never starves the event loop for its whole span.
          await new Promise(resolve => setImmediate(resolve))
          if (!this.sessions.has(id)) throw new Error(`session ${id} was closed during a step`)
        }
        session.length = start + n
        outputs.push(x)
      }
      return outputs
    } finally {
      for (const { session } of checked) session.busy = false
    }
  }

  /** Validates one step without touching its session: its session, token count and start position. */
  private check ({ session: id, hidden, position }: SpanStep): { session: Session, n: number, start: number } {
    const session = this.session(id)
    const h = this.config.hiddenSize
    if (hidden.length === 0 || hidden.length % h !== 0) {
      throw new Error(`hidden states must be [tokens, ${h}] floats, got ${hidden.length} values`)
    }
    const n = hidden.length / h
    const start = position ?? session.length
    if (!Number.isInteger(start) || start < 0 || start > session.length) {
      throw new Error(`position ${start} is outside the session's ${session.length} cached tokens`)
    }
    if (start + n > session.maxLength) {
      throw new Error(`session holds at most ${session.maxLength} tokens; ${start} cached + ${n} new would exceed it`)
    }
    if (!hidden.every(Number.isFinite)) throw new Error('hidden states contain NaN or infinite values')
    return { session, n, start }
  }

  /** A session's blocks as absolute indices, for messages. */
  private blocksOf (session: Session): string {
    return `${this.start + session.first}:${this.start + session.first + session.keys.length}`
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
export async function loadJsHead (checkpoint: Checkpoint, config: ModelConfig): Promise<ModelHead> {
  const { vocabSize, hiddenSize } = config
  const embeddings = await checkpoint.readFloat32(tensorNames.embed, [vocabSize, hiddenSize])
  const finalNorm = await checkpoint.readFloat32(tensorNames.finalNorm, [hiddenSize])
  const lmHead = config.tieWordEmbeddings ? embeddings : await checkpoint.readFloat32(tensorNames.lmHead, [vocabSize, hiddenSize])
  return new JsModelHead(config, embeddings, finalNorm, lmHead)
}

class JsModelHead implements ModelHead {
  constructor (readonly config: ModelConfig, private readonly embeddings: Float32Array,
    private readonly finalNorm: Float32Array, private readonly lmHead: Float32Array) {}

  embed (ids: readonly number[]): Float32Array {
    const { vocabSize, hiddenSize: h } = this.config
    const out = new Float32Array(ids.length * h)
    ids.forEach((id, t) => {
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`token id ${id} is outside the vocabulary (0..${vocabSize - 1})`)
      out.set(this.embeddings.subarray(id * h, (id + 1) * h), t * h)
    })
    return out
  }

  logits (hidden: Float32Array): Float32Array {
    const { vocabSize, hiddenSize: h, rmsNormEps } = this.config
    if (hidden.length === 0 || hidden.length % h !== 0) throw new Error(`hidden states must be [tokens, ${h}] floats, got ${hidden.length} values`)
    const last = hidden.subarray(hidden.length - h)
    return linear(rmsNorm(last, this.finalNorm, 1, h, rmsNormEps), this.lmHead, undefined, 1, h, vocabSize)
  }
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
