// Sessions over part of a span (Petals routes enter a server mid-span and leave it mid-span),
// batches, and the per-block cache budget, on both backends. The native half is skipped (with a
// message) where the addon did not build, unless BMRT_REQUIRE_NATIVE=1 (CI).

import assert from 'node:assert/strict'
import type { BackendName, BlockSpan } from '../src/inference/backend.js'
import { loadBlockSpan } from '../src/inference/load-span.js'
import { makeTestModel } from '../src/inference/test-model.js'
import { maxAbsDiff, randomHidden, scratchDir, skipWithoutAddon } from './helpers.js'

const WIDTH = 64

/** Prefill 4 tokens, then 5 single-token decode steps, in one session; every output row. */
async function prefillThenDecode (span: BlockSpan, session: number, hidden: Float32Array): Promise<Float32Array> {
  const out = new Float32Array(hidden.length)
  out.set(await span.forward(session, hidden.subarray(0, 4 * WIDTH)))
  for (let t = 4; t < 9; t++) out.set(await span.forward(session, hidden.subarray(t * WIDTH, (t + 1) * WIDTH)), t * WIDTH)
  return out
}

for (const backend of ['js', 'native'] as BackendName[]) {
  describe(`sessions over part of a span (${backend} backend)`, function () {
    before(function () { if (backend === 'native') skipWithoutAddon(this) })

    let dir: string
    let cleanup: (() => Promise<void>) | undefined
    const spans: BlockSpan[] = []
    const load = async (start: number, end: number, maxCacheTokens?: number): Promise<BlockSpan> => {
      const span = await loadBlockSpan(dir, start, end, { backend, format: 'f32', threads: 2, maxCacheTokens })
      spans.push(span)
      return span
    }
    before(async () => {
      ({ dir, cleanup } = await scratchDir())
      await makeTestModel(dir, { layers: 6, hidden: WIDTH, intermediate: 128, heads: 8, kvHeads: 2, vocab: 32, seed: 5 })
    })
    after(async () => {
      spans.forEach(span => span.close())
      await cleanup?.()
    })

    it('a session over blocks 2:5 of span 0:6 equals span 2:5 loaded alone (prefill + 5 decode steps, max abs diff <= 1e-5)', async () => {
      const full = await load(0, 6)
      const part = await load(2, 5)
      const hidden = randomHidden(9, WIDTH, 11)
      const expected = await prefillThenDecode(part, part.openSession(9), hidden)
      const session = full.openSession(9, { start: 2, end: 5 })
      assert.equal(full.cacheUsage().reserved, 9 * 3 / 6, 'the session reserves only its 3 blocks')
      const got = await prefillThenDecode(full, session, hidden)
      const diff = maxAbsDiff(got, expected)
      assert.ok(diff <= 1e-5, `max abs diff ${diff}`)
      assert.equal(full.sessionLength(session), 9)
      // The whole span still runs all six blocks, so its output differs.
      const whole = await prefillThenDecode(full, full.openSession(9), hidden)
      assert.ok(maxAbsDiff(whole, expected) > 1e-3)
    })

    it('forwardBatch of 3 sessions equals 3 separate forwards, and refuses mixed blocks', async () => {
      const span = await load(0, 6)
      const blocks = { start: 1, end: 4 }
      const inputs = [randomHidden(3, WIDTH, 1), randomHidden(1, WIDTH, 2), randomHidden(5, WIDTH, 3)]
      const next = [randomHidden(1, WIDTH, 4), randomHidden(1, WIDTH, 5), randomHidden(1, WIDTH, 6)]
      const alone = inputs.map(() => span.openSession(8, blocks))
      const expected = []
      for (const [i, s] of alone.entries()) expected.push(await span.forward(s, inputs[i]), await span.forward(s, next[i]))
      const together = inputs.map(() => span.openSession(8, blocks))
      const prefill = await span.forwardBatch(together.map((session, i) => ({ session, hidden: inputs[i] })))
      const decode = await span.forwardBatch(together.map((session, i) => ({ session, hidden: next[i], position: inputs[i].length / WIDTH })))
      for (let i = 0; i < 3; i++) {
        assert.ok(maxAbsDiff(prefill[i], expected[2 * i]) <= 1e-5, `session ${i} prefill`)
        assert.ok(maxAbsDiff(decode[i], expected[2 * i + 1]) <= 1e-5, `session ${i} decode`)
        assert.equal(span.sessionLength(together[i]), inputs[i].length / WIDTH + 1)
      }

      const other = span.openSession(8, { start: 1, end: 5 })
      await assert.rejects(span.forwardBatch([{ session: together[0], hidden: next[0] }, { session: other, hidden: next[1] }]),
        /all sessions in one batch must run the same blocks/)
      await assert.rejects(span.forwardBatch([{ session: together[0], hidden: next[0] }, { session: together[0], hidden: next[1] }]),
        /appears twice in one batch/)
      assert.equal(span.sessionLength(together[0]), 4, 'a refused batch leaves its sessions as they were')
      assert.equal(span.sessionLength(other), 0)
    })

    it('counts the cache budget per block (Petals attn_cache_tokens), refuses with CACHE_FULL, and frees on close', async () => {
      const span = await load(0, 6, 10) // 10 tokens per block: 60 block-tokens
      assert.deepEqual(span.cacheUsage(), { sessions: 0, reserved: 0, limit: 10 })
      span.openSession(6) // 6 tokens × 6 blocks = 36
      const part = span.openSession(8, { start: 2, end: 5 }) // 8 × 3 = 24: 60 of 60
      assert.deepEqual(span.cacheUsage(), { sessions: 2, reserved: 10, limit: 10 })
      assert.throws(() => span.openSession(1, { start: 5, end: 6 }), {
        code: 'CACHE_FULL',
        message: /attention cache full: 60 of 60 tokens reserved \(10 per block x 6 blocks\); a session of 1 tokens over 1 blocks needs 1/
      })
      span.closeSession(part)
      assert.deepEqual(span.cacheUsage(), { sessions: 1, reserved: 6, limit: 10 })
      const wide = span.openSession(12, { start: 0, end: 2 }) // 24 fits again: the closed session's reservation came back
      assert.equal(span.cacheUsage().reserved, 10)
      assert.throws(() => span.openSession(1), { code: 'CACHE_FULL' })
      span.closeSession(wide)
      assert.equal(span.cacheUsage().reserved, 6)
    })

    it('refuses blocks outside the span, naming both', async () => {
      const span = await load(2, 5)
      for (const blocks of [{ start: 1, end: 3 }, { start: 4, end: 6 }, { start: 3, end: 3 }, { start: 4, end: 3 }]) {
        assert.throws(() => span.openSession(4, blocks), new RegExp(`blocks ${blocks.start}:${blocks.end} are not a non-empty part of this span's blocks 2:5`))
      }
      assert.equal(span.cacheUsage().sessions, 0)
      const session = span.openSession(4, { start: 4, end: 5 })
      assert.equal((await span.forward(session, randomHidden(2, WIDTH))).length, 2 * WIDTH)
    })
  })
}
