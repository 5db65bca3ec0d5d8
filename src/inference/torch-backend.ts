// The torch backend: blocks run in a Python worker (python/bmrt_torch_worker.py) with PyTorch, on
// transformers' own Llama/Mistral layers when transformers is installed, else on a small plain
// PyTorch block. The worker holds the weights and KV caches; this side keeps the session table,
// the cache budget and the checks, so the BlockSpan semantics are the JS backend's word for word.
// Messages are framed as in the worker's docstring: two u32 lengths, a JSON header, raw fp32 bytes.

import { spawn, type ChildProcess } from 'node:child_process'
import type { Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { BlockRange, BlockSpan, SpanStep } from './backend.js'
import { checkSpan, type ModelConfig } from './config.js'
import { DTYPE_BYTES, type DType } from './dtype.js'
import { BackendError } from './errors.js'
import { OptionError } from '../util/errors.js'
import { checkCacheTokens, SessionTable, type TableSession } from './session-table.js'

/** The worker script, shipped in the npm package next to dist/. */
export const TORCH_WORKER_SCRIPT = fileURLToPath(new URL('../../../python/bmrt_torch_worker.py', import.meta.url))

export interface TorchSpanOptions {
  /** the interpreter (default: $BMRT_PYTHON, else python3) */
  python?: string
  /** torch device: cpu (default), cuda, cuda:N, mps */
  device?: string
  /** compute and weight dtype (default: f32 on cpu, the checkpoint's dtype on accelerators) */
  format?: DType
  /** cache tokens per block, Petals' attn_cache_tokens (default 0: no limit); see BlockSpan */
  maxCacheTokens?: number
  onBlock?: (block: number) => void
  /** use the plain-PyTorch block even when transformers is importable (tests) */
  plain?: boolean
  /** the worker's environment (default: this process's) */
  env?: NodeJS.ProcessEnv
}

/** What the worker says once its blocks are loaded. */
export interface TorchWorkerInfo {
  python: string
  torch: string
  transformers: string | null
  impl: 'transformers' | 'plain'
  plain_reason: string | null
  device: string
  /** PyTorch's name of the compute dtype (`bfloat16`): see TORCH_DTYPES */
  dtype: string
  weight_bytes: number
  pid: number
}

/** PyTorch's names of the dtypes the worker computes in, as it reports them. */
const TORCH_DTYPES: Record<string, DType> = { float32: 'f32', bfloat16: 'bf16', float16: 'f16' }

interface Header { type: string, ok?: boolean, error?: string, code?: string, index?: number }

interface Pending { resolve: (payload: Buffer) => void, reject: (err: Error) => void }

const STDERR_LINES = 20

function frame (header: object, payload?: Uint8Array): Buffer {
  const json = Buffer.from(JSON.stringify(header))
  const prefix = Buffer.alloc(8)
  prefix.writeUInt32LE(json.length, 0)
  prefix.writeUInt32LE(payload?.byteLength ?? 0, 4)
  return payload === undefined ? Buffer.concat([prefix, json]) : Buffer.concat([prefix, json, payload])
}

/**
 * One worker process: requests go out in order and the replies come back in that order, so a
 * queue of pending calls matches them. When the process ends, every pending call is rejected at once.
 */
class TorchWorker {
  readonly process: ChildProcess
  /** settles when the worker has loaded its blocks */
  readonly ready: Promise<TorchWorkerInfo>
  /** set once the process is gone: why, for every later call */
  dead: Error | null = null
  private readonly pending: Pending[] = []
  private buffer: Buffer = Buffer.alloc(0)
  private readonly stderrLines: string[] = []
  private stderrPartial = ''

  constructor (private readonly python: string, args: string[], env: NodeJS.ProcessEnv | undefined,
    private readonly onBlock?: (block: number) => void) {
    this.process = spawn(python, [TORCH_WORKER_SCRIPT, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: env ?? process.env })
    let readyCall!: Pending
    this.ready = new Promise<Buffer>((resolve, reject) => { readyCall = { resolve, reject } })
      .then(payload => JSON.parse(payload.toString()) as TorchWorkerInfo)
    this.ready.catch(() => {}) // a worker that never gets used must not raise an unhandled rejection
    this.pending.push(readyCall)
    this.process.stdout!.on('data', (chunk: Buffer) => this.receive(chunk))
    this.process.stderr!.on('data', (chunk: Buffer) => this.keepStderr(chunk.toString()))
    this.process.stdin!.on('error', () => {}) // EPIPE after a crash: 'exit' reports it
    this.process.on('error', err => this.die(this.startError(err)))
    // 'close' comes once stderr is drained, so the message has its last lines; 'exit' alone is
    // enough should something else hold the pipes open.
    const ended = (code: number | null, signal: NodeJS.Signals | null): void => {
      const how = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`
      const stderr = this.stderrTail()
      this.die(new Error(`the torch worker (${this.python}) ${how}${stderr === '' ? '' : `; its last stderr lines:\n${stderr}`}`))
    }
    this.process.on('close', ended)
    this.process.on('exit', (code, signal) => { setTimeout(() => ended(code, signal), 500).unref() })
    this.busy() // loading: the ready message is pending
  }

  /** Sends a request; the promise settles with the reply's payload. */
  async request (header: object, payload?: Uint8Array): Promise<Buffer> {
    if (this.dead !== null) throw this.dead
    return await new Promise<Buffer>((resolve, reject) => {
      if (this.pending.length === 0) this.busy()
      this.pending.push({ resolve, reject })
      this.process.stdin!.write(frame(header, payload))
    })
  }

  kill (): void {
    this.die(new Error('the torch span was closed'))
    this.process.kill('SIGKILL')
  }

  /** Keeps node alive while calls are pending, and lets it exit while the worker idles. */
  private busy (): void {
    this.process.ref();
    (this.process.stdout as unknown as Socket).ref()
  }

  private idle (): void {
    this.process.unref();
    (this.process.stdout as unknown as Socket).unref();
    (this.process.stderr as unknown as Socket).unref();
    (this.process.stdin as unknown as Socket).unref()
  }

  private settle (): Pending {
    const call = this.pending.shift()!
    if (this.pending.length === 0) this.idle()
    return call
  }

  private receive (chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
    while (this.buffer.length >= 8) {
      const headerLength = this.buffer.readUInt32LE(0)
      const payloadLength = this.buffer.readUInt32LE(4)
      if (this.buffer.length < 8 + headerLength + payloadLength) return
      const header = JSON.parse(this.buffer.subarray(8, 8 + headerLength).toString()) as Header
      // Copy the payload out: Float32Array views need their own aligned buffer anyway.
      const payload = Buffer.from(this.buffer.subarray(8 + headerLength, 8 + headerLength + payloadLength))
      this.buffer = this.buffer.subarray(8 + headerLength + payloadLength)
      this.dispatch(header, payload)
    }
  }

  private dispatch (header: Header, payload: Buffer): void {
    if (header.type === 'block') {
      this.onBlock?.(header.index!)
    } else if (header.type === 'ready') {
      this.settle().resolve(Buffer.from(JSON.stringify(header)))
    } else if (header.type === 'fatal') {
      this.die(this.fatalError(header))
    } else if (header.type === 'reply' && this.pending.length > 0) {
      const call = this.settle()
      if (header.ok === true) call.resolve(payload)
      else call.reject(new BackendError(`torch worker: ${header.error ?? 'unknown error'}`))
    }
  }

  private die (err: Error): void {
    if (this.dead === null) this.dead = err
    for (const call of this.pending.splice(0)) call.reject(this.dead)
    this.idle()
  }

  private startError (err: Error): Error {
    return new OptionError(['load.python'], name => `bmrt could not start ${this.python} (${err.message}): install Python 3.9+ or set ${name('load.python')} to one`)
  }

  private fatalError ({ code, error }: Header): Error {
    if (code === 'NO_TORCH' || code === 'TORCH_TOO_OLD') {
      return new OptionError(['load.python'], name => `${this.python} has no torch: pip install torch (and transformers) for that interpreter, ` +
        `or set ${name('load.python')} to one that has them (${error})`)
    }
    return Object.assign(new Error(`the torch worker could not start: ${error}`), { code })
  }

  private keepStderr (text: string): void {
    const lines = (this.stderrPartial + text).split('\n')
    this.stderrPartial = lines.pop()!
    this.stderrLines.push(...lines)
    this.stderrLines.splice(0, Math.max(0, this.stderrLines.length - STDERR_LINES))
  }

  private stderrTail (): string {
    return [...this.stderrLines, this.stderrPartial].filter(l => l.trim() !== '').slice(-STDERR_LINES).join('\n')
  }
}

interface Session extends TableSession {
  /** the worker that holds its cache */
  worker: TorchWorker
}

let warnedPlain = false

/** Starts a worker for blocks [start, end) of the model in `dir` and waits until it has loaded them. */
export async function loadTorchSpan (dir: string, config: ModelConfig, start: number, end: number,
  options: TorchSpanOptions = {}): Promise<TorchBlockSpan> {
  checkSpan(config, start, end)
  const maxCacheTokens = checkCacheTokens(options.maxCacheTokens ?? 0)
  const span = new TorchBlockSpan(dir, config, start, end, maxCacheTokens, options)
  try {
    const info = await span.worker.ready
    if (info.impl === 'plain' && options.plain !== true && !warnedPlain) {
      warnedPlain = true
      process.emitWarning(`the torch backend runs its plain PyTorch blocks: ${info.plain_reason ?? 'transformers is missing'}; ` +
        'pip install transformers to run transformers\' own Llama layers', { code: 'BMRT_TORCH_PLAIN' })
    }
    span.info = info
    return span
  } catch (err) {
    span.close()
    throw err
  }
}

export class TorchBlockSpan implements BlockSpan {
  readonly backend = 'torch'
  /** what the current worker reported when it came up */
  info: TorchWorkerInfo | null = null
  worker: TorchWorker
  private readonly python: string
  private readonly sessions: SessionTable<Session>
  private closed = false
  private readonly killOnExit = (): void => { this.worker.process.kill('SIGKILL') }

  constructor (private readonly dir: string, readonly config: ModelConfig, readonly start: number, readonly end: number,
    maxCacheTokens: number, private readonly options: TorchSpanOptions) {
    this.sessions = new SessionTable(this, config.hiddenSize, maxCacheTokens)
    this.python = options.python ?? process.env.BMRT_PYTHON ?? 'python3'
    this.worker = this.startWorker()
    process.on('exit', this.killOnExit)
  }

  /** as the worker counted them once loaded */
  get weightBytes (): number {
    return this.info?.weight_bytes ?? 0
  }

  /** the cache is kept in the compute dtype the worker chose */
  get cacheBytesPerToken (): number {
    const bytes = DTYPE_BYTES[TORCH_DTYPES[this.info?.dtype ?? ''] ?? 'f32']
    return (this.end - this.start) * 2 * this.config.numKvHeads * this.config.headDim * bytes
  }

  /** The worker's process id (tests kill it to check recovery). */
  get workerPid (): number | undefined {
    return this.worker.process.pid
  }

  private startWorker (): TorchWorker {
    const args = ['--model', this.dir, '--start', String(this.start), '--end', String(this.end), '--device', this.options.device ?? 'cpu']
    if (this.options.format !== undefined) args.push('--dtype', this.options.format)
    if (this.options.plain === true) args.push('--plain')
    return new TorchWorker(this.python, args, this.options.env, this.options.onBlock)
  }

  openSession (maxLength: number, blocks?: BlockRange): number {
    if (this.closed) throw new Error('the torch span is closed')
    return this.sessions.open(maxLength, blocks, (session, id) => {
      if (this.worker.dead !== null) {
        // The worker died: a fresh one reloads the blocks; the open request waits in its stdin meanwhile.
        this.worker = this.startWorker()
        this.worker.ready.then(info => { this.info = info }, () => {})
      }
      // Not awaited: the worker handles requests in order, so the first forward waits behind it, and
      // a failure here (out of memory, say) fails that forward too, since the worker knows no session.
      this.worker.request({ op: 'open', id, max_length: maxLength, first: session.start, count: session.end - session.start }).catch(() => {})
      return { ...session, worker: this.worker }
    })
  }

  sessionLength (session: number): number {
    return this.sessions.get(session).length
  }

  closeSession (session: number): void {
    const s = this.sessions.close(session)
    if (s !== undefined && s.worker === this.worker && s.worker.dead === null) this.worker.request({ op: 'close', id: session }).catch(() => {})
  }

  cacheUsage (): { sessions: number, reserved: number, limit: number } {
    return this.sessions.usage()
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    this.sessions.clear()
    process.off('exit', this.killOnExit)
    this.worker.kill()
  }

  async forward (session: number, hidden: Float32Array, position?: number): Promise<Float32Array> {
    const [out] = await this.forwardBatch([{ session, hidden, position }])
    return out
  }

  async forwardBatch (steps: SpanStep[]): Promise<Float32Array[]> {
    const checked = this.sessions.checkBatch(steps)
    for (const { id, session } of checked) {
      if (session.worker !== this.worker) throw new Error(`session lost: the torch worker restarted (session ${id}); open a new session`)
    }
    const worker = this.worker
    if (worker.dead !== null) throw worker.dead
    const payload = new Uint8Array(checked.reduce((sum, c) => sum + c.hidden.byteLength, 0))
    let offset = 0
    for (const { hidden } of checked) {
      payload.set(new Uint8Array(hidden.buffer, hidden.byteOffset, hidden.byteLength), offset)
      offset += hidden.byteLength
    }
    return await this.sessions.running(checked, async () => {
      const reply = await worker.request({ op: 'forward', steps: checked.map(c => ({ id: c.id, position: c.start, tokens: c.n })) }, payload)
      const all = new Float32Array(reply.buffer, reply.byteOffset, reply.byteLength / 4)
      const outputs: Float32Array[] = []
      let row = 0
      for (const { id, session, n, start } of checked) {
        if (!this.sessions.has(id)) throw new Error(`session ${id} was closed during a step`)
        session.length = start + n
        outputs.push(all.slice(row * this.config.hiddenSize, (row + n) * this.config.hiddenSize))
        row += n
      }
      return outputs
    })
  }
}
