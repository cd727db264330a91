/**
 * Settling a send early (see `MessageTransport.landsWithinMs`): a batch is one send across
 * partitions, and when one broker dies its partitions' records wait for Kafka to move their
 * leaders (seconds), while the live leaders acknowledged theirs long before. Waiting for the
 * whole send made every partition as slow as the dead one (issue 18). Instead, once part of the
 * batch is acknowledged and the rest is overdue, the relay deletes what was acknowledged and
 * holds the rest until Kafka can no longer write it, and goes on claiming.
 */

/** An overdue send is one slower than twice this percentile of recent healthy sends. */
const PERCENTILE = 0.9
/** Healthy sends remembered for the percentile. */
const SAMPLES = 64
/**
 * Shortest wait before the rest of a send counts as overdue, in ms. A healthy send's groups
 * come back within tens of ms of each other; holding a row costs a key a second transaction
 * and a wait for its late acknowledgement, so a spread below this is never taken for a fault.
 */
export const SETTLE_EARLY_MIN_MS = 200
/** Longest wait, whatever the history: a slow cluster must not make a dead broker stall everything again. */
const SETTLE_EARLY_MAX_MS = 5000
/**
 * After the first acknowledgement of a send, how long the others get before the send settles
 * early: groups acknowledged at about the same time (the moment the in-sync replicas shrank
 * after a broker died) go together, so they are not held for nothing.
 */
export const SETTLE_GRACE_MS = 20

/**
 * How long after a sign that some partitions stall (a send settled early, or partly failed while
 * the rest was acknowledged) the shortest overdue threshold applies, in ms. Healthy sends in
 * between do not end it: the stalled partitions' keys come back into batches after their hold,
 * and each such batch would wait the full threshold again while its live part is long done.
 */
export const STALL_MEMORY_MS = 10_000

/** Durations of recent sends that Kafka acknowledged whole, for the overdue threshold. */
export class SendTimes {
  readonly #samples: number[] = []
  #next = 0
  #stalledAt = Number.NEGATIVE_INFINITY

  record(ms: number): void {
    if (this.#samples.length < SAMPLES) this.#samples.push(ms)
    else this.#samples[this.#next] = ms
    this.#next = (this.#next + 1) % SAMPLES
  }

  /** Some partitions stall now (see `STALL_MEMORY_MS`); `at` by `performance.now()`. */
  stalled(at: number): void {
    this.#stalledAt = at
  }

  /**
   * How long a send may take before its unacknowledged part is overdue, in ms: twice the recent
   * p90, or the shortest while partitions stall. On a loaded machine the p90 alone reached about
   * 900 ms, so each batch's live part waited that long behind a dead broker's part (measured in
   * bench/broker-kill.ts); the cost of the short threshold is a part held needlessly, which its
   * own acknowledgement frees as soon as it comes.
   */
  overdueAfter(now = performance.now()): number {
    if (now - this.#stalledAt < STALL_MEMORY_MS) return SETTLE_EARLY_MIN_MS
    if (this.#samples.length === 0) return SETTLE_EARLY_MIN_MS
    const sorted = [...this.#samples].sort((a, b) => a - b)
    const at = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * PERCENTILE))] as number
    return Math.min(SETTLE_EARLY_MAX_MS, Math.max(SETTLE_EARLY_MIN_MS, 2 * at))
  }
}

/** A send settled early: the records acknowledged by then, and the rest's eventual outcome. */
export interface EarlySettle {
  acknowledged: ReadonlySet<number>
}

/**
 * Resolves with the acknowledged records once the send is overdue (`overdueAfter` ms since
 * `started`, and `SETTLE_GRACE_MS` since its first acknowledgement) while part of it is
 * acknowledged and part is not; never resolves otherwise. `stop()` ends the watch (the send
 * settled as a whole). Once it resolved, later acknowledgements go to `follow`'s callback: one
 * broker's partitions acknowledged after the early settle must not wait for another broker's,
 * which may take the client's retries or a request timeout to fail.
 */
export class EarlyWatch {
  readonly #acknowledged = new Set<number>()
  readonly #count: number
  readonly #started: number
  readonly #overdueAfter: number
  #firstAck: number | undefined
  #timer: NodeJS.Timeout | undefined
  #stopped = false
  #fired = false
  /** Acknowledged after the watch resolved, before `follow` was called. */
  #after: number[] = []
  #follower: ((indexes: readonly number[]) => void) | undefined
  #resolve: ((settle: EarlySettle) => void) | undefined
  readonly settled: Promise<EarlySettle>

  constructor(count: number, started: number, overdueAfter: number) {
    this.#count = count
    this.#started = started
    this.#overdueAfter = overdueAfter
    this.settled = new Promise((resolve) => {
      this.#resolve = resolve
    })
  }

  /** The transport's progress report (see `SendProgress`). */
  acknowledged(indexes: readonly number[]): void {
    const valid = indexes.filter((index) => Number.isInteger(index) && index >= 0 && index < this.#count)
    if (this.#fired) {
      if (this.#follower === undefined) this.#after.push(...valid)
      else if (valid.length > 0) this.#follower(valid)
      return
    }
    if (this.#stopped) return
    for (const index of valid) this.#acknowledged.add(index)
    if (this.#acknowledged.size === 0) return
    this.#firstAck ??= performance.now()
    if (this.#timer === undefined) {
      const due = Math.max(this.#started + this.#overdueAfter, this.#firstAck + SETTLE_GRACE_MS)
      this.#timer = setTimeout(() => this.#fire(), Math.max(0, due - performance.now()))
    }
  }

  /** After the watch resolved: `onAcknowledged` gets every acknowledgement since, then each as it comes. */
  follow(onAcknowledged: (indexes: readonly number[]) => void): void {
    this.#follower = onAcknowledged
    const after = this.#after
    this.#after = []
    if (after.length > 0) onAcknowledged(after)
  }

  stop(): void {
    this.#stopped = true
    clearTimeout(this.#timer)
  }

  #fire(): void {
    if (this.#stopped) return
    if (this.#acknowledged.size === 0 || this.#acknowledged.size >= this.#count) return
    this.#stopped = true
    this.#fired = true
    this.#resolve?.({ acknowledged: new Set(this.#acknowledged) })
  }
}
