import { describe, invalidArgument } from '../core/errors.ts'
import type { Logger } from '../core/logger.ts'
import type { TopicMap, TopicProducers } from '../core/outbox.ts'
import type { OutboxTable, TransactionAdapter } from '../core/seams.ts'
import { MESSAGE_ID_HEADER } from '../core/topic.ts'
import type { KafkaOptions } from '../transports/kafka/index.ts'
import { BatchHandlerError } from './failed-batch.ts'
import type { InboxDeadLetter, InboxEntry, InboxSql } from './inbox-sql.ts'
import type { MessageProcessor } from './kafka-consumer.ts'
import type { ConsumedMessage } from './message.ts'
import type { ConsumerBaseOptions, DeadMessage } from './options.ts'

/** What an outbox whose data layer runs transactions as `transaction(db, fn)` offers the inbox. */
export interface TransactionRunner<D, X, M extends TopicMap> {
  transaction<R>(db: D, fn: (tx: X, topics: TopicProducers<M>) => Promise<R>): Promise<R>
}

export interface InboxConsumerOptions<T, D, X, M extends TopicMap> extends ConsumerBaseOptions {
  /** What the outbox's `transaction()` takes (a pg.Pool, a mysql2 pool, a Kysely instance...). */
  db: D
  /**
   * Runs inside a database transaction on `db` that also stores the message's inbox row, so its
   * writes commit exactly once per message; `topics` produce into the outbox in the same
   * transaction. Throwing rolls it back and the message is retried, then dead-lettered.
   */
  handler: (message: ConsumedMessage<T>, tx: X, topics: TopicProducers<M>) => Promise<void>
  /** The Kafka cluster (default: the outbox's `kafka` option). */
  kafka?: KafkaOptions
  /**
   * The key that identifies a message in the inbox, at most 255 characters. Default: the
   * `ke-message-id` header (topics with `messageId: true`), else topic, partition and offset.
   * Keys within `inboxRetentionMs` of each other are handled once per consumer group.
   */
  inboxKey?: (message: ConsumedMessage<T>) => string
  /** How long an inbox row keeps its key from being handled again, in ms (default 7 days). */
  inboxRetentionMs?: number
  /**
   * Most messages of one partition handled in one transaction (default 500, as Kafka's own
   * `max.poll.records`): the handler still gets them one at a time, their inbox rows and effects
   * commit together, and the transaction is not paid per message. A batch is what waits in the
   * partition's queue, never waited for, so it is also bounded by `maxInFlight` and
   * `maxInFlightBytes` shared among the partitions. If any of them fails or was seen before, the
   * transaction rolls back and the batch is handled again in parts: the messages before a failed
   * handler as a batch, that message alone (with its retries and dead letter), the rest as a
   * batch; or, for a message seen before, halves until the repeat is alone. 1: a transaction per
   * message.
   */
  batchSize?: number
  /** How often the consumer deletes one batch of expired inbox rows, in ms (default 60000; 0: never). */
  purgeIntervalMs?: number
}

export interface InboxContext<D, X, M extends TopicMap> {
  table: OutboxTable
  sql: InboxSql<unknown>
  runner: TransactionRunner<D, X, M>
  binding: (tx: X) => TransactionAdapter
  isRetryable: (error: unknown) => boolean
  logger: Logger
}

const DAY_MS = 86_400_000
const MAX_KEY_LENGTH = 255
export const PURGE_BATCH = 5000

/** Marks the inbox insert's duplicate-key failure, so that a handler's own one is not taken for it. */
export class Duplicate {}

export function checkInboxOptions(
  options: InboxConsumerOptions<unknown, unknown, unknown, TopicMap>,
  where: string,
  signature = '(message, tx, topics) => Promise<void>',
) {
  if (typeof options.handler !== 'function') {
    throw invalidArgument(
      `${where}: 'handler' must be a function ${signature}, got ${describe(options.handler)}`,
    )
  }
  if (options.db === undefined || options.db === null) {
    throw invalidArgument(
      `${where}: 'db' is missing: pass what the outbox's transaction() takes (a pool or a db instance)`,
    )
  }
  if (options.inboxKey !== undefined && typeof options.inboxKey !== 'function') {
    throw invalidArgument(
      `${where}: 'inboxKey' must be a function (message) => string, got ${describe(options.inboxKey)}`,
    )
  }
  const retention = options.inboxRetentionMs ?? 7 * DAY_MS
  if (!Number.isInteger(retention) || retention < 1000 || retention > 3650 * DAY_MS) {
    throw invalidArgument(
      `${where}: 'inboxRetentionMs' must be an integer from 1000 to ${3650 * DAY_MS}, got ${describe(options.inboxRetentionMs)}`,
    )
  }
  const purge = options.purgeIntervalMs ?? 60_000
  if (!Number.isInteger(purge) || purge < 0 || purge > DAY_MS) {
    throw invalidArgument(
      `${where}: 'purgeIntervalMs' must be an integer from 0 (never) to ${DAY_MS}, got ${describe(options.purgeIntervalMs)}`,
    )
  }
  const batchSize = options.batchSize ?? 500
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) {
    throw invalidArgument(
      `${where}: 'batchSize' must be an integer from 1 to 10000, got ${describe(options.batchSize)}`,
    )
  }
  return { retention, purge, batchSize }
}

/** The default inbox key: the producer's message id when it set one, else where Kafka keeps the record. */
export function defaultInboxKey(message: ConsumedMessage<unknown>): string {
  const id = message.headers[MESSAGE_ID_HEADER]
  if (id !== undefined && id.length > 0 && id.length <= 200) return `id:${id.toString('latin1')}`
  return `at:${message.topic}/${message.partition}/${message.offset}`
}

/** What the async and the synchronous inbox processors share: the rows they write per message. */
export interface InboxRows<T> {
  /** The inbox row of a message; throws KE_INVALID_ARGUMENT for a bad `inboxKey()` result. */
  entryOf(message: ConsumedMessage<T>): InboxEntry
  /** The inbox row of a dead message (keyed by its place in the topic when it has no message). */
  deadEntryOf(dead: DeadMessage<T>): InboxEntry
  deadLetterOf(dead: DeadMessage<T>): InboxDeadLetter
}

export function inboxRows<T>(
  options: { inboxKey?: ((message: ConsumedMessage<T>) => string) | undefined },
  group: string,
  retentionMs: number,
): InboxRows<T> {
  const keyOf = options.inboxKey ?? defaultInboxKey
  const entryOf = (message: ConsumedMessage<T>): InboxEntry => {
    const key = keyOf(message)
    if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH) {
      throw invalidArgument(
        `inboxKey() must return a string of 1-${MAX_KEY_LENGTH} characters, got ${describe(key)}`,
      )
    }
    return {
      group,
      key,
      topic: message.topic,
      partition: message.partition,
      offset: message.offset,
      retentionMs,
    }
  }
  return {
    entryOf,
    // An unreadable record has no message for inboxKey(): its place in the topic keys it.
    deadEntryOf: (dead) =>
      dead.message !== undefined
        ? entryOf(dead.message)
        : {
            group,
            key: `at:${dead.topic}/${dead.partition}/${dead.offset}`,
            topic: dead.topic,
            partition: dead.partition,
            offset: dead.offset,
            retentionMs,
          },
    deadLetterOf: (dead) => ({
      group,
      topic: dead.topic,
      partition: dead.partition,
      offset: dead.offset,
      key: dead.key,
      value: dead.value,
      headers: dead.message?.headerList ?? [],
      error: dead.error instanceof Error ? dead.error.message : String(dead.error),
      attempts: dead.attempts,
    }),
  }
}

/** The inbox row's duplicate key as `Duplicate`, any other failure as it is. */
export function markDuplicate(sql: InboxSql<unknown>, error: unknown): unknown {
  return sql.isDuplicate(error) ? new Duplicate() : error
}

/** Deletes one batch of expired rows every `every` ms (0: never); returns what stops it. */
export function purgeEvery(every: number, purgeOnce: () => Promise<unknown>, logger: Logger): () => void {
  if (every === 0) return () => {}
  const timer = setInterval(() => {
    purgeOnce().catch((error: unknown) =>
      logger.warn({ error: String(error) }, 'purging expired inbox rows failed'),
    )
  }, every)
  timer.unref()
  return () => clearInterval(timer)
}

/**
 * Handles each message in one transaction with its inbox row (a batch: all rows in one INSERT,
 * then the handlers): the row goes in first, as a plain INSERT, so a message handled before fails at once on the primary key (or, if another member
 * is handling it right now, waits for that transaction and fails once it commits) and is skipped
 * without running the handler; the handler's writes and the row commit or roll back together.
 */
export function inboxProcessor<T, D, X, M extends TopicMap>(
  context: InboxContext<D, X, M>,
  options: InboxConsumerOptions<T, D, X, M>,
  group: string,
): MessageProcessor<T> {
  const { retention, purge, batchSize } = checkInboxOptions(options as never, 'outbox.consume()')
  const { table, sql, runner, binding, logger } = context
  const rows = inboxRows(options, group, retention)
  const insertEntry = async (adapter: TransactionAdapter, entry: InboxEntry) => {
    try {
      await adapter.execute(sql.insert(table, entry))
    } catch (error) {
      throw markDuplicate(sql, error)
    }
  }
  const stopPurge = purgeEvery(
    purge,
    () => runner.transaction(options.db, (tx) => binding(tx).execute(sql.purgeBatch(table, PURGE_BATCH))),
    logger,
  )
  return {
    batchSize,
    async handleBatch(messages) {
      const entries = messages.map(rows.entryOf)
      await runner.transaction(options.db, async (tx, topics) => {
        // One round trip for the batch's rows, ahead of every handler: a key seen before fails
        // it before any handler runs, and whatever fails (here, in a handler or at COMMIT, where
        // a driver may send held writes) rolls all back and the consumer handles the batch again in parts.
        await binding(tx).execute(sql.insertMany(table, entries))
        for (const [index, message] of messages.entries()) {
          try {
            await options.handler(message, tx, topics)
          } catch (error) {
            throw new BatchHandlerError(index, error)
          }
        }
      })
    },
    async handle(message): Promise<'duplicate' | undefined> {
      try {
        await runner.transaction(options.db, async (tx, topics) => {
          await insertEntry(binding(tx), rows.entryOf(message))
          await options.handler(message, tx, topics)
        })
        return undefined
      } catch (error) {
        if (!(error instanceof Duplicate)) throw error
        return 'duplicate'
      }
    },
    async deadLetter(dead) {
      try {
        await runner.transaction(options.db, async (tx) => {
          const adapter = binding(tx)
          await insertEntry(adapter, rows.deadEntryOf(dead))
          await adapter.execute(sql.deadLetter(table, rows.deadLetterOf(dead)))
        })
      } catch (error) {
        // Handled (or dead-lettered) already, by this member before a crash or by another one.
        if (!(error instanceof Duplicate)) throw error
      }
    },
    // A database that is down or a deadlock is no fault of the message: retried without end.
    countsAsAttempt: (error) => !context.isRetryable(error),
    async close() {
      stopPurge()
    },
  }
}
