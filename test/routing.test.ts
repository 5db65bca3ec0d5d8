// Routing over hand-made swarms: Petals' min-latency Dijkstra for inference, throughput-weighted
// random routes for forward work, bans with doubling timeouts, and what a garbage announcement
// turns into.

import assert from 'node:assert/strict'
import {
  formatRoute, maxThroughputRoute, minLatencyRoute, missingBlocks, MissingBlocksError, routeCostSeconds,
  serverSpanFromRecord, type RouteHop, type ServerSpan
} from '../src/petals/client/routing.js'
import { BanList, retryDelayMs } from '../src/petals/client/ban-list.js'
import { shortPeerId } from '../src/p2p/identity.js'
import type { SpanRecord } from '../src/p2p/registry.js'
import { seededRandom } from '../src/inference/sampling.js'

const span = (peerId: string, start: number, end: number, more: Partial<ServerSpan> = {}): ServerSpan =>
  ({ peerId, start, end, throughput: 1, cacheTokensLeft: null, nextPings: {}, ...more })

const hop = (peerId: string, start: number, end: number): RouteHop => ({ peerId, start, end })

/** Every hop but the last ends where its server's span ends, and the hops tile [start, end). */
function assertWellFormed (route: RouteHop[], spans: ServerSpan[], start: number, end: number): void {
  assert.equal(route[0].start, start)
  assert.equal(route.at(-1)?.end, end)
  route.forEach((h, i) => {
    assert.ok(h.start < h.end, `hop ${i} is empty`)
    if (i > 0) assert.equal(h.start, route[i - 1].end, 'hops are contiguous')
    const s = spans.find(x => x.peerId === h.peerId)
    assert.ok(s !== undefined && s.start <= h.start && h.end <= s.end, `hop ${i} lies within its server's span`)
    if (i < route.length - 1) assert.equal(h.end, s.end, `hop ${i} leaves ${h.peerId} only at its span's end`)
  })
}

describe('routing', () => {
  describe('min-latency route', () => {
    it('prefers one long span to two hops when the servers are equally fast', () => {
      const spans = [span('b', 0, 4), span('c', 4, 8), span('a', 0, 8)]
      assert.deepEqual(minLatencyRoute(spans, 0, 8), [hop('a', 0, 8)])
    })

    it('takes a faster pair of servers when the compute saved exceeds a hop', () => {
      // b and c: 8 blocks at 1000 rps = 8 ms plus a 5 ms + 18 ms hop; a single server must beat 31 ms.
      const pair = (rps: number): ServerSpan[] => [
        span('a', 0, 8, { inferenceRps: rps }),
        span('b', 0, 4, { inferenceRps: 1000, nextPings: { c: 0.01 } }),
        span('c', 4, 8, { inferenceRps: 1000 })
      ]
      assert.deepEqual(minLatencyRoute(pair(50), 0, 8), [hop('b', 0, 4), hop('c', 4, 8)]) // a: 160 ms
      assert.deepEqual(minLatencyRoute(pair(200), 0, 8), [hop('b', 0, 4), hop('c', 4, 8)]) // a: 40 ms
      assert.deepEqual(minLatencyRoute(pair(300), 0, 8), [hop('a', 0, 8)]) // a: 26.7 ms
    })

    it('charges an unannounced server-to-server ping as Petals does (0.15 s one way)', () => {
      // Without b's ping to c the hop costs 150 + 18 ms, so a at 50 rps (160 ms) now wins.
      const spans = [span('a', 0, 8, { inferenceRps: 50 }), span('b', 0, 4, { inferenceRps: 1000 }), span('c', 4, 8, { inferenceRps: 1000 })]
      assert.deepEqual(minLatencyRoute(spans, 0, 8), [hop('a', 0, 8)])
    })

    it('steers away from a server short of cache, and from a distant one otherwise', () => {
      const spans = [span('near', 0, 8, { cacheTokensLeft: 100 }), span('far', 0, 8, { cacheTokensLeft: null })]
      const rtts = new Map([['near', 0.01], ['far', 0.5]])
      assert.deepEqual(minLatencyRoute(spans, 0, 8, { rtts }), [hop('near', 0, 8)])
      assert.deepEqual(minLatencyRoute(spans, 0, 8, { rtts, cacheTokensNeeded: 100 }), [hop('near', 0, 8)]) // exactly fits
      assert.deepEqual(minLatencyRoute(spans, 0, 8, { rtts, cacheTokensNeeded: 101 }), [hop('far', 0, 8)])
      // The penalty applies to servers entered mid-route too.
      const chain = [span('a', 0, 4), span('b', 4, 8, { cacheTokensLeft: 0 }), span('c', 4, 8, { inferenceRps: 30 })]
      assert.deepEqual(minLatencyRoute(chain, 0, 8, { cacheTokensNeeded: 512 }), [hop('a', 0, 4), hop('c', 4, 8)])
    })

    it('leaves a server only at the end of its span', () => {
      // Leaving a at block 3 for the faster c would be quickest (11 ms of compute against 13), but a
      // is only left at 5.
      const spans = [span('a', 0, 5, { inferenceRps: 500 }), span('b', 0, 8, { inferenceRps: 20 }), span('c', 3, 8, { inferenceRps: 1000 })]
      const route = minLatencyRoute(spans, 0, 8)
      assert.deepEqual(route, [hop('a', 0, 5), hop('c', 5, 8)])
      assertWellFormed(route, spans, 0, 8)
      // Overlapping servers with no other choice: a runs to its end, then b takes over mid-span.
      const overlap = [span('a', 0, 6), span('b', 3, 8)]
      assert.deepEqual(minLatencyRoute(overlap, 0, 8), [hop('a', 0, 6), hop('b', 6, 8)])
    })

    it('routes a sub-range, entering and leaving spans part-way', () => {
      assert.deepEqual(minLatencyRoute([span('a', 0, 8), span('b', 8, 16)], 5, 12), [hop('a', 5, 8), hop('b', 8, 12)])
      assert.deepEqual(minLatencyRoute([span('a', 0, 16)], 5, 12), [hop('a', 5, 12)])
      // A server that ends inside the range is still left only at its end; the last hop is trimmed.
      const spans = [span('a', 0, 9), span('b', 7, 20, { inferenceRps: 1000 }), span('c', 9, 20, { inferenceRps: 20 })]
      const route = minLatencyRoute(spans, 5, 12)
      assert.deepEqual(route, [hop('a', 5, 9), hop('b', 9, 12)])
      assertWellFormed(route, spans, 5, 12)
    })

    it('breaks ties by peer id, whatever order the spans came in', () => {
      assert.deepEqual(minLatencyRoute([span('z', 0, 4), span('m', 0, 4)], 0, 4), [hop('m', 0, 4)])
      assert.deepEqual(minLatencyRoute([span('m', 0, 4), span('z', 0, 4)], 0, 4), [hop('m', 0, 4)])
    })

    it('finds well-formed routes through a larger swarm', () => {
      const random = seededRandom(7)
      for (let trial = 0; trial < 50; trial++) {
        const spans: ServerSpan[] = []
        for (let p = 0; p < 30; p++) {
          const start = Math.floor(random() * 70)
          spans.push(span(`peer${p}`, start, Math.min(80, start + 1 + Math.floor(random() * 30)), { inferenceRps: 50 + random() * 500 }))
        }
        spans.push(span('head', 0, 10), span('tail', 60, 80)) // so 0..9 and 60..79 are never missing
        const start = Math.floor(random() * 40)
        const end = start + 1 + Math.floor(random() * (80 - start - 1))
        let route: RouteHop[]
        try {
          route = minLatencyRoute(spans, start, end)
        } catch (err) {
          assert.ok(err instanceof MissingBlocksError)
          continue
        }
        assertWellFormed(route, spans, start, end)
      }
    })

    it('reports blocks no server holds, compactly', () => {
      const spans = [span('a', 0, 3), span('b', 5, 9), span('c', 10, 12)]
      assert.throws(() => minLatencyRoute(spans, 0, 12, { model: 'llama' }), (err: unknown) => {
        assert.ok(err instanceof MissingBlocksError)
        assert.deepEqual(err.blocks, [3, 4, 9])
        assert.equal(err.message, 'blocks 3:5, 9 of model llama are not served by any reachable server')
        return true
      })
      assert.throws(() => minLatencyRoute(spans, 9, 10), /^MissingBlocksError: block 9 is not served by any reachable server$/)
      assert.throws(() => maxThroughputRoute(spans, 2, 6), (err: unknown) => err instanceof MissingBlocksError && err.blocks.join() === '3,4')
      assert.throws(() => minLatencyRoute([], 0, 2), /blocks 0:2 are not served/)
    })

    it('refuses empty and malformed ranges', () => {
      const spans = [span('a', 0, 8)]
      for (const [start, end] of [[3, 3], [4, 2], [-1, 2], [0.5, 2], [0, NaN]]) {
        assert.throws(() => minLatencyRoute(spans, start, end), RangeError)
        assert.throws(() => maxThroughputRoute(spans, start, end), RangeError)
      }
    })

    it('costs a route as the search does', () => {
      const rtts = new Map([['a', 0.1]])
      // 50 ms there, 18 ms overhead, 4 blocks at 300 rps, 50 ms back
      assert.ok(Math.abs(routeCostSeconds([span('a', 0, 4)], [hop('a', 0, 4)], { rtts }) - (0.05 + 0.018 + 4 / 300 + 0.05)) < 1e-12)
      // The chosen route is never dearer than another legal one.
      const spans = [span('a', 0, 8, { inferenceRps: 200 }), span('b', 0, 4, { inferenceRps: 1000, nextPings: { c: 0.01 } }), span('c', 4, 8, { inferenceRps: 1000 })]
      const best = minLatencyRoute(spans, 0, 8)
      assert.ok(routeCostSeconds(spans, best) < routeCostSeconds(spans, [hop('a', 0, 8)]))
      // An unreachable server (RTT Infinity) keeps an edge, capped at 5 s each way.
      assert.equal(routeCostSeconds([span('a', 0, 1, { inferenceRps: 1 })], [hop('a', 0, 1)], { rtts: new Map([['a', Infinity]]), overheadSeconds: 0 }), 11)
    })
  })

  describe('max-throughput route', () => {
    it('covers the range contiguously, each hop running to its span end or the range end', () => {
      const spans = [span('a', 0, 5), span('b', 2, 9, { throughput: 3 }), span('c', 4, 12, { throughput: 0 }), span('d', 0, 12, { throughput: 0.5 })]
      const random = seededRandom(11)
      for (let i = 0; i < 500; i++) {
        const route = maxThroughputRoute(spans, 1, 11, random)
        assertWellFormed(route, spans, 1, 11)
      }
    })

    it('picks faster servers proportionally more often', () => {
      const random = seededRandom(42)
      const spans = [span('fast', 0, 8, { throughput: 3 }), span('slow', 0, 8, { throughput: 1 })]
      let fast = 0
      const draws = 4000
      for (let i = 0; i < draws; i++) {
        if (maxThroughputRoute(spans, 0, 8, random)[0].peerId === 'fast') fast++
      }
      const ratio = fast / (draws - fast)
      assert.ok(ratio > 2.6 && ratio < 3.5, `fast:slow = ${ratio.toFixed(2)}, expected about 3`)
    })

    it('weighs the blocks a server would cover, and treats unknown throughput as equal small weights', () => {
      const random = seededRandom(3)
      // Both unknown: ∝ blocks covered from block 0 within the range, 8 against 4.
      const spans = [span('long', 0, 8, { throughput: 0 }), span('short', 0, 4, { throughput: 0 })]
      let long = 0
      for (let i = 0; i < 3000; i++) if (maxThroughputRoute(spans, 0, 8, random)[0].peerId === 'long') long++
      assert.ok(long / 3000 > 0.6 && long / 3000 < 0.73, `long chosen ${long} of 3000, expected about 2/3`)
      // Clipped to the range, both cover 4 blocks: an even split.
      let clipped = 0
      for (let i = 0; i < 3000; i++) if (maxThroughputRoute(spans, 0, 4, random)[0].peerId === 'long') clipped++
      assert.ok(clipped / 3000 > 0.45 && clipped / 3000 < 0.55, `long chosen ${clipped} of 3000 over 0:4, expected about half`)
    })
  })

  describe('bans', () => {
    it('doubles the ban with each consecutive failure, up to the cap, and resets on success', () => {
      let now = 1_000_000
      const bans = new BanList({ banTimeoutMs: 15_000, maxBanMs: 100_000, now: () => now })
      bans.succeed('a') // it answered once: Petals' bans
      assert.equal(bans.isBanned('a'), false)
      assert.deepEqual([1, 2, 3, 4, 5].map(() => bans.fail('a')), [15_000, 30_000, 60_000, 100_000, 100_000])
      assert.equal(bans.isBanned('a'), true)
      now += 99_999
      assert.equal(bans.isBanned('a'), true)
      now += 1
      assert.equal(bans.isBanned('a'), false, 'the ban runs out')
      assert.equal(bans.fail('a'), 100_000, 'the streak outlives the ban')
      bans.succeed('a')
      assert.equal(bans.isBanned('a'), true, 'a ban in force runs its course, as in Petals')
      assert.equal(bans.fail('a'), 15_000, 'a success resets the streak')
      assert.equal(bans.isBanned('b'), false, 'bans are per peer')
      bans.succeed('never-failed')
    })

    it('defaults to Petals\' 15 s first ban for a server that answered before', () => {
      const bans = new BanList({ now: () => 0 })
      bans.succeed('x')
      assert.equal(bans.fail('x'), 15_000)
      assert.equal(bans.fail('x'), 30_000)
    })

    it('bans a server that never answered for 10 min at its first failure', () => {
      let now = 0
      const bans = new BanList({ now: () => now })
      assert.equal(bans.fail('sybil'), 600_000)
      now = 599_999
      assert.equal(bans.isBanned('sybil'), true)
      assert.equal(bans.fail('sybil'), 900_000, 'then doubling, up to the longest ban')
      bans.succeed('honest')
      assert.equal(bans.fail('honest'), 15_000)
    })

    it('filters banned servers, keeping them only where a block would have no server', () => {
      const bans = new BanList({ now: () => 0 })
      const spans = [span('a', 0, 4), span('b', 0, 4), span('c', 4, 8), span('d', 6, 8), span('e', 8, 12)]
      bans.fail('a')
      bans.fail('c')
      bans.fail('e')
      // a is dropped (b holds 0..3); c is kept for blocks 4, 5; e lies outside 0:8 and goes.
      assert.deepEqual(bans.filter(spans, 0, 8).map(s => s.peerId), ['b', 'c', 'd'])
      // Over 6:12, d covers c's part and e is the only server of 8..11.
      assert.deepEqual(bans.filter(spans, 6, 12).map(s => s.peerId), ['b', 'd', 'e'])
      assert.deepEqual(new BanList().filter(spans, 0, 12), spans)
    })

    it('takes back, where every server of a block is banned, only the one whose ban ends first', () => {
      let now = 0
      const bans = new BanList({ unprovenBanMs: 15_000, now: () => now })
      const spans = [span('dead', 0, 4), span('restarted', 0, 4), span('later', 2, 4)]
      bans.fail('restarted') // failed first, before it was restarted: its ban ends first
      now = 5000
      bans.fail('dead')
      bans.fail('later')
      assert.deepEqual(bans.filter(spans, 0, 4).map(s => s.peerId), ['restarted'], 'one server for all four blocks')
      now = 6000
      bans.fail('restarted') // it failed again: 30 s from now
      assert.deepEqual(bans.filter(spans, 0, 4).map(s => s.peerId), ['dead'], 'blocks 2, 3 are held by dead too')
      assert.deepEqual(bans.filter(spans, 2, 4).map(s => s.peerId), ['dead'])
    })

    it('never takes back a server found computing wrong: its blocks stay missing until its ban ends', () => {
      let now = 0
      const bans = new BanList({ now: () => now })
      const spans = [span('wrong', 0, 4), span('failed', 2, 4)]
      bans.convict('wrong', 60_000)
      bans.fail('failed')
      assert.ok(bans.isBanned('wrong') && bans.isConvicted('wrong') && !bans.isConvicted('failed'))
      assert.deepEqual(bans.filter(spans, 0, 4).map(s => s.peerId), ['failed'], 'the failed one is taken back for blocks 2, 3; blocks 0, 1 have none')
      assert.deepEqual(missingBlocks(bans.filter(spans, 0, 4), 0, 4), [0, 1])
      now = 60_001
      assert.deepEqual(bans.filter(spans, 0, 4).map(s => s.peerId), ['wrong'], 'after its ban, routing may try it again')
    })

    it('waits between retries as Petals does', () => {
      assert.deepEqual([0, 1, 2, 3, 6, 7, 100].map(retryDelayMs), [0, 1000, 2000, 4000, 32_000, 60_000, 60_000])
    })
  })

  describe('announcements', () => {
    const record = (info: Record<string, unknown>): SpanRecord =>
      ({ model: 'm', peerId: 'p', start: 2, end: 6, state: 'online', ts: 0, expiresAt: 1, info })

    it('reads what a server announces', () => {
      const s = serverSpanFromRecord(record({
        version: '0.1.0', throughput: 12.5, inferenceRps: 450, forwardRps: 9000, cacheTokensLeft: 4096,
        nextPings: { q: 0.02, r: 0 }, inferenceMaxLength: 8192, usingRelay: false
      }))
      assert.deepEqual(s, { peerId: 'p', start: 2, end: 6, throughput: 12.5, inferenceRps: 450, cacheTokensLeft: 4096, nextPings: { q: 0.02, r: 0 }, inferenceMaxLength: 8192 })
      assert.equal(serverSpanFromRecord(record({ throughput: 1, cacheTokensLeft: null })).cacheTokensLeft, null)
    })

    it('turns garbage into neutral defaults', () => {
      const s = serverSpanFromRecord(record({
        throughput: 'fast', inferenceRps: NaN, cacheTokensLeft: -50,
        nextPings: { q: -1, r: 'soon', s: null, t: 0.1 }, inferenceMaxLength: 1.5
      }))
      assert.deepEqual(s, { peerId: 'p', start: 2, end: 6, throughput: 0, cacheTokensLeft: 0, nextPings: { t: 0.1 } })
      assert.deepEqual(serverSpanFromRecord(record({ throughput: -3, inferenceRps: -1, cacheTokensLeft: '1e9', nextPings: [1, 2], inferenceMaxLength: -4 })),
        { peerId: 'p', start: 2, end: 6, throughput: 0, cacheTokensLeft: null, nextPings: {} })
      assert.deepEqual(serverSpanFromRecord(record({ throughput: Infinity, inferenceRps: 0, nextPings: 'x' })),
        { peerId: 'p', start: 2, end: 6, throughput: 0, cacheTokensLeft: null, nextPings: {} })
      assert.deepEqual(serverSpanFromRecord({ ...record({}), info: null as unknown as Record<string, unknown> }),
        { peerId: 'p', start: 2, end: 6, throughput: 0, cacheTokensLeft: null, nextPings: {} })
    })

    it('routes around garbage: an invalid inferenceRps counts as 300', () => {
      const spans = [serverSpanFromRecord(record({ inferenceRps: 'infinite' })), span('q', 2, 6, { inferenceRps: 299 })]
      assert.deepEqual(minLatencyRoute(spans, 2, 6), [hop('p', 2, 6)])
    })
  })

  describe('display', () => {
    it('formats a route with short peer ids or given names', () => {
      const a = '12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdef'
      const b = '12D3KooWZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210uvwxyz'
      assert.equal(shortPeerId(a), '12D3KooW…abcdef')
      assert.equal(shortPeerId('short'), 'short')
      assert.equal(formatRoute([hop(a, 0, 3), hop(b, 3, 8)]), '0:3 via 12D3KooW…abcdef → 3:8 via 12D3KooW…uvwxyz')
      assert.equal(formatRoute([hop(a, 0, 3)], id => id === a ? 'alice' : id), '0:3 via alice')
      assert.equal(formatRoute([]), '(empty route)')
    })
  })
})
