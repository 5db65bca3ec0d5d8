// Throughput as Petals announces it: measured per block, cached on disk, capped by the network,
// cut for relayed servers.

import assert from 'node:assert/strict'
import { join } from 'node:path'
import { readFile } from 'node:fs/promises'
import { loadBlockSpan } from '../src/inference/load-span.js'
import { measureThroughput } from '../src/petals/server/throughput.js'
import { BUNDLED_MODEL, scratchDir } from './helpers.js'

describe('server throughput', () => {
  it('measures per-block speeds once, then answers from the cache', async () => {
    const { dir, cleanup } = await scratchDir()
    try {
      const span = await loadBlockSpan(BUNDLED_MODEL, 1, 4, { backend: 'js' })
      const cacheFile = join(dir, 'throughput.json')
      const first = await measureThroughput(span, { modelName: 'stories260K', cacheFile })
      assert.equal(first.cached, false)
      for (const value of [first.inferenceRps, first.forwardRps, first.networkRps, first.throughput]) assert.ok(Number.isFinite(value) && value > 0)
      // forward rps over the average number of blocks a request uses, (3 + 1) / 2, unless the link is slower
      assert.equal(first.throughput, Math.min(first.forwardRps / 2, first.networkRps))
      assert.equal(first.networkRps, 100e6 / (64 * 16))

      const second = await measureThroughput(span, { modelName: 'stories260K', cacheFile })
      assert.equal(second.cached, true)
      assert.equal(second.forwardRps, first.forwardRps)
      assert.ok(Object.keys(JSON.parse(await readFile(cacheFile, 'utf8'))).some(k => k.startsWith('stories260K|64x172')))

      const relayed = await measureThroughput(span, { modelName: 'stories260K', cacheFile, usingRelay: true, networkBitsPerSecond: 1e3 })
      assert.equal(relayed.throughput, (1e3 / (64 * 16)) * 0.2, 'a slow link caps it, and a relay cuts it to a fifth')
      span.close()
    } finally {
      await cleanup()
    }
  })
})
