import { describe, invalidArgument } from '../../core/errors.ts'
import type { SyncTopicProducer, SyncTopicProducers, TopicMap } from '../../core/outbox.ts'
import type { RelayOptions } from '../../core/relay.ts'
import type { SqlOutboxOptions } from '../../outbox/parts.ts'
import { SqlOutbox } from '../../outbox/sql-outbox.ts'
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
   */
  transaction<R>(db: Db, fn: (db: Db, topics: SqliteTopicProducers<M>) => R | Promise<R>): Promise<R> {
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a function, got ${describe(fn)}`)
    const connection = this.#driver.wrap(db)
    const previous = this.#queues.get(connection.handle) ?? Promise.resolve()
    const run = previous
      .catch(() => {})
      .then(async () => {
        if (connection.inTransaction) {
          throw invalidArgument(
            'a transaction is already open on this database handle; produce with outbox.in(db) inside it instead of starting another one',
          )
        }
        connection.exec('BEGIN IMMEDIATE')
        try {
          const result = await fn(db, this.in(db))
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
