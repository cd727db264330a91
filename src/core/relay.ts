import { backoffDelay } from './backoff.ts'
import { describe, ErrorCodes, invalidArgument, KEntityError } from './errors.ts'
import { type Logger, type LoggerOption, resolveLogger } from './logger.ts'
import type { StoredMessage } from './record.ts'
import { type RelayEndpoints, RelayLog } from './relay-log.ts'
import { DEFAULT_RETRY_POLICY, isRetryable, type RetryPolicy, resolveRetryPolicy } from './retry.ts'
import {
  countedAttempts,
  type FailedDelivery,
  type MessageTransport,
  type RelayStore,
  type SendFailure,
} from './seams.ts'
import { waitAtMost } from './wait.ts'

export type NodeMode = 'single' | 'exclusive' | 'concurrent'

export interface RelayOptions {
  /**
   * How often to poll when there is no backlog, in ms (default 1000): each poll starts this long
   * after the previous one started. A full batch polls again at once, a wake-up sooner.
   */
  pollingInterval?: number
  /** Most messages claimed, sent and deleted per batch (default 500). */
  maxMessagesPerPoll?: number
  /**
   * `single` (default): meant to be the only relay. It takes the same leader lock as
   * `exclusive`, so a second `single` relay started by mistake never claims: it stands by, says
   * once (a `leadership` event with a `reason`, and a process warning) that another relay holds
   * the outbox, and takes over when that one goes. `exclusive`: run it in every process; one
   * holds the leader lock and relays, the others stand by quietly and take over when it goes.
   * `concurrent`: every relay works, sharing the messages; a key is only ever held by one relay
   * at a time, so per-key order holds. Modes cannot be mixed on one outbox: a concurrent relay
   * waits while a single/exclusive relay leads, and a leader waits while concurrent relays run.
   */
  mode?: NodeMode
  /** How often a relay that stands by (see `mode`) tries again to relay, in ms (default 1000). */
  leaderCheckInterval?: number
  /** First and largest delay after a failed batch or connection, in ms (defaults 250 / 30000). */
  retryBackoff?: { initial?: number; max?: number }
  /**
   * Claim the next batch on a second database session while the current batch is on its way to
   * Kafka, and delete the acknowledged batch while the next one is sent (default true where the
   * dialect supports it; PostgreSQL does). Costs one more connection per relay.
   */
  pipeline?: boolean
  /** Called for every relay event; never throws into the loop. */
  onEvent?: (event: RelayEvent) => void
  /**
   * Where the relay says what changes: started, leader or standby, a failure that starts (once,
   * not per retry) and its end, dead letters, stopped. A pino/bunyan-like logger (`console`
   * works too), or `false` for none. Default: the outbox's `logger`, else warnings and errors on
   * stderr, one line each.
   */
  logger?: LoggerOption
  /** @internal What the relay connects to, for log lines (adapters fill it, without credentials). */
  endpoints?: RelayEndpoints
  /** Called once when `stop()` completes (used by adapters to forget the relay). */
  onStop?: () => void
  /** Default retry policy for messages that fail on their own (topics may override it). */
  retry?: Partial<RetryPolicy>
  /** Per-topic retry policies by Kafka topic name (adapters fill it from the topic mapping). */
  topicRetry?: ReadonlyMap<string, Partial<RetryPolicy>>
  /**
   * Before its first claim, create the outbox's missing topics as declared (`partitions`,
   * `replicationFactor`, `configs`) and check existing ones, like `outbox.ensureTopics()`
   * (default false). The result comes as a `topics` event; a difference from a declaration is
   * also a warning in the relay's log (`KE_TOPIC_MISMATCH`), never a failure. A failure to create is an
   * `error` event (stage `connect`) and is retried with backoff; nothing is claimed until it works.
   * Needs Kafka connection options (not a transport object).
   */
  ensureTopics?: boolean
  /**
   * @internal The relay's clock in ms since the epoch (default `Date.now`), so tests can put it
   * off. Retry times never come from it: the store computes them on the database's clock.
   */
  now?: () => number
}

export type RelayEvent =
  | { type: 'delivered'; count: number; durationMs: number }
  /** A message failed on its own: retried at `retryAt`, or moved to the dead letters. */
  | {
      type: 'message-failed'
      id: string
      topic: string
      attempts: number
      error: string
      deadLettered: boolean
      retryAt: Date | null
    }
  /**
   * Single and exclusive mode: this relay became the leader, or stopped being it. `reason` says
   * why a relay is not relaying when another relay holds the outbox (also for a concurrent relay
   * kept waiting by a leader, or for a leader kept waiting by concurrent relays); sent once each
   * time the relay starts waiting.
   */
  | { type: 'leadership'; leader: boolean; reason?: string }
  | { type: 'error'; stage: 'connect' | 'claim' | 'send' | 'acknowledge'; error: unknown; retryInMs: number }
  /**
   * Kafka took the rest of the batch but not these messages, for a reason that is not theirs (a
   * partition whose leader is moving, a dead broker): they wait `retryInMs` without using an
   * attempt, and later messages of their keys wait behind them.
   */
  | { type: 'held'; ids: string[]; error: string; retryInMs: number }
  /** `ensureTopics: true`: the topics the relay created, found as declared, or found different. */
  | {
      type: 'topics'
      created: string[]
      ok: string[]
      mismatched: Array<{
        topic: string
        field: string
        declared: string | number
        actual: string | number | null
      }>
    }

export interface StopOptions {
  /** How long to let the in-flight batch finish before its claim is released, in ms (default 10000). */
  timeout?: number
}

interface ResolvedOptions {
  pipeline: boolean
  pollingInterval: number
  maxMessagesPerPoll: number
  mode: NodeMode
  leaderCheckInterval: number
  backoff: { initial: number; max: number }
  onEvent: (event: RelayEvent) => void
  logger: Logger
  endpoints: RelayEndpoints
  onStop: () => void
  retry: RetryPolicy
  topicRetry: Map<string, RetryPolicy>
  now: () => number
}

export const RELAY_DEFAULTS = {
  pollingInterval: 1000,
  maxMessagesPerPoll: 500,
  mode: 'single' as NodeMode,
  leaderCheckInterval: 1000,
  retryBackoff: { initial: 250, max: 30_000 },
}

/**
 * Moves committed outbox messages to Kafka: claim a batch oldest first, send it as one batch,
 * delete exactly what Kafka acknowledged. The loop knows nothing about SQL or Kafka clients;
 * it only drives a RelayStore and a MessageTransport.
 */
export class OutboxRelay {
  readonly #store: RelayStore
  readonly #transport: MessageTransport
  readonly #options: ResolvedOptions
  #running: Promise<void> | undefined
  #stopping = false
  #closed = false
  #leader = false
  /** The relay stands by because another relay holds the outbox, and has said so once. */
  #standbyReported = false
  #failures = 0
  /** Consecutive whole-batch failures; after a few, the batch is split to find the bad messages. */
  #batchFailures = 0
  /** When Kafka last acknowledged a send of this relay. */
  #lastSendOk = 0
  #sleep: AbortController | undefined
  #wakeRequested = false
  /** The store's second session when pipelining (see `RelayOptions.pipeline`). */
  readonly #companion: RelayStore | undefined
  /** A batch claimed ahead, to be sent once the batch before it was acknowledged by Kafka. */
  #ahead: ClaimedBatch | undefined
  /** Deletion of batches Kafka acknowledged, still running; settled before the next claim on its session. */
  #acking: Promise<void> | undefined
  /**
   * An acknowledged batch whose delete waits to go with the next claim on its session, in the
   * same round trip (`RelayStore.completeAndClaim`); `#settleAcks` runs it alone if no claim comes.
   */
  #deferredAck: DeferredAck | undefined
  /**
   * The last batch was claimed ahead, while the other session still held keys and rows: short
   * or not, it says nothing about how much is left, so the loop claims again without pausing.
   */
  #sentAhead = false
  /** Concurrent mode: claims in a row that found nothing (see #contendedPause). */
  #emptyPolls = 0
  /** Log lines for changes of state (see `RelayOptions.logger`). */
  readonly #log: RelayLog

  constructor(store: RelayStore, transport: MessageTransport, options: RelayOptions = {}) {
    this.#store = store
    this.#transport = transport
    this.#options = resolveOptions(options)
    this.#log = new RelayLog(
      this.#options.logger,
      this.#options.endpoints,
      this.#options.backoff.max,
      this.#options.now,
    )
    this.#companion = this.#options.pipeline ? store.companion?.() : undefined
  }

  /** Single and exclusive mode: this relay holds the leader lock; concurrent: it is admitted to claim. */
  get isLeader(): boolean {
    return this.#leader && (this.#running !== undefined || this.#options.mode !== 'concurrent')
  }

  get isRunning(): boolean {
    return this.#running !== undefined
  }

  /** Starts the background loop; resolves once it runs (it does not wait for the first batch). */
  async start(): Promise<void> {
    this.#assertOpen('start')
    if (this.#running) throw new KEntityError(ErrorCodes.RELAY_RUNNING, 'the relay is already running')
    this.#stopping = false
    this.#log.started(this.#options.mode)
    this.#running = this.#loop().finally(() => {
      this.#running = undefined
    })
  }

  /**
   * Relays at most one batch and returns how many messages Kafka acknowledged. For tests and
   * scripts; do not mix with `start()`.
   */
  async runOnce(): Promise<number> {
    this.#assertOpen('runOnce')
    if (this.#running)
      throw new KEntityError(ErrorCodes.RELAY_RUNNING, 'runOnce() cannot be used while the relay loop runs')
    if (!this.#store.healthy) {
      this.#leader = false
      await this.#store.connect()
    }
    if (!(await this.#ensureLeadership())) return 0
    return this.#relayBatch()
  }

  /** Relays until a poll finds nothing ready; returns the number of messages dealt with. */
  async drain(): Promise<number> {
    let total = 0
    for (;;) {
      const count = await this.runOnce()
      total += count
      // A short batch is not the end: isolating a failure can leave other keys ready.
      if (count === 0) return total
    }
  }

  /** Nudges the loop to poll now instead of at the end of its polling interval. */
  wake(): void {
    // A standby has nothing to relay: it tries the leader lock once per leaderCheckInterval.
    if (!this.#leader) return
    this.#wakeRequested = true
    this.#sleep?.abort()
  }

  /**
   * Stops claiming, lets the in-flight batch finish within `timeout`, then closes the database
   * session (which releases an unfinished claim: its messages stay in the outbox) and the producer.
   */
  async stop(options: StopOptions = {}): Promise<void> {
    if (this.#closed) return
    const timeout = options.timeout ?? 10_000
    if (!Number.isFinite(timeout) || timeout < 0)
      throw invalidArgument(`stop(): 'timeout' must be a number of ms >= 0`)
    this.#stopping = true
    this.#closed = true
    this.#log.stopping()
    this.#sleep?.abort()
    await waitAtMost(this.#running, timeout)
    // Closing the session rolls back an unfinished claim (its messages stay in the outbox);
    // closing the producer aborts a send that is still waiting for the broker.
    await this.#store.close().catch(() => {})
    await this.#companion?.close().catch(() => {})
    await this.#transport.close().catch(() => {})
    await waitAtMost(this.#running, 5000)
    this.#setLeader(false)
    this.#log.stopped()
    this.#options.onStop()
  }

  /**
   * Stops the relay gracefully on SIGTERM/SIGINT (stop claiming, finish or release the in-flight
   * batch within `timeout`), then exits with code 0 unless the application listens to the signal
   * itself. Returns a function that removes the handlers.
   */
  stopOnSignals(options: { signals?: NodeJS.Signals[]; timeout?: number } = {}): () => void {
    const signals = options.signals ?? ['SIGTERM', 'SIGINT']
    if (!Array.isArray(signals) || signals.length === 0 || signals.some((s) => typeof s !== 'string')) {
      throw invalidArgument(
        `stopOnSignals(): 'signals' must be a non-empty array of signal names like ['SIGTERM']`,
      )
    }
    const handler = (signal: NodeJS.Signals) => {
      remove()
      void this.stop({ timeout: options.timeout ?? 10_000 }).finally(() => {
        if (process.listenerCount(signal) === 0) process.exit(0)
      })
    }
    const remove = () => {
      for (const signal of signals) process.removeListener(signal, handler)
    }
    for (const signal of signals) process.on(signal, handler)
    return remove
  }

  #assertOpen(what: string): void {
    if (this.#closed) {
      throw new KEntityError(
        ErrorCodes.RELAY_STOPPED,
        `${what}() was called after stop(); create a new relay instead`,
      )
    }
  }

  async #loop(): Promise<void> {
    while (!this.#stopping) {
      const pollStarted = performance.now()
      let pause = this.#options.pollingInterval
      let stage: 'connect' | 'claim' = 'connect'
      try {
        if (!this.#store.healthy) {
          await this.#settleAcks()
          await this.#settlePipeline()
          this.#setLeader(false)
          await this.#store.connect()
        }
        stage = 'claim'
        if (!(await this.#ensureLeadership())) {
          await this.#settleAcks()
          await this.#settlePipeline()
          this.#log.databaseOk()
          pause = this.#options.leaderCheckInterval
        } else {
          const count = this.#companion
            ? await this.#relayPipelined(this.#companion)
            : await this.#relayBatch()
          // An empty poll is no proof of recovery: failed messages are parked until their retry time.
          if (count > 0) this.#failures = 0
          this.#log.databaseOk()
          if (count >= this.#options.maxMessagesPerPoll || this.#sentAhead) continue
          if (this.#options.mode === 'concurrent') pause = this.#contendedPause(count)
          // The interval runs from one poll's start to the next one's: a short batch that took
          // 5 ms of a 10 ms interval waits 5 ms more, not 10. Counted from the batch's end, it
          // stretched by every batch's time: 10 ms polling cycled every 15-18 ms at 1,000 msg/s,
          // and its commit-to-Kafka p99 was 35-42 ms against 20-23 ms counted from the start
          // (bench scenario 3, short mode, side by side).
          pause = Math.max(0, Math.round(pause - (performance.now() - pollStarted)))
        }
      } catch (error) {
        await this.#settlePipeline()
        if (this.#stopping) break
        this.#failures++
        pause = backoffDelay(this.#failures, this.#options.backoff)
        const failedStage = error instanceof RelayStageError ? error.stage : stage
        // Kafka failed, so the database answered this poll's claim.
        if (failedStage === 'send') this.#log.databaseOk()
        this.#emit({ type: 'error', stage: failedStage, error: unwrap(error), retryInMs: pause })
        if (!this.#store.healthy) this.#setLeader(false)
      }
      if (this.#stopping) break
      await this.#pause(pause)
    }
    await this.#settlePipeline()
  }

  /**
   * In concurrent mode a short or empty claim often means other relays hold the keys, not that
   * the outbox is drained: poll again soon, doubling the pause while claims stay empty, up to
   * the polling interval (so an idle relay still polls once per interval).
   */
  #contendedPause(count: number): number {
    this.#emptyPolls = count > 0 ? 0 : this.#emptyPolls + 1
    return Math.min(this.#options.pollingInterval, CONTENDED_PAUSE_MS * 2 ** Math.min(this.#emptyPolls, 16))
  }

  /**
   * Every mode asks the store, which answers from memory while this relay already holds the
   * outbox (no round trip per claim): single and exclusive relays hold the leader lock, and
   * concurrent ones a share of the outbox that excludes a leader (see `RelayStore`).
   */
  async #ensureLeadership(): Promise<boolean> {
    const leader = await this.#store.tryAcquireLeadership()
    const mode = this.#options.mode
    // A single relay is meant to lead: only standing by, and taking over afterwards, are news.
    if (mode === 'exclusive' || (mode === 'single' && (!leader || this.#standbyReported)))
      this.#log.leadership(leader)
    this.#setLeader(leader)
    if (leader) this.#standbyReported = false
    else if (!this.#standbyReported && this.#store.heldBy !== undefined) {
      this.#standbyReported = true
      this.#reportStandby(this.#store.heldBy)
    }
    return leader
  }

  /**
   * Once per wait: another relay holds the outbox. Quiet (the event only) for an exclusive
   * standby, which is how that mode is meant to run; loud for the other modes, where it means
   * two relays were configured in ways that cannot share one outbox.
   */
  #reportStandby(heldBy: 'leader' | 'concurrent'): void {
    const mode = this.#options.mode
    const reason =
      heldBy === 'leader'
        ? mode === 'concurrent'
          ? `another relay leads this outbox (mode 'single' or 'exclusive'), so this concurrent relay waits and claims nothing: relays of one outbox cannot mix modes. Run every relay with mode: 'concurrent' to share the work, or stop the leader`
          : mode === 'single'
            ? `another relay already holds this outbox, so this 'single' relay stands by and claims nothing until it goes. To run a standby on purpose use mode: 'exclusive' on every relay; to share the work use mode: 'concurrent' on every relay (PostgreSQL and MySQL/MariaDB; SQLite has one relay per outbox)`
            : `another relay leads this outbox; this exclusive relay stands by`
        : mode === 'concurrent'
          ? 'as many concurrent relays as this database can admit already run on this outbox; this one waits for one of them to stop'
          : `concurrent relays are running on this outbox, so this '${mode}' relay waits and claims nothing: relays of one outbox cannot mix modes. Use mode: 'concurrent' on every relay to share the work, or stop the concurrent relays`
    this.#emit({ type: 'leadership', leader: false, reason })
    this.#log.standby(reason, mode !== 'exclusive' || heldBy === 'concurrent')
  }

  /** Returns the number of messages dealt with (delivered or dead-lettered). */
  async #relayBatch(): Promise<number> {
    const started = performance.now()
    const messages = await this.#store.claim(this.#options.maxMessagesPerPoll)
    if (messages.length === 0) return 0
    let failed: SendFailure[]
    try {
      failed = sendFailures(await this.#transport.send(messages), messages.length)
    } catch (error) {
      failed = sendFailures(error, messages.length)
      if (failed.length === 0) return this.#recoverBatch(this.#store, messages, error, started)
    }
    if (failed.length > 0) return this.#partialBatch(this.#store, messages, failed, started)
    this.#lastSendOk = this.#options.now()
    await this.#acknowledge(
      this.#store,
      messages.map((m) => m.id),
    )
    this.#batchFailures = 0
    this.#emit({ type: 'delivered', count: messages.length, durationMs: performance.now() - started })
    return messages.length
  }

  /**
   * One batch of the pipelined loop. Two sessions take turns: while Kafka has batch N, the other
   * session (once its delete of batch N-1 is done) claims batch N+1, skipping N's rows; batch
   * N+1 is sent only after Kafka acknowledged N, and released untouched if it did not, so per-key
   * order is the same as one batch at a time. N's delete runs while N+1 is sent. Only a full
   * batch claims ahead: a short one means the outbox is (nearly) drained.
   */
  async #relayPipelined(companion: RelayStore): Promise<number> {
    const limit = this.#options.maxMessagesPerPoll
    const started = performance.now()
    let current = this.#ahead
    this.#ahead = undefined
    // Claimed ahead on a session that failed since (a query timed out, the server ended it): its
    // rows went back to the outbox, perhaps to a new leader, so this relay must not send them.
    if (current !== undefined && !current.store.healthy) current = undefined
    this.#sentAhead = current !== undefined
    if (current === undefined) {
      await this.#settleAcks()
      current = { store: this.#store, messages: await this.#store.claim(limit) }
    }
    if (current.messages.length === 0) return 0
    const { store, messages } = current
    const next = store === this.#store ? companion : this.#store
    let acknowledging = false
    try {
      // The claim ahead first: its query is on its way before the send encodes this batch.
      const claimingAhead = messages.length >= limit ? this.#claimAhead(next, limit) : undefined
      if (claimingAhead === undefined) this.#startDeferredAck()
      const sending = this.#transport.send(messages)
      let failed: SendFailure[]
      let sendError: { error: unknown } | undefined
      try {
        failed = sendFailures(await sending, messages.length)
      } catch (error) {
        // A rejection that says what Kafka answered per record is dealt with per record.
        failed = sendFailures(error, messages.length)
        if (failed.length === 0) sendError = { error }
      }
      if (sendError !== undefined) {
        const { error } = sendError
        const ahead = await claimingAhead
        if (ahead?.messages) await next.abandon().catch(() => {})
        if (ahead?.error) throw ahead.error
        return await this.#recoverBatch(store, messages, error, started)
      }
      if (failed.length > 0) {
        // The batch ahead may hold later messages of a key that just failed: released untouched.
        const ahead = await claimingAhead
        if (ahead?.messages) await next.abandon().catch(() => {})
        if (ahead?.error) throw ahead.error
        return await this.#partialBatch(store, messages, failed, started)
      }
      this.#lastSendOk = this.#options.now()
      this.#batchFailures = 0
      acknowledging = true
      const acknowledged: DeferredAck = { store, ids: messages.map((m) => m.id), started }
      // A full batch: the next claim ahead runs on this session as soon as the next batch is
      // sent, so the delete can ride along with it; otherwise it runs now.
      if (claimingAhead !== undefined && store.completeAndClaim !== undefined)
        this.#deferredAck = acknowledged
      else this.#startAck(acknowledged)
      const ahead = await claimingAhead
      if (ahead?.error) throw ahead.error
      if (ahead?.messages && ahead.messages.length > 0)
        this.#ahead = { store: next, messages: ahead.messages }
    } catch (error) {
      if (!acknowledging) await store.abandon().catch(() => {})
      throw error
    }
    return messages.length
  }

  /** Never rejects: a failed earlier delete comes back as `error`; trouble with the session just means no claim ahead. */
  async #claimAhead(
    store: RelayStore,
    limit: number,
  ): Promise<{ messages?: StoredMessage[]; error?: unknown }> {
    const deferred = this.#deferredAck
    if (deferred?.store === store && store.completeAndClaim !== undefined && store.healthy) {
      this.#deferredAck = undefined
      // Without an await here the query leaves before the caller's send encodes its batch, so
      // PostgreSQL works on the claim meanwhile.
      if (this.#acking !== undefined) {
        try {
          await this.#settleAcks()
        } catch (error) {
          this.#startAck(deferred)
          return { error }
        }
      }
      try {
        const messages = await store.completeAndClaim(deferred.ids, limit)
        this.#delivered(deferred)
        return { messages }
      } catch (error) {
        // Whether the delete committed before the failure is unknown: the rows are either gone
        // or back in the outbox (sent again later), never lost. Treated as a failed delete.
        await store.close().catch(() => {})
        return { error: new RelayStageError('acknowledge', error) }
      }
    }
    try {
      if (this.#acking !== undefined || this.#deferredAck !== undefined) await this.#settleAcks()
    } catch (error) {
      return { error }
    }
    try {
      if (!store.healthy) await store.connect()
      return { messages: await store.claim(limit) }
    } catch {
      await store.close().catch(() => {})
      return {}
    }
  }

  /** Starts deleting an acknowledged batch on its session; it is reported delivered once the rows are gone. */
  #startAck(acknowledged: DeferredAck): void {
    const acking = this.#acknowledge(acknowledged.store, acknowledged.ids).then(() =>
      this.#delivered(acknowledged),
    )
    this.#acking = this.#acking ? Promise.all([this.#acking, acking]).then(() => {}) : acking
    // Observed by the next #settleAcks; until then it must not count as unhandled.
    this.#acking.catch(() => {})
  }

  #delivered(acknowledged: DeferredAck): void {
    this.#emit({
      type: 'delivered',
      count: acknowledged.ids.length,
      durationMs: performance.now() - acknowledged.started,
    })
  }

  #startDeferredAck(): void {
    const deferred = this.#deferredAck
    this.#deferredAck = undefined
    if (deferred) this.#startAck(deferred)
  }

  /** Waits for the deletes in flight (starting a deferred one); rethrows their failure. */
  async #settleAcks(): Promise<void> {
    this.#startDeferredAck()
    const acking = this.#acking
    this.#acking = undefined
    if (acking) await acking
  }

  /**
   * Leaves nothing of the pipeline behind: deletes in flight finish, a batch claimed ahead is
   * released, and when the leader session is gone its companion goes too, so a new leader is not
   * kept waiting at the fence.
   */
  async #settlePipeline(): Promise<void> {
    await this.#settleAcks().catch(() => {})
    const ahead = this.#ahead
    this.#ahead = undefined
    if (ahead) await ahead.store.abandon().catch(() => {})
    if (this.#companion?.healthy && (!this.#store.healthy || !this.#leader)) {
      await this.#companion.close().catch(() => {})
    }
  }

  /**
   * A failed batch is first presumed to be Kafka's problem: released untouched, retried after a
   * backoff. If it is permanent, or keeps failing, the messages are tried in smaller parts so that a
   * poison message is found and held back (or dead-lettered) alone, together with the later
   * messages of its key only; every other key and topic goes on.
   */
  async #recoverBatch(
    store: RelayStore,
    messages: StoredMessage[],
    batchError: unknown,
    started: number,
  ): Promise<number> {
    this.#batchFailures++
    // Kafka refusing the credentials is no message's fault: never isolate, which would use up the
    // messages' attempts; back off until someone fixes the credentials.
    const refused = batchError instanceof KEntityError && batchError.code === ErrorCodes.KAFKA_AUTH_FAILED
    if (isRetryable(batchError) && (refused || this.#batchFailures < ISOLATE_AFTER_BATCH_FAILURES)) {
      await store.abandon().catch(() => {})
      throw new RelayStageError('send', batchError)
    }
    const acknowledged: string[] = []
    const failures: FailedDelivery[] = []
    const blockedKeys = new Set<number>()
    let transient = 0
    let tried = 0
    const ready = (group: StoredMessage[]) =>
      group.filter((m) => m.orderingHash === null || !blockedKeys.has(m.orderingHash))
    // Parts go in id order, and each is filtered just before it is sent, so a message behind a
    // failed one of its key stays in the outbox untouched, in order.
    const isolate = async (group: StoredMessage[]): Promise<void> => {
      const part = ready(group)
      if (part.length === 0) return
      const [only] = part
      if (part.length === 1 && only !== undefined) {
        tried++
        const [failure] = await this.#trySend(part)
        if (failure === undefined) {
          acknowledged.push(only.id)
          this.#lastSendOk = this.#options.now()
        } else {
          if (only.orderingHash !== null) blockedKeys.add(only.orderingHash)
          if (failure.retryable) transient++
          failures.push(this.#failure(only, failure))
        }
        return
      }
      const failed = await this.#trySend(part)
      if (failed.length === part.length) {
        const half = Math.ceil(part.length / 2)
        await isolate(part.slice(0, half))
        await isolate(part.slice(half))
        return
      }
      this.#lastSendOk = this.#options.now()
      const unsent = new Set(failed.map((f) => f.index))
      const behind = new Set<number>()
      const again: StoredMessage[] = []
      part.forEach((message, index) => {
        const hash = message.orderingHash
        // Written after an older message of its key that was not: sent again after that one (a
        // duplicate, never a reorder).
        if (unsent.has(index) || (hash !== null && behind.has(hash))) {
          if (hash !== null) behind.add(hash)
          again.push(message)
        } else acknowledged.push(message.id)
      })
      await isolate(again)
    }
    // One by one while nothing has got through: failures now may be an outage, which must be
    // recognised after a few sends. Once Kafka took a message, the rest is bisected: a part Kafka
    // accepts is done in one send, a part it refuses is split; k bad messages cost about
    // k·log2(n) sends instead of n, and far fewer good messages are sent twice.
    let probed = 0
    while (probed < messages.length && acknowledged.length === 0) {
      // Several keys failing transiently and nothing getting through: Kafka is down, stop probing.
      if (transient >= OUTAGE_AFTER_KEYS_FAILING) break
      await isolate(messages.slice(probed, probed + 1))
      probed++
    }
    if (acknowledged.length > 0) await isolate(messages.slice(probed))
    // When nothing got through and every failure was transient, blame the messages only if Kafka
    // accepted other messages lately and just one or two keys are involved; otherwise it is an
    // outage, and an outage must not use up the messages' attempts.
    const kafkaRecentlyUp = this.#options.now() - this.#lastSendOk < KAFKA_UP_WINDOW_MS
    if (
      acknowledged.length === 0 &&
      transient === tried &&
      (tried >= OUTAGE_AFTER_KEYS_FAILING || !kafkaRecentlyUp)
    ) {
      await store.abandon().catch(() => {})
      throw new RelayStageError('send', batchError)
    }
    await this.#acknowledge(store, acknowledged, failures)
    this.#batchFailures = 0
    for (const failure of failures) {
      if (failure.countAttempt === false) continue
      this.#emitFailure(messages, failure)
    }
    if (acknowledged.length > 0) {
      this.#emit({ type: 'delivered', count: acknowledged.length, durationMs: performance.now() - started })
    }
    return acknowledged.length + failures.filter((f) => f.deadLetter).length
  }

  #failure(message: StoredMessage, failure: Omit<SendFailure, 'index'>): FailedDelivery {
    const { error, retryable } = failure
    if (retryable && !failure.countsAsAttempt) {
      return { ids: [message.id], error: errorText(error), retryInMs: HELD_RETRY_MS, countAttempt: false }
    }
    const policy = this.#options.topicRetry.get(message.topic) ?? this.#options.retry
    const attempts = countedAttempts(message.attempts) + 1
    const deadLetter = !retryable || (attempts >= policy.maxAttempts && policy.onExhausted === 'dead-letter')
    return {
      ids: [message.id],
      error: errorText(error),
      retryInMs: backoffDelay(attempts, this.#options.backoff),
      deadLetter,
    }
  }

  /**
   * The send's failures, one per record that Kafka did not acknowledge; a send that rejected as a
   * whole fails every record with its error (counted, as before per-record results existed).
   */
  async #trySend(messages: StoredMessage[]): Promise<SendFailure[]> {
    try {
      return sendFailures(await this.#transport.send(messages), messages.length)
    } catch (error) {
      const failed = sendFailures(error, messages.length)
      if (failed.length > 0) return failed
      const retryable = isRetryable(error)
      return messages.map((_, index) => ({ index, error, retryable, countsAsAttempt: true }))
    }
  }

  /**
   * Kafka acknowledged part of the batch. Acknowledged messages are deleted; each failed one is
   * dealt with alone, by what Kafka said about it (see `SendFailure`): the cluster's own trouble
   * on a partition holds it without using an attempt, a failure of its own (a missing topic) goes
   * through its topic's retry policy, a refusal that no retry fixes is isolated and dead-lettered.
   * A failed message's key stays blocked: later messages of it in this batch stay untouched
   * behind it (the claim holds them back), and so does a batch claimed ahead.
   */
  async #partialBatch(
    store: RelayStore,
    messages: StoredMessage[],
    failed: SendFailure[],
    started: number,
  ): Promise<number> {
    const unsent = new Map(failed.map((f) => [f.index, f]))
    // Nothing written and none of it the messages' fault: Kafka as a whole is not taking writes.
    if (unsent.size === messages.length && failed.every((f) => f.retryable && !f.countsAsAttempt)) {
      await store.abandon().catch(() => {})
      throw new RelayStageError('send', (failed[0] as SendFailure).error)
    }
    const acknowledged: string[] = []
    const failures: FailedDelivery[] = []
    const blockedKeys = new Set<number>()
    const alone: StoredMessage[] = []
    messages.forEach((message, index) => {
      const hash = message.orderingHash
      const failure = unsent.get(index)
      if (hash !== null && blockedKeys.has(hash)) return
      if (failure === undefined) {
        acknowledged.push(message.id)
        return
      }
      if (hash !== null) blockedKeys.add(hash)
      // A refusal for good fails its whole partition's batch: which message is bad is found by
      // sending them alone.
      if (!failure.retryable && unsent.size > 1) alone.push(message)
      else failures.push(this.#failure(message, failure))
    })
    for (const message of alone) {
      const [failure] = await this.#trySend([message])
      if (failure === undefined) acknowledged.push(message.id)
      else failures.push(this.#failure(message, failure))
    }
    if (acknowledged.length > 0) this.#lastSendOk = this.#options.now()
    await this.#acknowledge(store, acknowledged, failures)
    this.#batchFailures = 0
    const held = failures.filter((f) => f.countAttempt === false)
    if (held.length > 0) {
      this.#emit({
        type: 'held',
        ids: held.flatMap((f) => f.ids),
        error: (held[0] as FailedDelivery).error,
        retryInMs: HELD_RETRY_MS,
      })
    }
    for (const failure of failures) if (failure.countAttempt !== false) this.#emitFailure(messages, failure)
    if (acknowledged.length > 0) {
      this.#emit({ type: 'delivered', count: acknowledged.length, durationMs: performance.now() - started })
    }
    return acknowledged.length + failures.filter((f) => f.deadLetter).length
  }

  #emitFailure(messages: StoredMessage[], failure: FailedDelivery): void {
    const message = messages.find((m) => m.id === failure.ids[0])
    if (!message) return
    this.#emit({
      type: 'message-failed',
      id: message.id,
      topic: message.topic,
      attempts: countedAttempts(message.attempts) + 1,
      error: failure.error,
      deadLettered: failure.deadLetter === true,
      // For observers only, by this process's clock; the store computes the real time on the database's.
      retryAt: failure.deadLetter ? null : new Date(this.#options.now() + failure.retryInMs),
    })
  }

  async #acknowledge(store: RelayStore, acknowledged: string[], failures?: FailedDelivery[]): Promise<void> {
    try {
      await store.complete(acknowledged, failures)
    } catch (error) {
      throw new RelayStageError('acknowledge', error)
    }
  }

  async #pause(ms: number): Promise<void> {
    if (this.#wakeRequested) {
      this.#wakeRequested = false
      return
    }
    const controller = new AbortController()
    this.#sleep = controller
    try {
      await this.#store.waitForWork(ms, controller.signal)
    } catch {
      // A broken wake-up channel must not stop the relay; polling still works.
      await new Promise((resolve) => setTimeout(resolve, ms))
    } finally {
      this.#sleep = undefined
      this.#wakeRequested = false
    }
  }

  #setLeader(leader: boolean): void {
    // A relay that never led is not a standby yet when it (re)connects: only the leader lock's
    // answer says so (#ensureLeadership logs it).
    if (this.#options.mode !== 'concurrent' && this.#leader && !leader) this.#log.leadership(false)
    if (leader === this.#leader) return
    this.#leader = leader
    // A concurrent relay has no leadership to report; being kept waiting is reported once.
    if (this.#options.mode !== 'concurrent') this.#emit({ type: 'leadership', leader })
  }

  #emit(event: RelayEvent): void {
    try {
      this.#options.onEvent(event)
    } catch {
      // Observers must not be able to break delivery.
    }
    // The log needs nothing from a delivery unless Kafka was failing: no work per batch otherwise.
    if (event.type === 'delivered') this.#log.kafkaOk()
    else if (event.type === 'error') this.#log.failed(event.stage, event.error, event.retryInMs)
    else if (event.type === 'message-failed') this.#log.messageFailed(event)
    else if (event.type === 'held') this.#log.held(event.ids.length, event.error, event.retryInMs)
  }
}

interface ClaimedBatch {
  store: RelayStore
  messages: StoredMessage[]
}

interface DeferredAck {
  store: RelayStore
  ids: string[]
  /** When the batch was claimed, for the `delivered` event's duration. */
  started: number
}

/**
 * How long a message waits, without using an attempt, after the cluster failed it on its
 * partition (leader moving, dead broker): Kafka moves a dead broker's leaders in about 10 s.
 */
const HELD_RETRY_MS = 1000

/**
 * A transport's answer as a list of failures: `undefined` (the seam's old contract, still what
 * user transports return) means everything was acknowledged. Entries naming no record of the
 * batch are ignored; a record named twice counts once.
 */
function sendFailures(result: unknown, count: number): SendFailure[] {
  if (typeof result !== 'object' || result === null) return []
  const failed = (result as { failed?: unknown }).failed
  if (!Array.isArray(failed)) return []
  const byIndex = new Map<number, SendFailure>()
  for (const entry of failed as SendFailure[]) {
    if (typeof entry !== 'object' || entry === null) continue
    const { index } = entry
    if (!Number.isInteger(index) || index < 0 || index >= count || byIndex.has(index)) continue
    byIndex.set(index, {
      index,
      error: entry.error,
      retryable: entry.retryable !== false,
      countsAsAttempt: entry.countsAsAttempt !== false,
    })
  }
  return [...byIndex.values()].sort((a, b) => a.index - b.index)
}

/** Concurrent mode: first pause after a short claim; it doubles per empty claim. */
const CONTENDED_PAUSE_MS = 10

/** Whole-batch failures in a row before the relay looks for a poison message in the batch. */
const ISOLATE_AFTER_BATCH_FAILURES = 3
/** Distinct keys failing transiently, with nothing acknowledged, that make it an outage. */
const OUTAGE_AFTER_KEYS_FAILING = 3
const KAFKA_UP_WINDOW_MS = 30_000

class RelayStageError extends Error {
  readonly stage: 'send' | 'acknowledge'
  constructor(stage: 'send' | 'acknowledge', cause: unknown) {
    super(errorText(cause), { cause })
    this.stage = stage
  }
}

function unwrap(error: unknown): unknown {
  return error instanceof RelayStageError ? error.cause : error
}

function errorText(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 2000)
  return String(error).slice(0, 2000)
}

function positiveInteger(
  value: unknown,
  name: string,
  fallback: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw invalidArgument(
      `relay option '${name}' must be an integer from 1 to ${max}, got ${describe(value)}`,
    )
  }
  return value
}

function resolveOptions(options: RelayOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null)
    throw invalidArgument('relay options must be an object')
  const mode = options.mode ?? RELAY_DEFAULTS.mode
  if (mode !== 'single' && mode !== 'exclusive' && mode !== 'concurrent') {
    throw invalidArgument(
      `relay option 'mode' must be 'single', 'exclusive' or 'concurrent', got ${describe(mode)}`,
    )
  }
  if (options.onEvent !== undefined && typeof options.onEvent !== 'function') {
    throw invalidArgument(`relay option 'onEvent' must be a function`)
  }
  const initial = positiveInteger(
    options.retryBackoff?.initial,
    'retryBackoff.initial',
    RELAY_DEFAULTS.retryBackoff.initial,
  )
  const max = positiveInteger(options.retryBackoff?.max, 'retryBackoff.max', RELAY_DEFAULTS.retryBackoff.max)
  if (max < initial)
    throw invalidArgument(
      `relay option 'retryBackoff.max' (${max}) is below 'retryBackoff.initial' (${initial})`,
    )
  const retry = resolveRetryPolicy(options.retry, 'relay options', DEFAULT_RETRY_POLICY)
  if (options.pipeline !== undefined && typeof options.pipeline !== 'boolean') {
    throw invalidArgument(`relay option 'pipeline' must be true or false, got ${describe(options.pipeline)}`)
  }
  return {
    pipeline: options.pipeline ?? true,
    pollingInterval: positiveInteger(
      options.pollingInterval,
      'pollingInterval',
      RELAY_DEFAULTS.pollingInterval,
      3_600_000,
    ),
    maxMessagesPerPoll: positiveInteger(
      options.maxMessagesPerPoll,
      'maxMessagesPerPoll',
      RELAY_DEFAULTS.maxMessagesPerPoll,
      10_000,
    ),
    mode,
    leaderCheckInterval: positiveInteger(
      options.leaderCheckInterval,
      'leaderCheckInterval',
      RELAY_DEFAULTS.leaderCheckInterval,
      600_000,
    ),
    backoff: { initial, max },
    onEvent: options.onEvent ?? (() => {}),
    logger: resolveLogger(options.logger, 'relay options'),
    endpoints: typeof options.endpoints === 'object' && options.endpoints !== null ? options.endpoints : {},
    onStop: options.onStop ?? (() => {}),
    now: typeof options.now === 'function' ? options.now : Date.now,
    retry,
    topicRetry: new Map(
      [...(options.topicRetry ?? new Map())].map(([topic, policy]) => [
        topic,
        resolveRetryPolicy(policy, `topic '${topic}'`, retry),
      ]),
    ),
  }
}
