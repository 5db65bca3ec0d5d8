// Local generation on the bundled stories260K model: the exact greedy outputs of an independent
// implementation, streaming, stops and sampling.

import assert from 'node:assert/strict'
import { LocalModel } from '../src/inference/model.js'
import { collect, generate } from '../src/inference/generate.js'
import { BUNDLED_MODEL } from './helpers.js'

// Token ids from ../shared/models/stories260K-hf/EXPECTED.md (first prompt) and, for the other two
// prompts, from Hugging Face transformers' LlamaForCausalLM greedy generate() on the same files;
// their decoded text begins with EXPECTED.md's text for those prompts.
const EXPECTED = [
  {
    prompt: 'Once upon a time',
    promptIds: [1, 403, 407, 261, 378],
    ids: [432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292,
      411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426,
      338, 391, 266, 267, 337, 335, 312, 432, 398, 312],
    text: 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it'
  },
  {
    prompt: 'Tom had a big dog named Max.',
    promptIds: [1, 274, 287, 381, 261, 370, 400, 428, 395, 392, 412, 444, 426],
    ids: [392, 412, 444, 401, 396, 267, 337, 335, 345, 267, 422, 419, 426, 385, 328, 432, 392, 412, 444, 394,
      261, 370, 268, 414, 444, 426, 346, 391, 266, 267, 337, 335, 312, 426, 346, 391, 266, 267, 337, 335,
      312, 426, 13, 446, 412, 444, 391, 266, 267, 337],
    text: 'Tom had a big dog named Max. Max loved to play with his toys. One day, Max saw a big box. He wanted to play with it. He wanted to play with it.'
  },
  {
    prompt: 'The little birdie was very smart.',
    promptIds: [1, 291, 376, 268, 315, 418, 417, 411, 286, 399, 262, 423, 295, 413, 426],
    ids: [338, 381, 261, 370, 268, 315, 418, 395, 274, 424, 411, 316, 422, 426, 274, 424, 411, 316, 422, 286,
      399, 393, 426, 346, 263, 377, 267, 265, 268, 315, 418, 269, 336, 432, 313, 440, 417, 432, 274, 424,
      411, 316, 422, 443, 410, 457, 303, 359, 337, 335],
    text: 'The little birdie was very smart. She had a big bird named Tweety. Tweety was very happy. He went to the bird and said, "Hi, Twe'
  }
]

describe('local generation on the bundled model', () => {
  let model: LocalModel
  before(async () => { model = await LocalModel.load(BUNDLED_MODEL) })
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

  it('stops before a stop sequence and never streams any part of it', async () => {
    const generation = generate(model, model.tokenizer.encode('Once upon a time'), { maxNewTokens: 50, stop: ['Lily'] })
    let streamed = ''
    let result
    for (;;) {
      const next = await generation.next()
      if (next.done === true) { result = next.value; break }
      streamed += next.value.text
    }
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
