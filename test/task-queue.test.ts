// The server's compute queue: one task at a time, inference steps ahead of waiting forward work,
// and work of a client that went away dropped before it runs.

import assert from 'node:assert/strict'
import { TaskQueue } from '../src/petals/server/task-queue.js'

describe('task queue', () => {
  it('runs one task at a time, inference before forward work that waits', async () => {
    const queue = new TaskQueue()
    const order: string[] = []
    let release!: () => void
    const blocker = new Promise<void>(resolve => { release = resolve })
    let running = 0
    const task = (name: string, wait?: Promise<void>) => async () => {
      running++
      assert.equal(running, 1, 'tasks never overlap')
      order.push(name)
      await wait
      running--
      return name
    }
    const done = [
      queue.run('forward', task('forward 1', blocker)),
      queue.run('forward', task('forward 2')),
      queue.run('forward', task('forward 3')),
      queue.run('inference', task('inference 1')),
      queue.run('inference', task('inference 2'))
    ]
    assert.equal(queue.pending, 4)
    release()
    assert.deepEqual(await Promise.all(done), ['forward 1', 'forward 2', 'forward 3', 'inference 1', 'inference 2'])
    assert.deepEqual(order, ['forward 1', 'inference 1', 'inference 2', 'forward 2', 'forward 3'])
  })

  it('drops a waiting task whose client went away, and goes on with the rest', async () => {
    const queue = new TaskQueue()
    let release!: () => void
    const first = queue.run('inference', async () => await new Promise<void>(resolve => { release = resolve }))
    const gone = new AbortController()
    let ran = false
    const dropped = queue.run('inference', async () => { ran = true }, gone.signal)
    const after = queue.run('forward', async () => 'after')
    gone.abort(new Error('client closed the stream'))
    release()
    await first
    await assert.rejects(dropped, /client closed the stream/)
    assert.equal(await after, 'after')
    assert.equal(ran, false)
  })
})
