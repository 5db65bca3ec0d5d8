// A server's announcement: what the writer writes comes back through JSON as it went in, fields not
// said are left out, and each garbage field reads as not said while the rest still counts.

import assert from 'node:assert/strict'
import { formatInfo, MAX_DISPROVEN, parseServerInfo, serverInfoRecord, type ServerInfo } from '../src/petals/protocol/server-info.js'

/** What a span record's `info` becomes after a trip through the DHT. */
const throughJson = (info: ServerInfo): unknown => JSON.parse(JSON.stringify(serverInfoRecord(info)))

describe('server info', () => {
  it('reads back what the writer writes, through JSON', () => {
    const full: ServerInfo = {
      version: '0.1.0',
      publicName: 'lab-3090',
      dtype: 'bf16',
      quant: 'int8',
      throughput: 12.5,
      inferenceRps: 450,
      forwardRps: 9000,
      networkRps: 1200,
      usingRelay: true,
      inferenceMaxLength: 8192,
      cacheTokensLeft: 0,
      nextPings: { q: 0.02, r: 0 },
      disproven: ['12D3KooWA', '12D3KooWB']
    }
    assert.deepEqual(parseServerInfo(throughJson(full)), full)
    const joining: ServerInfo = { version: '0.1.0', dtype: 'f32', quant: 'none', throughput: 0, usingRelay: false, inferenceMaxLength: 4096 }
    assert.deepEqual(parseServerInfo(throughJson(joining)), joining)
    assert.deepEqual(parseServerInfo(throughJson({})), {})
  })

  it('leaves out the fields not said', () => {
    const record = serverInfoRecord({ version: '0.1.0', publicName: undefined, throughput: 3, cacheTokensLeft: undefined })
    assert.deepEqual(record, { version: '0.1.0', throughput: 3 })
    assert.deepEqual(Object.keys(record), ['version', 'throughput'])
    assert.deepEqual(serverInfoRecord({}), {})
  })

  it('reads each garbage field as not said, and keeps the rest', () => {
    const garbage = {
      version: 1,
      publicName: { first: 'x' },
      dtype: 'BF16',
      quant: 'int3',
      throughput: NaN,
      inferenceRps: 0,
      forwardRps: -1,
      networkRps: Infinity,
      usingRelay: 'yes',
      inferenceMaxLength: 1.5,
      cacheTokensLeft: '4096',
      nextPings: [0.1],
      disproven: 'everyone',
      unknownField: 'ignored'
    }
    assert.deepEqual(parseServerInfo(garbage), {})
    assert.deepEqual(parseServerInfo({ ...garbage, throughput: 7, dtype: 'f16' }), { throughput: 7, dtype: 'f16' })
    assert.deepEqual(parseServerInfo({ throughput: -Infinity, inferenceRps: -450, inferenceMaxLength: -4, usingRelay: null, publicName: null }), {})
    assert.deepEqual(parseServerInfo({ inferenceMaxLength: 2 ** 60, version: ['0.1.0'], dtype: 'int8', quant: 'bf16' }), {})
    // A list of servers disproven: entries that are no peer id are dropped, and a long list is cut
    // at MAX_DISPROVEN (a record cannot make every client check evidence against the whole swarm).
    assert.deepEqual(parseServerInfo({ disproven: ['a', 3, '', 'x'.repeat(200), null, 'b'] }), { disproven: ['a', 'b'] })
    assert.equal(parseServerInfo({ disproven: Array.from({ length: 100 }, (_, i) => `p${i}`) }).disproven?.length, MAX_DISPROVEN)
  })

  it('reads a negative cache count as none left, and anything else unknown as unlimited', () => {
    assert.equal(parseServerInfo({ cacheTokensLeft: -50 }).cacheTokensLeft, 0)
    assert.equal(parseServerInfo({ cacheTokensLeft: null }).cacheTokensLeft, undefined)
    assert.equal(parseServerInfo({ cacheTokensLeft: NaN }).cacheTokensLeft, undefined)
  })

  it('keeps only the usable pings', () => {
    assert.deepEqual(parseServerInfo({ nextPings: { q: -1, r: 'soon', s: null, t: 0.1, u: Infinity } }).nextPings, { t: 0.1 })
  })

  it('reads anything that is not an object as nothing said', () => {
    for (const value of [null, undefined, 'info', 42, [1, 2]]) assert.deepEqual(parseServerInfo(value), {})
  })

  it("gives Petals' dtype and quant for a weight format", () => {
    assert.deepEqual(formatInfo(undefined, 'bf16'), { dtype: 'bf16', quant: 'none' })
    assert.deepEqual(formatInfo(undefined, null), { dtype: 'f32', quant: 'none' })
    assert.deepEqual(formatInfo('f16', 'f32'), { dtype: 'f16', quant: 'none' })
    assert.deepEqual(formatInfo('int8', 'bf16'), { dtype: 'bf16', quant: 'int8' })
    assert.deepEqual(formatInfo('int4', null), { dtype: 'f32', quant: 'int4' })
  })
})
