import type { InboxConsumerOptions } from '../../consumer/inbox.ts'
import {
  type SyncHandlerOnly,
  type SyncInboxConsumerOptions,
  syncInboxProcessor,
} from '../../consumer/inbox-sync.ts'
import type { KafkaConsumer, MessageProcessor } from '../../consumer/kafka-consumer.ts'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import type { SyncTopicProducer, SyncTopicProducers, TopicMap } from '../../core/outbox.ts'
import type { RelayOptions } from '../../core/relay.ts'
import type { Topic } from '../../core/topic.ts'
import type { SqlOutboxOptions } from '../../outbox/parts.ts'
import { type InboxParts, SqlOutbox } from '../../outbox/sql-outbox.ts'
import type { KafkaSetting } from '../../transports/kafka/index.ts'
import type { SqliteConnection } from './connection.ts'
import { type SqliteBorrowed, sqliteSessions, sqliteSql, sqliteTransaction } from './sql-dialect.ts'

export type { MigrationResult } from '../../outbox/parts.ts'

/** What a SQLite adapter supplies: how to use the app's database handle, and how to open a file. */
export interface SqliteDriver<Db> {
  /** Wraps the app's database handle; throws a clear error for anything else. */
  wrap(db: Db): SqliteConnection
  /** Opens a new handle on a database file, owned by the caller. */
  open(filename: string): SqliteConnection
}

/** SQLite outboxes take the common options; `kafka` serves the relay only (no `outbox: false` topics). */
export type SqliteOutboxOptions<M extends TopicMap> = SqlOutboxOptions<M>

export interface SqliteRelayOptions<Db> extends RelayOptions {
  /**
   * The database to relay from: the app's own handle (shared with the app; the only choice for an
   * in-memory database), or the path of the database file, for which the relay opens its own
   * handle (e.g. to relay from a worker thread or another process).
   */
  connection: Db | string
  /** Kafka for this relay; defaults to the outbox's `kafka` option. */
  kafka?: KafkaSetting
  /**
   * Longest the relay waits for the database to be free (other connections' write locks, or an
   * open transaction on the shared handle) before it gives up the batch and backs off, in ms
   * (default 10000).
   */
  busyTimeout?: number
}

/** The typed accessor for one topic: writes synchronously, inside the open transaction. */
export type SqliteTopicProducer<T> = SyncTopicProducer<T>
export type SqliteTopicProducers<M extends TopicMap> = SyncTopicProducers<M>

/**
 * `outbox.consume()`'s options on SQLite: `db` is the app's database handle, and the handler
 * is synchronous, `(message, db, topics) => void` (`R`: what it returns, anything but a promise).
 */
export type SqliteInboxConsumerOptions<T, Db, M extends TopicMap, R = void> = SyncInboxConsumerOptions<
  T,
  Db,
  M,
  R
>

/**
 * The outbox on SQLite, for embedded and edge deployments: one process writes, one relay sends.
 *
 * SQLite drivers are synchronous, so producing is too: `outbox.in(db).topic.produce(message)`
 * writes at once, inside the transaction that is open on `db` (better-sqlite3's
 * `db.transaction(fn)`, an explicit BEGIN, or `outbox.transaction(db, fn)`), and throws at once
 * on bad input, so the surrounding transaction rolls back with it.
 */
export class SqliteOutbox<M extends TopicMap, Db> extends SqlOutbox<
  M,
  Db,
  Db | string,
  SqliteBorrowed,
  SqliteRelayOptions<Db>,
  true
> {
  readonly #driver: SqliteDriver<Db>
  /** Transactions of `transaction()` per handle, run one after the other (see there). */
  readonly #queues = new WeakMap<object, Promise<unknown>>()

  constructor(options: SqliteOutboxOptions<M>, driver: SqliteDriver<Db>) {
    super(options, {
      dialect: sqliteSql((filename) => driver.open(filename)),
      binding: (db) => sqliteTransaction(driver.wrap(db)),
      sessions: sqliteSessions(driver),
    })
    this.#driver = driver
  }

  /**
   * Runs `fn` in a transaction on `db` (BEGIN IMMEDIATE): COMMIT if it returns or resolves,
   * ROLLBACK if it throws. `fn` may be async; a SQLite handle has one transaction at a time, so
   * the transactions this helper runs on one handle wait for each other. Other code using the
   * same handle while `fn` awaits runs inside this transaction: keep such work out of `fn`'s awaits.
   * A synchronous `fn` commits before anything else runs.
   */
  transaction<R>(db: Db, fn: (db: Db, topics: SqliteTopicProducers<M>) => R | Promise<R>): Promise<R> {
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a function, got ${describe(fn)}`)
    return this.#queued(db, fn, () =>
      invalidArgument(
        'a transaction is already open on this database handle; produce with outbox.in(db) inside it instead of starting another one',
      ),
    )
  }

  /**
   * A consumer of `topic` whose handler runs synchronously in a transaction on `db` (the app's
   * handle) together with an inbox row per message: effects exactly once, even across crashes
   * and rebalances; the Kafka offset is committed after COMMIT. Started at once; run
   * `migrateInbox(db)` first. The handler must be synchronous, `(message, db, topics) => void`:
   * its transaction is open on the app's one handle, so an await in it would let any other code
   * using the handle into that transaction. An async handler is refused with KE_INVALID_ARGUMENT
   * (and is a type error); one that returns a promise fails its message with that error.
   */
  override consume<T, R = void>(
    topic: Topic<T>,
    options: SqliteInboxConsumerOptions<T, Db, M, R> & SyncHandlerOnly<R>,
  ): KafkaConsumer<T> {
    return super.consume(topic, options as never)
  }

  protected override inboxProcessor<T>(
    options: InboxConsumerOptions<T, unknown, unknown, M>,
    parts: InboxParts<true>,
    group: string,
  ): MessageProcessor<T> {
    return syncInboxProcessor(
      {
        ...parts,
        database: 'SQLite',
        binding: (db: Db) => parts.binding(db),
        runner: {
          // Another transaction open on the handle is the app's own (BEGIN ... await ...): it
          // ends by itself, so the message waits for it without using up its attempts.
          transaction: (db, fn) =>
            this.#queued(
              db,
              fn,
              () =>
                new KEntityError(
                  ErrorCodes.STORE_FAILED,
                  "a transaction is open on the app's database handle (not one of outbox.transaction()); the consumer tries again once it ends",
                  { retryable: true },
                ),
            ),
        },
      },
      options as unknown as SyncInboxConsumerOptions<T, Db, M, unknown>,
      group,
    )
  }

  /**
   * `fn` in a transaction on `db` after the transactions queued on the handle before it. The
   * commit of a synchronous `fn` follows it at once: no await in between lets other code (a
   * promise's continuation using the handle) into the transaction.
   */
  #queued<R>(
    db: Db,
    fn: (db: Db, topics: SqliteTopicProducers<M>) => R | Promise<R>,
    busy: () => Error,
  ): Promise<R> {
    const connection = this.#driver.wrap(db)
    const previous = this.#queues.get(connection.handle) ?? Promise.resolve()
    const run = previous
      .catch(() => {})
      .then(async () => {
        if (connection.inTransaction) throw busy()
        connection.exec('BEGIN IMMEDIATE')
        try {
          const returned = fn(db, this.in(db))
          const result = isPromise(returned) ? await returned : returned
          connection.exec('COMMIT')
          this.notifyCommitted()
          return result
        } catch (error) {
          if (connection.inTransaction) connection.exec('ROLLBACK')
          throw error
        }
      })
    this.#queues.set(connection.handle, run)
    return run
  }
}

function isPromise<R>(value: R | Promise<R>): value is Promise<R> {
  return (
    typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function'
  )
}
