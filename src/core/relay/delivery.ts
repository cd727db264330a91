import { relayEventsObserved } from '../../observability/channels.ts'
import { backoffDelay } from '../backoff.ts'
import { internalCause } from '../errors.ts'
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
import { errorText, HELD_RETRY_MS, RelayStageError, type SendOutcome, sendFailures } from './outcomes.ts'

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
  readonly #transport: MessageTransport
  readonly #options: ResolvedOptions
  readonly emit: Emit

  constructor(transport: MessageTransport, options: ResolvedOptions, emit: Emit) {
    this.#transport = transport
    this.#options = options
    this.emit = emit
  }

  now(): number {
    return this.#options.now()
  }

  /**
   * Sends a batch; never rejects but for an internal error (`KE_INTERNAL`, which stops the relay
   * rather than let its messages be tried alone and dead-lettered). The transport is called
   * before the first await, so a caller's query already on its way overlaps with the encoding.
   */
  async send(messages: StoredMessage[]): Promise<SendOutcome> {
    let outcome: SendOutcome
    const tracing = this.#options.tracing
    try {
      const sent =
        tracing?.send === undefined
          ? this.#transport.send(messages)
          : tracing.send(messages, () => this.#transport.send(messages))
      outcome = { failed: sendFailures(await sent, messages.length) }
    } catch (error) {
      // A rejection that says what Kafka answered per record is dealt with per record.
      const failed = sendFailures(error, messages.length)
      outcome = failed.length > 0 ? { failed } : { rejected: error }
    }
    throwIfInternal(outcome)
    return outcome
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
  failure(message: StoredMessage, failure: Omit<SendFailure, 'index'>): FailedDelivery {
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
    try {
      await store.complete(acknowledged, failures)
    } catch (error) {
      throw new RelayStageError('acknowledge', error)
    }
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
