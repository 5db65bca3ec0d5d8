// The client's step timeouts (StepTimes): the p90 of the measured one-token steps per block, times
// STEP_TIMEOUT_MULTIPLE, the blocks and the tokens, between MIN_STEP_TIMEOUT_MS and the longest wait.
// And each server's measured speed (ServerSpeeds), which routing trusts over its record.

import assert from 'node:assert/strict'
import { MIN_STEP_TIMEOUT_MS, ServerSpeeds, STEP_TIMEOUT_MULTIPLE, StepTimes } from '../src/petals/client/remote-span.js'

describe('step times', () => {
  it('waits the longest until three steps were measured', () => {
    const times = new StepTimes()
    times.record(1000, 1, 1)
    times.record(1000, 1, 1)
    assert.equal(times.timeoutMs(1, 1, 60_000), 60_000)
    times.record(1000, 1, 1)
    assert.equal(times.timeoutMs(1, 1, 60_000), Math.max(MIN_STEP_TIMEOUT_MS, STEP_TIMEOUT_MULTIPLE * 1000))
  })

  it('takes the p90 of the steps per block, in any order, and ignores steps of several tokens', () => {
    const times = new StepTimes()
    // 100, 200, ... 2000 ms per block, recorded out of order over 2 blocks; the p90 of 20 is the 19th
    for (const ms of [7, 19, 3, 12, 1, 20, 15, 9, 5, 17, 2, 14, 11, 6, 18, 4, 13, 8, 16, 10]) times.record(ms * 200, 2, 1)
    times.record(1_000_000, 2, 8)
    assert.equal(times.timeoutMs(1, 1, Infinity), STEP_TIMEOUT_MULTIPLE * 1900)
    assert.equal(times.timeoutMs(3, 2, Infinity), STEP_TIMEOUT_MULTIPLE * 1900 * 3 * 2)
    assert.equal(times.timeoutMs(3, 2, 60_000), 60_000)
  })

  it('waits at least MIN_STEP_TIMEOUT_MS', () => {
    const times = new StepTimes()
    for (let i = 0; i < 10; i++) times.record(1, 1, 1)
    assert.equal(times.timeoutMs(1, 1, 60_000), MIN_STEP_TIMEOUT_MS)
  })

  it('measures each server\'s blocks per second from three one-token steps on, the round trip taken off but at most half of a step', () => {
    const rtts = new Map([['near', 0.001], ['far', 0.1], ['ping-noise', 0.002]])
    const speeds = new ServerSpeeds(peer => rtts.get(peer))
    const near = (got: number | null, want: number): void => assert.ok(got !== null && Math.abs(got - want) < 1e-6 * want, `${got} for ${want}`)
    for (let i = 0; i < 2; i++) speeds.record('near', 11, 10, 1)
    speeds.record('near', 1000, 10, 8) // a prefill says nothing about decode speed
    assert.equal(speeds.rps('near'), null)
    speeds.record('near', 11, 10, 1)
    near(speeds.rps('near'), 1000) // 10 blocks in 11 ms, 1 of them the round trip
    for (let i = 0; i < 3; i++) speeds.record('far', 300, 10, 1)
    near(speeds.rps('far'), 50) // 300 ms, 100 of them the round trip
    for (let i = 0; i < 3; i++) speeds.record('unknown', 100, 10, 1)
    near(speeds.rps('unknown'), 100) // no ping yet: the whole step counts
    for (let i = 0; i < 3; i++) speeds.record('ping-noise', 1, 5, 1)
    near(speeds.rps('ping-noise'), 10_000) // a ping longer than the step: half of the step still counts
  })

  it('keeps the median of the last 16 steps of a server', () => {
    const speeds = new ServerSpeeds()
    for (let i = 0; i < 16; i++) speeds.record('s', 1000, 1, 1) // 1 block/s
    for (let i = 0; i < 9; i++) speeds.record('s', 100, 1, 1) // then 10 blocks/s
    assert.ok(Math.abs(speeds.rps('s')! - 10) < 1e-9)
  })
})
