// Token choice: greedy, temperature, top-k, top-p, repetition penalty, seeds.

import assert from 'node:assert/strict'
import { Sampler } from '../src/inference/sampling.js'

const logits = Float32Array.from([1, 3, 2, -1, 0.5])

describe('sampling', () => {
  it('temperature 0 is argmax', () => {
    assert.equal(new Sampler({ temperature: 0 }).sample(logits), 1)
  })

  it('top-k 1 and a tiny top-p are argmax whatever the temperature', () => {
    for (let seed = 0; seed < 20; seed++) {
      assert.equal(new Sampler({ temperature: 5, topK: 1, seed }).sample(logits), 1)
      assert.equal(new Sampler({ temperature: 1, topP: 0.01, seed }).sample(logits), 1)
    }
  })

  it('top-k 2 only ever picks the two best tokens, and picks both', () => {
    const sampler = new Sampler({ temperature: 10, topK: 2, seed: 1 })
    const seen = new Set(Array.from({ length: 200 }, () => sampler.sample(logits)))
    assert.deepEqual([...seen].sort(), [1, 2])
  })

  it('draws in proportion to softmax(logits / temperature)', () => {
    // Two tokens with probabilities 1/4 and 3/4: 4000 seeded draws land near 3000.
    const sampler = new Sampler({ temperature: 1, seed: 42 })
    const twoWay = Float32Array.from([0, Math.log(3)])
    let ones = 0
    for (let i = 0; i < 4000; i++) ones += sampler.sample(twoWay)
    assert.ok(ones > 2850 && ones < 3150, `${ones} of 4000`)
  })

  it('a repetition penalty turns greedy away from tokens already seen', () => {
    const sampler = new Sampler({ temperature: 0, repetitionPenalty: 2 })
    assert.equal(sampler.sample(logits, [1]), 2) // 3 / 2 = 1.5 < 2
    assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 2 }).sample(Float32Array.from([-1, -1.5]), [0]), 1) // negative: multiplied
  })

  it("OpenAI's presence and frequency penalties count only generated tokens", () => {
    // logits 1, 3, 2, -1, 0.5; context = prompt [2] then generated [1, 1].
    const context = [2, 1, 1]
    assert.equal(new Sampler({ presencePenalty: 1.5 }).sample(logits, context, 1), 2) // 3 - 1.5 = 1.5 < 2
    assert.equal(new Sampler({ presencePenalty: 0.5 }).sample(logits, context, 1), 1) // 2.5 > 2
    assert.equal(new Sampler({ frequencyPenalty: 0.6 }).sample(logits, context, 1), 2) // 3 - 2 x 0.6 = 1.8 < 2
    assert.equal(new Sampler({ frequencyPenalty: 2 }).sample(logits, context, 3), 1) // nothing generated yet
    assert.equal(new Sampler({ presencePenalty: -2 }).sample(Float32Array.from([0, 1]), [0], 0), 0) // negative: encourages
  })

  it('the same seed gives the same draws', () => {
    const draws = (seed: number) => { const s = new Sampler({ temperature: 1, seed }); return Array.from({ length: 50 }, () => s.sample(logits)) }
    assert.deepEqual(draws(7), draws(7))
    assert.notDeepEqual(draws(7), draws(8))
  })

  it('refuses settings outside their range', () => {
    assert.throws(() => new Sampler({ temperature: -0.5 }), /temperature must be >= 0/)
    assert.throws(() => new Sampler({ topK: 1.5 }), /top-k must be an integer/)
    assert.throws(() => new Sampler({ topP: 1.5 }), /top-p must be in/)
    assert.throws(() => new Sampler({ repetitionPenalty: 0 }), /repetition penalty must be > 0/)
    assert.throws(() => new Sampler({ presencePenalty: 2.5 }), /presence penalty must be between -2 and 2/)
  })
})
