import { relayEventsObserved } from '../../observability/channels.ts'
import { backoffDelay } from '../backoff.ts'
import { ErrorCodes, internalCause, KEntityError } from '../errors.ts'
import type { StoredMessage } from '../record.ts'
import { isRetryable } from '../retry.ts'
import {
  countedAttempts,
  type FailedDelivery,
  type MessageTransport,
  type RelayStore,
  type SendFailure,
} from '../seams.ts'
import type { Emit } from './events.ts'
import type { ResolvedOptions } from './options.ts'
import {
  errorText,
  HELD_RETRY_MS,
  type OutcomeFailure,
  RelayStageError,
  type SendOutcome,
  sendFailures,
} from './outcomes.ts'
import { EarlyWatch, SendTimes } from './settle.ts'

/** Rows Kafka acknowledged after their send settled early, still to be deleted. */
interface LateAck {
  ids: string[]
  /** Messages per topic, for the `delivered` event (empty while nobody listens). */
  topics: Readonly<Record<string, number>>
  /** When their batch was claimed, for the `delivered` event's duration. */
  started: number
  /** From the send until Kafka's late acknowledgement. */
  sendMs: number
}

/**
 * Late answers taken for one write: rows to delete and rows to hold again; `done(true)` once it
 * committed, `done(false)` to keep them for the next.
 */
export interface LateDelete {
  ids: string[]
  failures: FailedDelivery[]
  done(ok: boolean): void
}

/** How long a batch's steps took, in ms, for its `delivered` event (see `RelayEvent`). */
export interface BatchTiming {
  /** `performance.now()` when the batch started, for `durationMs`. */
  started: number
  claimMs: number
  sendMs: number
  deleteMs: number
}

/**
 * What every way of relaying a batch shares (one at a time, pipelined, isolating a failure): the
 * send to Kafka and its reading, the verdict on a failed message, its delete, and the events.
 */
export class Delivery {
  /** Consecutive whole-batch failures; after a few, the batch is split to find the bad messages. */
  batchFailures = 0
  /** When Kafka last acknowledged a send of this relay. */
  lastSendOk = 0
  /** Called when a late acknowledgement leaves rows to delete (the loop polls at once). */
  onLate: (() => void) | undefined
  readonly #transport: MessageTransport
  readonly #options: ResolvedOptions
  readonly emit: Emit
  /** The store can delete late-acknowledged rows between claims (`RelayStore.completeHeld`). */
  readonly #lateDeletes: boolean
  readonly #sendTimes = new SendTimes()
  #late: LateAck[] = []
  /** Held rows whose send failed late, to hold again for `HELD_RETRY_MS`. */
  #lateFailures: FailedDelivery[] = []
  /** Sends settled early whose rest is still on its way. */
  readonly #outstanding = new Set<Promise<void>>()

  constructor(transport: MessageTransport, options: ResolvedOptions, emit: Emit, lateDeletes = false) {
    this.#transport = transport
    this.#options = options
    this.emit = emit
    this.#lateDeletes = lateDeletes
  }

  now(): number {
    return this.#options.now()
  }

  /**
   * Sends a batch; never rejects but for an internal error (`KE_INTERNAL`, which stops the relay
   * rather than let its messages be tried alone and dead-lettered). The transport is called
   * before the first await, so a caller's query already on its way overlaps with the encoding.
   * `settleEarly`: when part of the batch is acknowledged and the rest is overdue (see
   * `settle.ts`), resolves at once with the rest as failures to hold for the transport's
   * `landsWithinMs`; their late acknowledgement is kept for the next delete (`lateDelete`).
   */
  async send(messages: StoredMessage[], settleEarly = false): Promise<SendOutcome> {
    const started = performance.now()
    const landsWithin = this.#transport.landsWithinMs
    const watch =
      settleEarly &&
      this.#lateDeletes &&
      messages.length > 1 &&
      typeof landsWithin === 'number' &&
      Number.isFinite(landsWithin) &&
      landsWithin > 0
        ? new EarlyWatch(messages.length, started, this.#sendTimes.overdueAfter())
        : undefined
    const whole = this.#settle(messages, watch)
    let outcome: SendOutcome
    if (watch === undefined) outcome = await whole
    else {
      const first = await Promise.race([whole, watch.settled])
      watch.stop()
      if ('acknowledged' in first) {
        outcome = this.#settledEarly(
          messages,
          first.acknowledged,
          whole,
          started,
          landsWithin as number,
          watch,
        )
      } else outcome = first
    }
    throwIfInternal(outcome)
    if (watch !== undefined && 'failed' in outcome) {
      if (outcome.failed.length === 0) this.#sendTimes.record(performance.now() - started)
      // Part acknowledged, part not (settled early, or failed in time): some partitions stall.
      else if (outcome.failed.length < messages.length) this.#sendTimes.stalled(performance.now())
    }
    return outcome
  }

  /** The transport's answer as an outcome; never rejects. */
  async #settle(messages: StoredMessage[], watch: EarlyWatch | undefined): Promise<SendOutcome> {
    try {
      const progress = watch && { acknowledged: (indexes: readonly number[]) => watch.acknowledged(indexes) }
      const tracing = this.#options.tracing
      const sent =
        tracing?.send === undefined
          ? this.#transport.send(messages, progress)
          : tracing.send(messages, () => this.#transport.send(messages, progress))
      return { failed: sendFailures(await sent, messages.length) }
    } catch (error) {
      // A rejection that says what Kafka answered per record is dealt with per record.
      const failed = sendFailures(error, messages.length)
      return failed.length > 0 ? { failed } : { rejected: error }
    }
  }

  /**
   * The acknowledged records are done; the others are held, without using an attempt, for as
   * long as Kafka could still write them, so that no relay sends them again meanwhile (a copy
   * written after a later message of its key would break the key's order).
   */
  #settledEarly(
    messages: StoredMessage[],
    acknowledged: ReadonlySet<number>,
    whole: Promise<SendOutcome>,
    started: number,
    landsWithin: number,
    watch: EarlyWatch,
  ): SendOutcome {
    const outstanding = messages.map((_, index) => index).filter((index) => !acknowledged.has(index))
    const rest = new HeldRest(messages, outstanding)
    watch.follow((indexes) => this.#lateAcknowledged(messages, rest.acknowledged(indexes), started))
    const error = new KEntityError(
      ErrorCodes.TRANSPORT_FAILED,
      `Kafka acknowledged ${acknowledged.size} of a batch of ${messages.length} but not yet the other ${outstanding.length} after ${Math.round(performance.now() - started)} ms: they are held until their acknowledgement comes, or for ${Math.ceil(landsWithin)} ms (after which Kafka can no longer write them)`,
      { retryable: true },
    )
    const failed: OutcomeFailure[] = outstanding.map((index) => ({
      index,
      error,
      retryable: true,
      countsAsAttempt: false,
      kafkaAnswered: true,
      holdMs: Math.ceil(landsWithin),
    }))
    const answered = whole.then((outcome) => this.#lateOutcome(messages, rest, outcome, started))
    this.#outstanding.add(answered)
    void answered.finally(() => this.#outstanding.delete(answered))
    return { failed }
  }

  /** Held rows Kafka acknowledged after the early settle, as each produce call returns: deleted with the next write. */
  #lateAcknowledged(messages: StoredMessage[], indexes: readonly number[], started: number): void {
    if (indexes.length === 0) return
    const landed = indexes.map((index) => messages[index] as StoredMessage)
    this.lastSendOk = this.now()
    this.#late.push({
      ids: landed.map((m) => m.id),
      topics: this.topicsOf(landed),
      started,
      sendMs: performance.now() - started,
    })
    this.onLate?.()
  }

  /**
   * The rest of a send settled early has its answer. Acknowledged rows are kept for the next
   * delete, in index order and only while no earlier record of their key failed (one partition's
   * records are written together, so this is only a safeguard). The client has given up on the
   * failed ones: the first of each key is held again for `HELD_RETRY_MS`, as a failure answered
   * in time would be (the rest of its key waits behind it). Keeping the whole hold instead also
   * covers a request that timed out but may still be written, at the price of every key of a
   * dead broker's partitions waiting 50 s: measured so in bench/broker-kill.ts (dead partitions'
   * p50 44 s), where main's relay took 1-6 s. A retryable failure only; a refusal for good
   * waits for its hold to end and is then tried and dead-lettered as usual.
   */
  #lateOutcome(messages: StoredMessage[], rest: HeldRest, outcome: SendOutcome, started: number): void {
    const failed = new Map<number, { error: unknown; retryable: boolean }>()
    if ('rejected' in outcome) {
      const retryable = isRetryable(outcome.rejected)
      for (const index of rest.outstanding) failed.set(index, { error: outcome.rejected, retryable })
    } else for (const failure of outcome.failed) failed.set(failure.index, failure)
    rest.close()
    const blocked = new Set<number>()
    const ids: string[] = []
    const again: FailedDelivery[] = []
    const landed: StoredMessage[] = []
    for (const index of rest.outstanding) {
      const message = messages[index] as StoredMessage
      const hash = message.orderingHash
      if (hash !== null && blocked.has(hash)) continue
      // Already deleted (or on its way) as its produce call returned.
      if (rest.reported.has(index)) continue
      const failure = failed.get(index)
      if (failure !== undefined) {
        if (hash !== null) blocked.add(hash)
        if (failure.retryable) {
          again.push({
            ids: [message.id],
            error: errorText(failure.error),
            retryInMs: HELD_RETRY_MS,
            countAttempt: false,
          })
        }
        continue
      }
      ids.push(message.id)
      landed.push(message)
    }
    if (ids.length === 0 && again.length === 0) return
    if (ids.length > 0) {
      this.lastSendOk = this.now()
      this.#late.push({ ids, topics: this.topicsOf(landed), started, sendMs: performance.now() - started })
    }
    this.#lateFailures.push(...again)
    this.onLate?.()
  }

  /** True while late answers wait to be written. */
  get hasLate(): boolean {
    return this.#late.length > 0 || this.#lateFailures.length > 0
  }

  /**
   * Takes the late answers for a write about to run (see `LateDelete`); `withFailures: false`
   * for a write that can only delete.
   */
  lateDelete(withFailures = true): LateDelete {
    const late = this.#late
    this.#late = []
    const failures = withFailures ? this.#lateFailures : []
    if (withFailures) this.#lateFailures = []
    return {
      ids: late.flatMap((ack) => ack.ids),
      failures,
      done: (ok) => {
        if (!ok) {
          this.#late.unshift(...late)
          this.#lateFailures.unshift(...failures)
        } else {
          for (const ack of late) {
            // Claimed with an earlier batch, whose event reported the claim; deleted with this write.
            const timing = { started: ack.started, claimMs: 0, sendMs: ack.sendMs, deleteMs: 0 }
            this.deliveredCount(ack.ids.length, ack.topics, timing)
          }
        }
      },
    }
  }

  /** Writes the late answers on their own, with no claim open on `store`. */
  async deleteLate(store: RelayStore): Promise<void> {
    if (!this.hasLate || store.completeHeld === undefined || !store.healthy) return
    const late = this.lateDelete()
    try {
      await store.completeHeld(late.ids, late.failures)
    } catch (error) {
      late.done(false)
      throw new RelayStageError('acknowledge', error)
    }
    late.done(true)
  }

  /** Waits until every send settled early has its answer (bounded by the transport's own timeout). */
  async outstandingSettled(): Promise<void> {
    while (this.#outstanding.size > 0) await Promise.allSettled([...this.#outstanding])
  }

  /**
   * The send's failures, one per record that Kafka did not acknowledge; a send that rejected as a
   * whole fails every record with its error (counted, as before per-record results existed).
   */
  async trySend(messages: StoredMessage[]): Promise<SendFailure[]> {
    const outcome = await this.send(messages)
    if ('failed' in outcome) return outcome.failed
    const error = outcome.rejected
    const retryable = isRetryable(error)
    return messages.map((_, index) => ({ index, error, retryable, countsAsAttempt: true }))
  }

  /** What becomes of a message Kafka did not take: held, retried after a backoff, or dead-lettered. */
  failure(message: StoredMessage, failure: Omit<OutcomeFailure, 'index'>): FailedDelivery {
    const { error, retryable } = failure
    if (retryable && !failure.countsAsAttempt) {
      const retryInMs = failure.holdMs ?? HELD_RETRY_MS
      return { ids: [message.id], error: errorText(error), retryInMs, countAttempt: false }
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

  emitFailure(messages: StoredMessage[], failure: FailedDelivery): void {
    const message = messages.find((m) => m.id === failure.ids[0])
    if (!message) return
    this.emit({
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

  /**
   * Whether an event's optional figures are worth building: with nobody listening, a batch costs
   * the relay no more than it did before events had them.
   */
  get observed(): boolean {
    return this.#options.observed || relayEventsObserved()
  }

  /** Messages per topic for a `delivered` event, or nothing while nobody listens. */
  topicsOf(messages: readonly StoredMessage[]): Readonly<Record<string, number>> {
    return this.observed ? countTopics(messages) : NO_TOPICS
  }

  /** `messages`: the batch's messages Kafka acknowledged (and the store deleted). */
  delivered(messages: readonly StoredMessage[], timing: BatchTiming): void {
    this.deliveredCount(messages.length, this.topicsOf(messages), timing)
  }

  deliveredCount(count: number, topics: Readonly<Record<string, number>>, timing: BatchTiming): void {
    this.emit({
      type: 'delivered',
      count,
      durationMs: performance.now() - timing.started,
      topics,
      claimMs: timing.claimMs,
      sendMs: timing.sendMs,
      deleteMs: timing.deleteMs,
    })
  }

  async acknowledge(
    store: RelayStore,
    acknowledged: readonly string[],
    failures?: FailedDelivery[],
  ): Promise<void> {
    const late = this.lateDelete()
    try {
      await store.complete(
        late.ids.length > 0 ? [...acknowledged, ...late.ids] : acknowledged,
        late.failures.length > 0 ? [...(failures ?? []), ...late.failures] : failures,
      )
    } catch (error) {
      late.done(false)
      throw new RelayStageError('acknowledge', error)
    }
    late.done(true)
  }
}

/**
 * The records of a send settled early that Kafka had not acknowledged then. A late
 * acknowledgement is passed on at once only for records whose key has no earlier record still
 * unanswered: if that earlier one failed, it is sent again, and the later one already deleted
 * would then sit before it in the partition. (One partition's records are one record batch,
 * acknowledged together, so this holds back nothing in practice; it is a safeguard.)
 */
class HeldRest {
  readonly outstanding: readonly number[]
  /** Passed on as acknowledged (see `acknowledged`). */
  readonly reported = new Set<number>()
  readonly #messages: readonly StoredMessage[]
  readonly #acked = new Set<number>()
  #closed = false

  constructor(messages: readonly StoredMessage[], outstanding: number[]) {
    this.#messages = messages
    this.outstanding = outstanding
  }

  /** Records these acknowledgements; returns the indexes that may be deleted now, in order. */
  acknowledged(indexes: readonly number[]): number[] {
    if (this.#closed) return []
    for (const index of indexes) this.#acked.add(index)
    const waiting = new Set<number>()
    const ready: number[] = []
    for (const index of this.outstanding) {
      const hash = (this.#messages[index] as StoredMessage).orderingHash
      if (!this.#acked.has(index)) {
        if (hash !== null) waiting.add(hash)
        continue
      }
      if (this.reported.has(index) || (hash !== null && waiting.has(hash))) continue
      this.reported.add(index)
      ready.push(index)
    }
    return ready
  }

  /** The send's whole answer is in: it decides the rest, and later reports are ignored. */
  close(): void {
    this.#closed = true
  }
}

const NO_TOPICS: Readonly<Record<string, number>> = Object.freeze({})

/** Messages per topic, as own data properties (`fromEntries`), so no topic name reaches a prototype. */
export function countTopics(messages: readonly StoredMessage[]): Record<string, number> {
  const counts = new Map<string, number>()
  for (const { topic } of messages) counts.set(topic, (counts.get(topic) ?? 0) + 1)
  return Object.fromEntries(counts)
}

function throwIfInternal(outcome: SendOutcome): void {
  const errors = 'failed' in outcome ? outcome.failed.map((f) => f.error) : [outcome.rejected]
  for (const error of errors) {
    if (internalCause(error) !== undefined) throw new RelayStageError('send', error)
  }
}
