// The torch backend (a Python worker running transformers' Llama layers, or plain PyTorch) against
// the JS reference on random models, its sessions, budget and rewinds, and how it fails: no
// interpreter, no torch, a killed worker. Skipped (with a message) when $BMRT_PYTHON / python3
// cannot import torch, unless BMRT_REQUIRE_TORCH=1 (CI), which fails instead.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { BlockSpan } from '../src/inference/backend.js'
import { loadBlockSpan } from '../src/inference/load-span.js'
import { makeTestModel, type TestModelSpec } from '../src/inference/test-model.js'
import { loadTorchSpan, type TorchBlockSpan, type TorchSpanOptions } from '../src/inference/torch-backend.js'
import { loadConfig } from '../src/inference/config.js'
import { BUNDLED_MODEL, maxAbsDiff, randomHidden, scratchDir, torchPython } from './helpers.js'

const TOLERANCE = 1e-4

/** Prefill 5 tokens, then 4 single-token decode steps; every output row. */
async function prefillThenDecode (span: BlockSpan, session: number, hidden: Float32Array, width: number): Promise<Float32Array> {
  const out = new Float32Array(hidden.length)
  out.set(await span.forward(session, hidden.subarray(0, 5 * width)))
  for (let t = 5; t < hidden.length / width; t++) out.set(await span.forward(session, hidden.subarray(t * width, (t + 1) * width)), t * width)
  return out
}

describe('torch backend', function () {
  let python: string
  let dir: string
  let cleanup: (() => Promise<void>) | undefined
  const spans: BlockSpan[] = []
  const models = new Map<string, string>()

  before(async function () {
    const found = torchPython()
    if (found === null) this.skip()
    python = found
    ;({ dir, cleanup } = await scratchDir())
  })
  after(async () => {
    spans.forEach(span => span.close())
    await cleanup?.()
  })

  const model = async (name: string, spec: TestModelSpec): Promise<string> => {
    if (!models.has(name)) {
      const path = join(dir, name)
      await makeTestModel(path, spec)
      models.set(name, path)
    }
    return models.get(name)!
  }
  const torchSpan = async (path: string, start: number, end: number, options: TorchSpanOptions = {}): Promise<TorchBlockSpan> => {
    const span = await loadTorchSpan(path, await loadConfig(path), start, end, { python, ...options })
    spans.push(span)
    return span
  }
  const jsSpan = async (path: string, start: number, end: number): Promise<BlockSpan> => {
    const span = await loadBlockSpan(path, start, end, { backend: 'js' })
    spans.push(span)
    return span
  }

  const GQA: TestModelSpec = {
    layers: 3, hidden: 64, intermediate: 96, heads: 8, kvHeads: 2, vocab: 32, seed: 3, attentionBias: true, mlpBias: true,
    ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 }, ropeTheta: 500000
  }
  const cases: Array<{ name: string, spec: TestModelSpec, plain?: boolean }> = [
    { name: 'GQA 8/2, llama3 rope scaling, biases', spec: GQA },
    { name: 'MHA, untied', spec: { layers: 2, hidden: 48, intermediate: 80, heads: 4, vocab: 32, seed: 4, tied: false } },
    { name: 'mistral, sliding window 4', spec: { modelType: 'mistral', layers: 2, hidden: 32, intermediate: 64, heads: 4, kvHeads: 2, vocab: 32, seed: 6, slidingWindow: 4 } },
    { name: 'GQA 8/2, llama3 rope scaling, biases, plain PyTorch (no transformers, no safetensors)', spec: GQA, plain: true }
  ]
  for (const { name, spec, plain } of cases) {
    it(`matches the JS backend within ${TOLERANCE}: ${name} (prefill + 4 decode steps)`, async () => {
      const path = await model(name.replace(/[^a-z0-9]+/gi, '-').slice(0, 30), spec)
      // BMRT_TORCH_PLAIN=1 also skips the safetensors package, so the worker's own reader runs.
      const span = await torchSpan(path, 0, spec.layers, plain === true ? { plain: true, env: { ...process.env, BMRT_TORCH_PLAIN: '1' } } : {})
      assert.equal(span.backend, 'torch')
      assert.equal(span.info?.impl, plain === true ? 'plain' : 'transformers')
      const reference = await jsSpan(path, 0, spec.layers)
      const hidden = randomHidden(9, spec.hidden, 21)
      const expected = await prefillThenDecode(reference, reference.openSession(16), hidden, spec.hidden)
      const got = await prefillThenDecode(span, span.openSession(16), hidden, spec.hidden)
      const diff = maxAbsDiff(got, expected)
      assert.ok(diff <= TOLERANCE, `max abs diff ${diff}`)
      assert.ok(span.weightBytes > 0)
    })
  }

  it('runs a session over blocks 2:5 of a 0:6 span like a 2:5 span, and a batch of two sessions', async () => {
    const spec: TestModelSpec = { layers: 6, hidden: 32, intermediate: 64, heads: 4, kvHeads: 2, vocab: 32, seed: 8 }
    const path = await model('six', spec)
    const span = await torchSpan(path, 0, 6)
    const reference = await jsSpan(path, 2, 5)
    const hidden = randomHidden(7, 32, 5)
    const session = span.openSession(8, { start: 2, end: 5 })
    assert.equal(span.cacheUsage().reserved, 8 * 3 / 6)
    const diff = maxAbsDiff(await prefillThenDecode(span, session, hidden, 32), await prefillThenDecode(reference, reference.openSession(8), hidden, 32))
    assert.ok(diff <= TOLERANCE, `sub-range: max abs diff ${diff}`)
    assert.equal(span.sessionLength(session), 7)

    // forwardBatch: two sessions, different lengths, in one call, equal to running them alone.
    const a = span.openSession(8)
    const b = span.openSession(8)
    const ha = randomHidden(3, 32, 1)
    const hb = randomHidden(2, 32, 2)
    const [oa, ob] = await span.forwardBatch([{ session: a, hidden: ha }, { session: b, hidden: hb }])
    const full = await jsSpan(path, 0, 6)
    assert.ok(maxAbsDiff(oa, await full.forward(full.openSession(8), ha)) <= TOLERANCE)
    assert.ok(maxAbsDiff(ob, await full.forward(full.openSession(8), hb)) <= TOLERANCE)
    assert.deepEqual([span.sessionLength(a), span.sessionLength(b)], [3, 2])
    await assert.rejects(span.forwardBatch([{ session: a, hidden: ha }, { session, hidden: ha, position: 0 }]), /must run the same blocks/)
  })

  it('rewinds when the position is before the end of the cache', async () => {
    const path = await model('six', { layers: 6, hidden: 32, intermediate: 64, heads: 4, kvHeads: 2, vocab: 32, seed: 8 })
    const span = await torchSpan(path, 1, 4)
    const reference = await jsSpan(path, 1, 4)
    const hidden = randomHidden(6, 32, 9)
    const other = randomHidden(3, 32, 10)
    const s = span.openSession(8)
    const r = reference.openSession(8)
    await span.forward(s, hidden)
    await reference.forward(r, hidden)
    // Replace the last 3 tokens with others: position 3 < length 6.
    const got = await span.forward(s, other, 3)
    const expected = await reference.forward(r, other, 3)
    assert.ok(maxAbsDiff(got, expected) <= TOLERANCE)
    assert.equal(span.sessionLength(s), 6)
    await assert.rejects(span.forward(s, other, 7), /outside the session's 6 cached tokens/)
  })

  it('accounts the cache budget per block and refuses with CACHE_FULL', async () => {
    const path = await model('six', { layers: 6, hidden: 32, intermediate: 64, heads: 4, kvHeads: 2, vocab: 32, seed: 8 })
    const span = await torchSpan(path, 0, 4, { maxCacheTokens: 10 })
    const a = span.openSession(10, { start: 0, end: 2 }) // 20 of 40 block-tokens
    const b = span.openSession(5, { start: 1, end: 4 }) // 15 more
    assert.deepEqual(span.cacheUsage(), { sessions: 2, reserved: 35 / 4, limit: 10 })
    assert.throws(() => span.openSession(3, { start: 0, end: 2 }), (err: Error & { code?: string }) => err.code === 'CACHE_FULL' && /attention cache full/.test(err.message))
    span.closeSession(a)
    const c = span.openSession(5, { start: 0, end: 4 })
    assert.deepEqual(span.cacheUsage(), { sessions: 2, reserved: 35 / 4, limit: 10 })
    assert.equal((await span.forward(c, randomHidden(2, 32))).length, 64)
    span.closeSession(b)
    span.closeSession(c)
    assert.deepEqual(span.cacheUsage(), { sessions: 0, reserved: 0, limit: 10 })
  })

  it('recovers from a killed worker: the pending call rejects at once, old sessions are lost, a new session works', async () => {
    const span = await torchSpan(BUNDLED_MODEL, 2, 4)
    const old = span.openSession(16)
    await span.forward(old, randomHidden(2, 64))
    const pid = span.workerPid!
    const inFlight = span.forward(old, randomHidden(1, 64))
    process.kill(pid, 'SIGKILL')
    const started = Date.now()
    // The step may have finished before the signal landed; then the next one must fail.
    const failed = await inFlight.then(async () => await span.forward(old, randomHidden(1, 64)).then(() => null, err => err), err => err)
    assert.ok(failed instanceof Error, 'a forward failed')
    assert.match(failed.message, /torch worker .* was killed by SIGKILL/)
    assert.ok(Date.now() - started < 5000, 'it failed quickly')
    const session = span.openSession(16)
    assert.notEqual(span.workerPid, pid)
    const reference = await jsSpan(BUNDLED_MODEL, 2, 4)
    const hidden = randomHidden(3, 64, 4)
    assert.ok(maxAbsDiff(await span.forward(session, hidden), await reference.forward(reference.openSession(16), hidden)) <= TOLERANCE)
    await assert.rejects(span.forward(old, randomHidden(1, 64)), /session lost: the torch worker restarted/)
  })

  it('loads through loadBlockSpan with backend torch', async () => {
    const span = await loadBlockSpan(BUNDLED_MODEL, 0, 1, { backend: 'torch', python })
    spans.push(span)
    assert.equal(span.backend, 'torch')
    await assert.rejects(loadBlockSpan(BUNDLED_MODEL, 0, 1, { backend: 'torch', python, format: 'int8' }), /needs the native backend/)
  })
})

describe('torch backend start-up errors', function () {
  let cleanup: (() => Promise<void>) | undefined
  after(async () => await cleanup?.())

  it('names a missing interpreter and the way out', async () => {
    const config = await loadConfig(BUNDLED_MODEL)
    await assert.rejects(loadTorchSpan(BUNDLED_MODEL, config, 0, 1, { python: '/nonexistent/python3' }),
      /bmrt could not start \/nonexistent\/python3 \(.*ENOENT.*\): install Python 3\.9\+ or set options\.load\.python to one/)
  })

  it('says when the interpreter has no torch, or one too old', async function () {
    if (spawnSync('python3', ['--version']).status !== 0) {
      console.log('    (skipped: no python3 on PATH)')
      this.skip()
    }
    // A module named torch that fails to import shadows any installed one, so this holds everywhere.
    const scratch = await scratchDir()
    cleanup = scratch.cleanup
    const config = await loadConfig(BUNDLED_MODEL)
    const broken = join(scratch.dir, 'no-torch')
    await mkdir(join(broken, 'torch'), { recursive: true })
    await writeFile(join(broken, 'torch', '__init__.py'), "raise ImportError(\"No module named 'torch'\")\n")
    await assert.rejects(loadTorchSpan(BUNDLED_MODEL, config, 0, 1, { python: 'python3', env: { ...process.env, PYTHONPATH: broken } }),
      /python3 has no torch: pip install torch \(and transformers\)/)
    const old = join(scratch.dir, 'old-torch')
    await mkdir(old)
    await writeFile(join(old, 'torch.py'), "__version__ = '1.13.1'\n")
    await assert.rejects(loadTorchSpan(BUNDLED_MODEL, config, 0, 1, { python: 'python3', env: { ...process.env, PYTHONPATH: old } }),
      /python3 has no torch: .*torch 1\.13\.1 is too old/)
  })

  it('says when CUDA is asked for but torch sees none', async function () {
    const python = torchPython()
    if (python === null) this.skip()
    const cuda = spawnSync(python, ['-c', 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'])
    if (cuda.status === 0) this.skip() // this machine has CUDA
    const config = await loadConfig(BUNDLED_MODEL)
    await assert.rejects(loadTorchSpan(BUNDLED_MODEL, config, 0, 1, { python, device: 'cuda' }), /--device cuda was asked for, but this torch .* sees no CUDA device/)
  })
})
