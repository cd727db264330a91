import { backoffDelay } from '../backoff.ts'
import { internalCause, type KEntityError } from '../errors.ts'
import type { RelayLog } from '../relay-log.ts'
import type { RelayStore } from '../seams.ts'
import { type BatchResult, FullBatch } from './batch-size.ts'
import type { BatchTiming, Delivery } from './delivery.ts'
import { partialBatch, recoverBatch } from './isolation.ts'
import type { Leadership } from './leadership.ts'
import type { ResolvedOptions } from './options.ts'
import { RelayStageError, type SendOutcome, unwrap } from './outcomes.ts'
import type { Pipeline } from './pipeline.ts'

/** Concurrent mode: first pause after a short claim; it doubles per empty claim. */
const CONTENDED_PAUSE_MS = 10

/**
 * The relay's background loop: connect, make sure this relay may claim, relay a batch (or a
 * pipelined one), pause, and back off after a failure. It knows nothing about SQL or Kafka
 * clients; it only drives a RelayStore and a MessageTransport (through `Delivery`).
 */
export class RelayLoop {
  readonly #store: RelayStore
  readonly #options: ResolvedOptions
  readonly #log: RelayLog
  readonly #leadership: Leadership
  readonly #delivery: Delivery
  readonly #pipeline: Pipeline | undefined
  #stopping = false
  /** Failed polls in a row, for the backoff. */
  #failures = 0
  /** Concurrent mode: claims in a row that found nothing (see #contendedPause). */
  #emptyPolls = 0
  readonly #fullBatch: FullBatch
  #sleep: AbortController | undefined
  #wakeRequested = false

  constructor(
    store: RelayStore,
    options: ResolvedOptions,
    log: RelayLog,
    leadership: Leadership,
    delivery: Delivery,
    pipeline: Pipeline | undefined,
  ) {
    this.#store = store
    this.#options = options
    this.#log = log
    this.#leadership = leadership
    this.#delivery = delivery
    this.#pipeline = pipeline
    this.#fullBatch = new FullBatch({ messages: options.maxMessagesPerPoll, bytes: options.maxBytesPerPoll })
    // A late acknowledgement unblocks its keys once its rows are gone: poll now to delete them.
    delivery.onLate = () => this.wake()
  }

  /** Ends the loop after the batch in flight, and cuts its pause short. */
  interrupt(): void {
    this.#stopping = true
    this.#sleep?.abort()
  }

  /** Nudges the loop to poll now instead of at the end of its polling interval. */
  wake(): void {
    // A standby has nothing to relay: it tries the leader lock once per leaderCheckInterval.
    if (!this.#leadership.leader) return
    this.#wakeRequested = true
    this.#sleep?.abort()
  }

  /**
   * Runs until `interrupt()`, or until an internal error (`KE_INTERNAL`), which it returns after
   * an `error` event marked `fatal`: a bug fails the same way on every retry, so retrying it
   * would loop forever.
   */
  async run(): Promise<KEntityError | undefined> {
    this.#stopping = false
    let fatal: KEntityError | undefined
    while (!this.#stopping) {
      const pollStarted = performance.now()
      let pause = this.#options.pollingInterval
      let found = 0
      let stage: 'connect' | 'claim' = 'connect'
      try {
        if (!this.#store.healthy) {
          await this.#pipeline?.settleAcks()
          await this.#pipeline?.settle()
          this.#leadership.set(false)
          await this.#store.connect()
        }
        stage = 'claim'
        if (!(await this.#leadership.ensure())) {
          await this.#pipeline?.settleAcks()
          await this.#pipeline?.settle()
          this.#log.databaseOk()
          pause = this.#options.leaderCheckInterval
        } else {
          const { count, full } = this.#pipeline ? await this.#pipeline.relay() : await this.relayBatch(true)
          found = count
          // An empty poll is no proof of recovery: failed messages are parked until their retry time.
          if (count > 0) this.#failures = 0
          // Nothing claimed, so no claim is open on this session: late acknowledgements that no
          // batch's delete took along are deleted on their own.
          else if (this.#delivery.hasLate) {
            await this.#pipeline?.settleAcks()
            await this.#delivery.deleteLate(this.#store)
          }
          this.#log.databaseOk()
          if (full || this.#pipeline?.sentAhead) continue
          if (this.#options.mode === 'concurrent') pause = this.#contendedPause(count)
          // The interval runs from one poll's start to the next one's: a short batch that took
          // 5 ms of a 10 ms interval waits 5 ms more, not 10. Counted from the batch's end, it
          // stretched by every batch's time: 10 ms polling cycled every 15-18 ms at 1,000 msg/s,
          // and its commit-to-Kafka p99 was 35-42 ms against 20-23 ms counted from the start
          // (bench scenario 3, short mode, side by side).
          pause = Math.max(0, Math.round(pause - (performance.now() - pollStarted)))
        }
      } catch (error) {
        await this.#pipeline?.settle()
        if (this.#stopping) break
        const failedStage = error instanceof RelayStageError ? error.stage : stage
        fatal = internalCause(unwrap(error))
        if (fatal !== undefined) {
          this.#stopping = true
          this.#delivery.emit({ type: 'error', stage: failedStage, error: fatal, retryInMs: 0, fatal: true })
          break
        }
        this.#failures++
        pause = backoffDelay(this.#failures, this.#options.backoff)
        // Kafka failed, so the database answered this poll's claim.
        if (failedStage === 'send') this.#log.databaseOk()
        this.#delivery.emit({ type: 'error', stage: failedStage, error: unwrap(error), retryInMs: pause })
        if (!this.#store.healthy) this.#leadership.set(false)
      }
      if (this.#stopping) break
      await this.#pause(pause, found)
    }
    await this.#pipeline?.settle()
    if (fatal === undefined) await this.#deleteLateBeforeStop()
    return fatal
  }

  /**
   * Sends settled early may still be acknowledged: their rows are deleted before the session
   * closes, or they would be held until Kafka can no longer write them and then sent again
   * (duplicates). `stop()`'s timeout bounds the wait.
   */
  async #deleteLateBeforeStop(): Promise<void> {
    await this.#delivery.outstandingSettled()
    try {
      await this.#delivery.deleteLate(this.#store)
    } catch {
      // The rows stay held and are sent again after their hold: duplicates, never a loss.
    }
  }

  /**
   * One batch at a time: returns the number of messages dealt with (delivered or dead-lettered),
   * and whether the claim was cut by a limit (see `FullBatch`).
   */
  async relayBatch(settleEarly = false): Promise<BatchResult> {
    const store = this.#store
    const delivery = this.#delivery
    const started = performance.now()
    const messages = await store.claim(this.#options.maxMessagesPerPoll, this.#options.maxBytesPerPoll)
    if (messages.length === 0) return { count: 0, full: false }
    const sending = performance.now()
    const timing: BatchTiming = { started, claimMs: sending - started, sendMs: 0, deleteMs: 0 }
    const full = this.#fullBatch.test(messages)
    let outcome: SendOutcome
    try {
      outcome = await delivery.send(messages, settleEarly)
    } catch (error) {
      // An internal error: nothing is deleted, the claim is released as it was.
      await store.abandon().catch(() => {})
      throw error
    }
    if ('rejected' in outcome)
      return { count: await recoverBatch(delivery, store, messages, outcome.rejected, timing, sending), full }
    if (outcome.failed.length > 0)
      return { count: await partialBatch(delivery, store, messages, outcome.failed, timing, sending), full }
    delivery.lastSendOk = delivery.now()
    const deleting = performance.now()
    timing.sendMs = deleting - sending
    await delivery.acknowledge(
      store,
      messages.map((m) => m.id),
    )
    timing.deleteMs = performance.now() - deleting
    delivery.batchFailures = 0
    delivery.delivered(messages, timing)
    return { count: messages.length, full }
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

  /** `found`: messages the batch before it dealt with (see `RelayStore.waitForWork`). */
  async #pause(ms: number, found: number): Promise<void> {
    if (this.#wakeRequested) {
      this.#wakeRequested = false
      return
    }
    const controller = new AbortController()
    this.#sleep = controller
    try {
      await this.#store.waitForWork(ms, controller.signal, found)
    } catch {
      // A broken wake-up channel must not stop the relay; polling still works.
      await new Promise((resolve) => setTimeout(resolve, ms))
    } finally {
      this.#sleep = undefined
      this.#wakeRequested = false
    }
  }
}
