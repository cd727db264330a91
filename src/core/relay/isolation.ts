import { ErrorCodes, KEntityError } from '../errors.ts'
import type { StoredMessage } from '../record.ts'
import { isRetryable } from '../retry.ts'
import type { FailedDelivery, RelayStore, SendFailure } from '../seams.ts'
import type { BatchTiming, Delivery } from './delivery.ts'
import { RelayStageError } from './outcomes.ts'

/** Whole-batch failures in a row before the relay looks for a poison message in the batch. */
export const ISOLATE_AFTER_BATCH_FAILURES = 3
/** Distinct keys failing transiently, with nothing acknowledged, that make it an outage. */
export const OUTAGE_AFTER_KEYS_FAILING = 3
const KAFKA_UP_WINDOW_MS = 30_000

/**
 * A failed batch is first presumed to be Kafka's problem: released untouched, retried after a
 * backoff. If it is permanent, or keeps failing, the messages are tried in smaller parts so that a
 * poison message is found and held back (or dead-lettered) alone, together with the later
 * messages of its key only; every other key and topic goes on.
 */
export async function recoverBatch(
  delivery: Delivery,
  store: RelayStore,
  messages: StoredMessage[],
  batchError: unknown,
  timing: BatchTiming,
  /** When the first send of the batch started (`performance.now()`), for `timing.sendMs`. */
  sending: number,
): Promise<number> {
  delivery.batchFailures++
  // Kafka refusing the credentials is no message's fault: never isolate, which would use up the
  // messages' attempts; back off until someone fixes the credentials.
  const refused = batchError instanceof KEntityError && batchError.code === ErrorCodes.KAFKA_AUTH_FAILED
  if (isRetryable(batchError) && (refused || delivery.batchFailures < ISOLATE_AFTER_BATCH_FAILURES)) {
    await store.abandon().catch(() => {})
    throw new RelayStageError('send', batchError)
  }
  const acknowledged: StoredMessage[] = []
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
      const [failure] = await delivery.trySend(part)
      if (failure === undefined) {
        acknowledged.push(only)
        delivery.lastSendOk = delivery.now()
      } else {
        if (only.orderingHash !== null) blockedKeys.add(only.orderingHash)
        if (failure.retryable) transient++
        failures.push(delivery.failure(only, failure))
      }
      return
    }
    const failed = await delivery.trySend(part)
    if (failed.length === part.length) {
      const half = Math.ceil(part.length / 2)
      await isolate(part.slice(0, half))
      await isolate(part.slice(half))
      return
    }
    delivery.lastSendOk = delivery.now()
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
      } else acknowledged.push(message)
    })
    await isolate(again)
  }
  try {
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
  } catch (error) {
    // Only an internal error gets here (see Delivery.send): nothing is deleted, the relay stops.
    await store.abandon().catch(() => {})
    throw error
  }
  // When nothing got through and every failure was transient, blame the messages only if Kafka
  // accepted other messages lately and just one or two keys are involved; otherwise it is an
  // outage, and an outage must not use up the messages' attempts.
  const kafkaRecentlyUp = delivery.now() - delivery.lastSendOk < KAFKA_UP_WINDOW_MS
  if (
    acknowledged.length === 0 &&
    transient === tried &&
    (tried >= OUTAGE_AFTER_KEYS_FAILING || !kafkaRecentlyUp)
  ) {
    await store.abandon().catch(() => {})
    throw new RelayStageError('send', batchError)
  }
  await acknowledge(delivery, store, acknowledged, failures, timing, sending)
  delivery.batchFailures = 0
  for (const failure of failures) {
    if (failure.countAttempt === false) continue
    delivery.emitFailure(messages, failure)
  }
  if (acknowledged.length > 0) delivery.delivered(acknowledged, timing)
  return acknowledged.length + failures.filter((f) => f.deadLetter).length
}

/**
 * Kafka acknowledged part of the batch. Acknowledged messages are deleted; each failed one is
 * dealt with alone, by what Kafka said about it (see `SendFailure`): the cluster's own trouble
 * on a partition holds it without using an attempt, a failure of its own (a missing topic) goes
 * through its topic's retry policy, a refusal that no retry fixes is isolated and dead-lettered.
 * A failed message's key stays blocked: later messages of it in this batch stay untouched
 * behind it (the claim holds them back), and so does a batch claimed ahead.
 */
export async function partialBatch(
  delivery: Delivery,
  store: RelayStore,
  messages: StoredMessage[],
  failed: SendFailure[],
  timing: BatchTiming,
  sending: number,
): Promise<number> {
  const unsent = new Map(failed.map((f) => [f.index, f]))
  // Nothing written, none of it the messages' fault, and no broker answered for its partition:
  // Kafka as a whole is not taking writes. A broker's answer (NOT_ENOUGH_REPLICAS, a leader
  // moving) is about those partitions only: their messages are held below so that the next claim
  // reaches the rows of partitions that take writes, instead of claiming the same rows again.
  if (
    unsent.size === messages.length &&
    failed.every((f) => f.retryable && !f.countsAsAttempt && f.kafkaAnswered !== true)
  ) {
    await store.abandon().catch(() => {})
    throw new RelayStageError('send', (failed[0] as SendFailure).error)
  }
  const acknowledged: StoredMessage[] = []
  const failures: FailedDelivery[] = []
  const blockedKeys = new Set<number>()
  const alone: StoredMessage[] = []
  messages.forEach((message, index) => {
    const hash = message.orderingHash
    const failure = unsent.get(index)
    if (hash !== null && blockedKeys.has(hash)) return
    if (failure === undefined) {
      acknowledged.push(message)
      return
    }
    if (hash !== null) blockedKeys.add(hash)
    // A refusal for good fails its whole partition's batch: which message is bad is found by
    // sending them alone.
    if (!failure.retryable && unsent.size > 1) alone.push(message)
    else failures.push(delivery.failure(message, failure))
  })
  try {
    for (const message of alone) {
      const [failure] = await delivery.trySend([message])
      if (failure === undefined) acknowledged.push(message)
      else failures.push(delivery.failure(message, failure))
    }
  } catch (error) {
    // Only an internal error gets here (see Delivery.send): nothing is deleted, the relay stops.
    await store.abandon().catch(() => {})
    throw error
  }
  if (acknowledged.length > 0) delivery.lastSendOk = delivery.now()
  await acknowledge(delivery, store, acknowledged, failures, timing, sending)
  delivery.batchFailures = 0
  const held = failures.filter((f) => f.countAttempt === false)
  // Held for a short while (the partition's leader moving) or until a send settled early can no
  // longer be written (see settle.ts): one event per wait.
  for (const retryInMs of new Set(held.map((f) => f.retryInMs))) {
    const same = held.filter((f) => f.retryInMs === retryInMs)
    delivery.emit({
      type: 'held',
      ids: same.flatMap((f) => f.ids),
      error: (same[0] as FailedDelivery).error,
      retryInMs,
    })
  }
  for (const failure of failures) if (failure.countAttempt !== false) delivery.emitFailure(messages, failure)
  if (acknowledged.length > 0) delivery.delivered(acknowledged, timing)
  return acknowledged.length + failures.filter((f) => f.deadLetter).length
}

/** Deletes what Kafka took and records the failures, timing the sends before and the delete. */
async function acknowledge(
  delivery: Delivery,
  store: RelayStore,
  acknowledged: readonly StoredMessage[],
  failures: FailedDelivery[],
  timing: BatchTiming,
  sending: number,
): Promise<void> {
  const deleting = performance.now()
  timing.sendMs = deleting - sending
  await delivery.acknowledge(
    store,
    acknowledged.map((m) => m.id),
    failures,
  )
  timing.deleteMs = performance.now() - deleting
}
