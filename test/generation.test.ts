// Local generation on the bundled stories260K model: the exact greedy outputs of an independent
// implementation, streaming, stops and sampling.

import assert from 'node:assert/strict'
import { LocalModel } from '../src/inference/model.js'
import { collect, generate, type GeneratedToken, type GenerationResult } from '../src/inference/generate.js'
import { BUNDLED_MODEL } from './helpers.js'
import { EXPECTED } from './expected.js'

/** Runs a generation to the end, concatenating the text it streamed. */
async function stream (generation: AsyncGenerator<GeneratedToken, GenerationResult>): Promise<{ streamed: string, result: GenerationResult }> {
  let streamed = ''
  for (;;) {
    const next = await generation.next()
    if (next.done === true) return { streamed, result: next.value }
    streamed += next.value.text
  }
}

describe('local generation on the bundled model (js backend)', () => {
  let model: LocalModel
  before(async () => { model = await LocalModel.load(BUNDLED_MODEL, { backend: 'js' }) })
  after(() => model.close())

  for (const expected of EXPECTED) {
    it(`greedy output for "${expected.prompt}" equals the reference token ids`, async () => {
      const promptIds = model.tokenizer.encode(expected.prompt)
      assert.deepEqual(promptIds, expected.promptIds)
      const result = await collect(generate(model, promptIds, { maxNewTokens: 50, temperature: 0 }))
      assert.deepEqual(result.ids, expected.ids)
      assert.equal(result.finishReason, 'length')
      assert.ok((expected.prompt + result.text).startsWith(expected.text), expected.prompt + result.text)
    })
  }

  it('streams text pieces that add up to the final text, one event per token', async () => {
    const generation = generate(model, model.tokenizer.encode('Once upon a time'), { maxNewTokens: 40 })
    let streamed = ''
    let tokens = 0
    for (;;) {
      const next = await generation.next()
      if (next.done === true) {
        assert.equal(streamed, next.value.text)
        assert.equal(tokens, next.value.ids.length)
        assert.ok(next.value.tokensPerSecond > 0)
        break
      }
      if (next.value.id !== null) tokens++
      streamed += next.value.text
    }
  })

  it('incremental decoding gives the full decode\'s text, even for random tokens', async () => {
    const prompt = model.tokenizer.encode('Once upon a time')
    const anchor = prompt[prompt.length - 1]
    for (const seed of [1, 2, 3, 4]) {
      // Temperature 3 draws nearly uniformly from the 512 tokens, byte-fallback pieces included.
      const { streamed, result } = await stream(generate(model, prompt, { maxNewTokens: 60, temperature: 3, seed, ignoreEos: true }))
      const full = model.tokenizer.decode([anchor, ...result.ids]).slice(model.tokenizer.decode([anchor]).length)
      assert.equal(result.text, full, `seed ${seed}`)
      assert.equal(streamed, full, `seed ${seed}`)
    }
  })

  it('stops before a stop sequence and never streams any part of it', async () => {
    const { streamed, result } = await stream(generate(model, model.tokenizer.encode('Once upon a time'), { maxNewTokens: 50, stop: ['Lily'] }))
    assert.equal(result.finishReason, 'stop')
    assert.equal(result.text, ', there was a little girl named ')
    assert.equal(streamed, result.text)
  })

  it('ends at the end-of-sequence token unless told to ignore it', async () => {
    // The bundled model's stories are long; declare ',' (432, the first greedy token) the EOS instead.
    const eosModel = { config: model.config, tokenizer: model.tokenizer, eosTokenIds: [432], openSession: async (n: number) => await model.openSession(n) }
    const ids = model.tokenizer.encode('Once upon a time')
    const stopped = await collect(generate(eosModel, ids, { maxNewTokens: 10 }))
    assert.equal(stopped.finishReason, 'eos')
    assert.deepEqual(stopped.ids, [])
    const ignored = await collect(generate(eosModel, ids, { maxNewTokens: 10, ignoreEos: true }))
    assert.equal(ignored.finishReason, 'length')
    assert.equal(ignored.ids.length, 10)
  })

  it('samples reproducibly with a seed, and differently with another seed', async () => {
    const ids = model.tokenizer.encode('Once upon a time')
    const options = { maxNewTokens: 30, temperature: 1, topP: 0.95, topK: 40 }
    const a = await collect(generate(model, ids, { ...options, seed: 11 }))
    const b = await collect(generate(model, ids, { ...options, seed: 11 }))
    assert.deepEqual(a.ids, b.ids)
    const others = await Promise.all([12, 13, 14].map(async seed => (await collect(generate(model, ids, { ...options, seed }))).ids))
    assert.ok(others.some(o => JSON.stringify(o) !== JSON.stringify(a.ids)), 'three other seeds all gave the same tokens')
  })

  it('refuses requests longer than the model context, and bad sampling settings', async () => {
    const ids = model.tokenizer.encode('Once upon a time')
    await assert.rejects(collect(generate(model, ids, { maxNewTokens: 600 })), /exceeds the model's context of 512/)
    await assert.rejects(collect(generate(model, ids, { temperature: -1 })), /temperature must be >= 0/)
    await assert.rejects(collect(generate(model, ids, { topP: 0 })), /top-p must be in \(0, 1\]/)
    await assert.rejects(collect(generate(model, [], {})), /prompt is empty/)
  })
})
