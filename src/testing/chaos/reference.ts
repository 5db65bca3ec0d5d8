// The outputs every swarm generation must equal: greedy continuations computed on this machine,
// with no network, from the same weights on the same backend as the servers.
//
// A server that replaces a failed one rebuilds its KV cache in one prefill, whose sums run in
// another order than the token-by-token decode that built the original cache, so logits after a
// failover may differ in the last bits (at most 8.5e-6 on the 80-block test model, measured over
// 40 prompts). Where the reference's top two logits are closer than that, a correct swarm could
// pick the other token. Prompts are therefore kept only if every step of their reference has a
// top-2 gap of at least MIN_LOGIT_GAP (100 times that difference), so that any mismatch is a bug.

import { collect, generate } from '../../inference/generate.js'
import { LocalModel, type LanguageModel } from '../../inference/model.js'
import { seededRandom } from '../../inference/sampling.js'

export const MIN_LOGIT_GAP = 1e-3

export interface ReferencePrompt {
  ids: number[]
  /** the greedy continuation, token for token */
  expected: number[]
}

/**
 * `count` prompts of 4 to 8 random token ids, each with its reference continuation of `newTokens`
 * tokens; also how many candidates were passed over for near-ties.
 */
export async function referencePrompts (modelDir: string, options: { backend: 'native' | 'js', count: number, newTokens: number }): Promise<{ prompts: ReferencePrompt[], rejected: number }> {
  const local = await LocalModel.load(modelDir, { backend: options.backend, threads: 1 })
  try {
    const random = seededRandom(1)
    const vocab = local.config.vocabSize
    const prompts: ReferencePrompt[] = []
    let rejected = 0
    while (prompts.length < options.count) {
      if (rejected > 20 * options.count) throw new Error(`only ${prompts.length} of ${rejected + prompts.length} prompts have no near-ties in their continuation`)
      const ids = Array.from({ length: 4 + Math.floor(random() * 5) }, () => 3 + Math.floor(random() * (vocab - 3)))
      const gaps: number[] = []
      const result = await collect(generate(watchingGaps(local, gaps), ids, { maxNewTokens: options.newTokens, ignoreEos: true }))
      if (Math.min(...gaps) >= MIN_LOGIT_GAP) prompts.push({ ids, expected: result.ids })
      else rejected++
    }
    return { prompts, rejected }
  } finally {
    local.close()
  }
}

/** `model`, reporting the gap between the top two logits of every step to `gaps`. */
function watchingGaps (model: LanguageModel, gaps: number[]): LanguageModel {
  return {
    config: model.config,
    tokenizer: model.tokenizer,
    eosTokenIds: model.eosTokenIds,
    async openSession (maxLength, options) {
      const session = await model.openSession(maxLength, options)
      return {
        get length () { return session.length },
        async step (ids, position) {
          const logits = await session.step(ids, position)
          gaps.push(topTwoGap(logits))
          return logits
        },
        close: async () => await session.close()
      }
    }
  }
}

function topTwoGap (logits: Float32Array): number {
  let first = -Infinity
  let second = -Infinity
  for (const v of logits) {
    if (v > first) { second = first; first = v } else if (v > second) second = v
  }
  return first - second
}
