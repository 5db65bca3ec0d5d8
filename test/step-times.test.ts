// The client's step timeouts (StepTimes): the p90 of the measured one-token steps per block, times
// STEP_TIMEOUT_MULTIPLE, the blocks and the tokens, between MIN_STEP_TIMEOUT_MS and the longest wait.

import assert from 'node:assert/strict'
import { MIN_STEP_TIMEOUT_MS, STEP_TIMEOUT_MULTIPLE, StepTimes } from '../src/petals/client/remote-span.js'

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
})
