// One compute task at a time, inference before forward work (Petals runs inference at priority 1
// and forward/backward at 2 in one runtime). Forward requests arrive as bounded chunks, so a long
// batch job never holds an interactive session back for more than one chunk.

export type Priority = 'inference' | 'forward'

interface Task {
  run: () => Promise<unknown>
  resolve: (value: unknown) => void
  reject: (err: unknown) => void
  signal?: AbortSignal
}

export class TaskQueue {
  private readonly queues: Record<Priority, Task[]> = { inference: [], forward: [] }
  private busy = false

  /** Runs `work` when every earlier task of its priority and every inference task are done. */
  async run<T> (priority: Priority, work: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted()
    return await new Promise<T>((resolve, reject) => {
      this.queues[priority].push({ run: work, resolve: resolve as (value: unknown) => void, reject, signal })
      this.next()
    })
  }

  /** Tasks waiting (not counting the one running). */
  get pending (): number {
    return this.queues.inference.length + this.queues.forward.length
  }

  private next (): void {
    if (this.busy) return
    const task = this.queues.inference.shift() ?? this.queues.forward.shift()
    if (task === undefined) return
    if (task.signal?.aborted === true) { // its client went away while it waited
      task.reject(task.signal.reason)
      this.next()
      return
    }
    this.busy = true
    task.run().then(task.resolve, task.reject).finally(() => {
      this.busy = false
      this.next()
    })
  }
}
