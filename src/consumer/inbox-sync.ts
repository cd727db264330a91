import { invalidArgument } from '../core/errors.ts'
import type { Logger } from '../core/logger.ts'
import type { SyncTopicProducers, TopicMap } from '../core/outbox.ts'
import type { OutboxTable, SyncTransactionAdapter } from '../core/seams.ts'
import { BatchHandlerError } from './failed-batch.ts'
import {
  checkInboxOptions,
  Duplicate,
  type InboxConsumerOptions,
  inboxRows,
  markDuplicate,
  PURGE_BATCH,
  purgeEvery,
} from './inbox.ts'
import type { InboxEntry, InboxSql } from './inbox-sql.ts'
import type { MessageProcessor } from './kafka-consumer.ts'
import type { ConsumedMessage } from './message.ts'

/**
 * What a synchronous driver's outbox (SQLite) offers the inbox: `fn` runs between BEGIN and
 * COMMIT without the event loop turning in between, so no other code reaches the handle while
 * the transaction is open. The promise says when that happened (after the transactions queued
 * on the handle before it).
 */
export interface SyncTransactionRunner<D, M extends TopicMap> {
  transaction<R>(db: D, fn: (db: D, topics: SyncTopicProducers<M>) => R): Promise<R>
}

/** `outbox.consume()`'s options where the driver is synchronous (SQLite): the handler is too. */
export interface SyncInboxConsumerOptions<T, D, M extends TopicMap, R = void>
  extends Omit<InboxConsumerOptions<T, D, D, M>, 'handler'> {
  /**
   * Runs synchronously inside a transaction on `db` that also stores the message's inbox row, so
   * its writes commit exactly once per message; `topics` produce into the outbox in the same
   * transaction. Throwing rolls it back and the message is retried, then dead-lettered. It must
   * not be async: the transaction is open on the app's one database handle, and whatever other
   * code used that handle while the handler awaited would run inside it.
   */
  handler: (message: ConsumedMessage<T>, db: D, topics: SyncTopicProducers<M>) => R
}

/**
 * Makes an async handler a type error on a synchronous outbox (`R` is what the handler returns):
 * TypeScript accepts a function returning a Promise where one returning void is expected.
 */
export type SyncHandlerOnly<R> =
  R extends PromiseLike<unknown>
    ? { handler: 'the handler must be synchronous on SQLite: (message, db, topics) => void, no async' }
    : unknown

export interface SyncInboxContext<D, M extends TopicMap> {
  table: OutboxTable
  sql: InboxSql<unknown>
  runner: SyncTransactionRunner<D, M>
  binding: (db: D) => SyncTransactionAdapter
  isRetryable: (error: unknown) => boolean
  logger: Logger
  /** The database as messages name it ('SQLite'). */
  database: string
}

const WHERE = 'outbox.consume()'
const SIGNATURE = '(message, db, topics) => void'

function asyncRefused(database: string, what: string): string {
  return `${WHERE} on ${database}: ${what}; the handler must be synchronous, ${SIGNATURE}: its transaction is open on the app's one database handle, and while the handler awaited, any other code using that handle would run inside that transaction (and commit or roll back with it). Do the async work outside the handler (its database writes are synchronous anyway)`
}

/** An `async` handler is refused at once; one that returns a promise otherwise, per message (see `callSync`). */
function checkSyncHandler(handler: unknown, database: string): void {
  const kind = (handler as { constructor?: { name?: unknown } } | undefined)?.constructor?.name
  if (kind === 'AsyncFunction' || kind === 'AsyncGeneratorFunction') {
    throw invalidArgument(asyncRefused(database, 'the handler is an async function'))
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as { then?: unknown }).then === 'function'
  )
}

/**
 * The inbox on a synchronous driver: the same rows, batches, skips and dead letters as
 * `inboxProcessor`, but each transaction (BEGIN, the inbox row, the handler, COMMIT) runs in one
 * synchronous stretch on the app's handle.
 */
export function syncInboxProcessor<T, D, M extends TopicMap>(
  context: SyncInboxContext<D, M>,
  options: SyncInboxConsumerOptions<T, D, M, unknown>,
  group: string,
): MessageProcessor<T> {
  const { retention, purge, batchSize } = checkInboxOptions(options as never, WHERE, SIGNATURE)
  const { table, sql, runner, binding, logger, database } = context
  checkSyncHandler(options.handler, database)
  const rows = inboxRows(options, group, retention)
  const callHandler = (message: ConsumedMessage<T>, db: D, topics: SyncTopicProducers<M>) => {
    const result = options.handler(message, db, topics)
    if (isThenable(result)) {
      // Its part after the first await runs outside this transaction, which rolls back now; a
      // rejection of it would only crash the process, the refusal below says what is wrong.
      result.then(undefined, () => {})
      throw invalidArgument(asyncRefused(database, 'the handler returned a promise'))
    }
  }
  const insertEntry = (adapter: SyncTransactionAdapter, entry: InboxEntry) => {
    try {
      adapter.execute(sql.insert(table, entry))
    } catch (error) {
      throw markDuplicate(sql, error)
    }
  }
  const stopPurge = purgeEvery(
    purge,
    () => runner.transaction(options.db, (db) => binding(db).execute(sql.purgeBatch(table, PURGE_BATCH))),
    logger,
  )
  return {
    batchSize,
    async handleBatch(messages) {
      const entries = messages.map(rows.entryOf)
      await runner.transaction(options.db, (db, topics) => {
        // The batch's rows first, in one statement: a key seen before fails the batch before any
        // handler runs; the consumer then handles the batch again in parts.
        binding(db).execute(sql.insertMany(table, entries))
        for (const [index, message] of messages.entries()) {
          try {
            callHandler(message, db, topics)
          } catch (error) {
            throw new BatchHandlerError(index, error)
          }
        }
      })
    },
    async handle(message): Promise<'duplicate' | undefined> {
      try {
        await runner.transaction(options.db, (db, topics) => {
          insertEntry(binding(db), rows.entryOf(message))
          callHandler(message, db, topics)
        })
        return undefined
      } catch (error) {
        if (!(error instanceof Duplicate)) throw error
        return 'duplicate'
      }
    },
    async deadLetter(dead) {
      try {
        await runner.transaction(options.db, (db) => {
          const adapter = binding(db)
          insertEntry(adapter, rows.deadEntryOf(dead))
          adapter.execute(sql.deadLetter(table, rows.deadLetterOf(dead)))
        })
      } catch (error) {
        // Handled (or dead-lettered) already, by this member before a crash or by another one.
        if (!(error instanceof Duplicate)) throw error
      }
    },
    // A database locked by another connection is no fault of the message: retried without end.
    countsAsAttempt: (error) => !context.isRetryable(error),
    async close() {
      stopPurge()
    },
  }
}
