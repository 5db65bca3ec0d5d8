// What happens during a chaos run, as it happens: tokens, generations, failovers and the stalls
// they cost, chaos actions, and samples of the DHT. Times are milliseconds since the chaos began.

export type Outcome = 'equal' | 'wrong' | 'failed' | 'cut off'

export interface GenerationRecord {
  client: number
  prompt: number
  startMs: number
  endMs: number
  /** equal: the reference's tokens; wrong: other tokens; failed: an error after every retry;
   * cut off: still running when the run ended */
  outcome: Outcome
  failovers: number
  /** wrong: the first position that differs; failed: the error */
  detail?: string
}

/** A generation held up by failures: from its last token (or start) to its next token. */
export interface StallRecord {
  client: number
  atMs: number
  /** last token before the failure to the first token after it */
  ms: number
  /** last token before the failure to the client's first re-route */
  detectMs: number
  failovers: number
}

export interface DhtSample {
  atMs: number
  /** how long the lookup took */
  tookMs: number
  /** servers online (running, not hung, not moving) when the lookup began */
  expected: number
  /** records in state online */
  seen: number
  /** online records of an expected server with its current span */
  matched: number
  /** online records of servers that were dead, hung, moving or starting */
  stale: number
  /** online records of expected servers with another span (they moved) */
  wrongSpan: number
  /** expected servers with no online record */
  missing: number
  /** blocks with no online record */
  uncoveredBlocks: number
  /** the longest that a dead or hung server's record had outlived its server (ms), 0 if none */
  oldestStaleMs: number
}

export class Recorder {
  private t0 = performance.now()
  readonly tokenTimes: number[] = []
  readonly generations: GenerationRecord[] = []
  readonly stalls: StallRecord[] = []
  readonly failoverTimes: number[] = []
  /** client waits for servers (no route, or backing off before a retry) */
  waits = 0
  readonly actions: Array<{ atMs: number, kind: string, text: string }> = []
  readonly samples: DhtSample[] = []
  /** spot checks by outcome (agreed, server wrong, verifier wrong, unsettled, unchecked) */
  readonly checks: Record<string, number> = {}
  /** servers a client found wrong: by its own spot check, or by checking evidence another published */
  readonly convictions: Array<{ client: number, peerId: string, atMs: number, by: 'spot check' | 'evidence' }> = []
  /** periods in which some block had no online server */
  readonly uncovered: Array<{ fromMs: number, toMs: number | null }> = []

  constructor (private readonly log: (line: string) => void = () => {}) {}

  /** Starts the clock: times are counted from now on. */
  begin (): void {
    this.t0 = performance.now()
  }

  /** Milliseconds since begin(). */
  now (): number {
    return performance.now() - this.t0
  }

  /** Logs `text` with the time. */
  say (text: string): void {
    this.log(`[${(this.now() / 1000).toFixed(1).padStart(6)} s] ${text}`)
  }

  action (kind: string, text: string): void {
    this.actions.push({ atMs: this.now(), kind, text })
    this.say(text)
  }

  /** Called whenever the fleet's coverage may have changed. */
  coverage (complete: boolean): void {
    const open = this.uncovered.at(-1)
    const isOpen = open !== undefined && open.toMs === null
    if (!complete && !isOpen) {
      this.uncovered.push({ fromMs: this.now(), toMs: null })
      this.say('some block has no online server now')
    } else if (complete && isOpen) {
      open.toMs = this.now()
      this.say(`every block has an online server again (after ${((open.toMs - open.fromMs) / 1000).toFixed(1)} s)`)
    }
  }
}
