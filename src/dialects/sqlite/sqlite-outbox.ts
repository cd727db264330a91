import type { DeadLetters, OutboxStats } from '../../core/dead-letters.ts'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import { type Logger, type LoggerOption, resolveLogger } from '../../core/logger.ts'
import { Outbox, type OutboxOptions, type TopicMap } from '../../core/outbox.ts'
import type { OutboxRecord } from '../../core/record.ts'
import type { OutboxRelay, RelayOptions } from '../../core/relay.ts'
import type { ProduceOptions, Topic } from '../../core/topic.ts'
import { checkKafkaSetting, type KafkaSetting } from '../../transports/kafka/index.ts'
import {
  type EnsureTopicsReport,
  ensureOutboxTopics,
  type OutboxEnsureTopicsOptions,
} from '../../transports/kafka/topics.ts'
import { LocalRelays } from '../local-relays.ts'
import { explainingDeadLetters, explainMissingTable } from '../not-migrated.ts'
import { checkOptionsObject } from '../outbox-options.ts'
import type { SqliteConnection } from './connection.ts'
import { sqliteDeadLetters, sqliteStats } from './dead-letters.ts'
import { classifyError } from './errors.ts'
import { sqliteDialect } from './index.ts'
import { type MigrationResult, migrate, migrationScript } from './migrate.ts'
import { qualified } from './names.ts'
import { SqliteRelayStore } from './relay-store.ts'

/** What a SQLite adapter supplies: how to use the app's database handle, and how to open a file. */
export interface SqliteDriver<Db> {
  /** Wraps the app's database handle; throws a clear error for anything else. */
  wrap(db: Db): SqliteConnection
  /** Opens a new handle on a database file, owned by the caller. */
  open(filename: string): SqliteConnection
}

export interface SqliteOutboxOptions<M extends TopicMap> extends OutboxOptions<M> {
  /** Kafka for the relay. */
  kafka?: KafkaSetting
  /**
   * Where the relay logs (see `RelayOptions.logger`): a pino/bunyan-like logger, or `false` for
   * none. Default: warnings and errors on stderr, one line each.
   */
  logger?: LoggerOption
}

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
export interface SqliteTopicProducer<T> {
  /** Stores one message in the outbox within the open transaction; throws if nothing is open. */
  produce(message: T, options?: ProduceOptions): void
  /** Stores several messages with one multi-row statement (per 1,000 messages). */
  produceMany(messages: readonly T[], options?: ProduceOptions): void
}

export type SqliteTopicProducers<M extends TopicMap> = {
  readonly [K in keyof M]: SqliteTopicProducer<M[K] extends Topic<infer T> ? T : never>
}

/**
 * The outbox on SQLite, for embedded and edge deployments: one process writes, one relay sends.
 *
 * SQLite drivers are synchronous, so producing is too: `outbox.in(db).topic.produce(message)`
 * writes at once, inside the transaction that is open on `db` (better-sqlite3's
 * `db.transaction(fn)`, an explicit BEGIN, or `outbox.transaction(db, fn)`), and throws at once
 * on bad input, so the surrounding transaction rolls back with it.
 */
export class SqliteOutbox<M extends TopicMap, Db> {
  readonly outbox: Outbox<M>
  readonly #driver: SqliteDriver<Db>
  readonly #kafka: KafkaSetting | undefined
  /** Relays of this process, woken right after a transaction helper commits. */
  readonly #localRelays = new LocalRelays()
  /** Transactions of `transaction()` per handle, run one after the other (see there). */
  readonly #queues = new WeakMap<object, Promise<unknown>>()

  /** The `logger` option; undefined leaves the relay its default. */
  readonly #logger: Logger | undefined

  constructor(options: SqliteOutboxOptions<M>, driver: SqliteDriver<Db>) {
    checkOptionsObject(options)
    this.outbox = new Outbox(options, sqliteDialect)
    for (const topic of Object.values(this.outbox.topics)) {
      if (!topic.outbox) {
        throw invalidArgument(
          `topic '${topic.name}' is mapped with outbox: false (sent straight to Kafka), but SQLite outboxes produce synchronously inside the database transaction and a Kafka send cannot; map it through the outbox or send it with your own Kafka producer`,
        )
      }
    }
    this.#driver = driver
    this.#kafka = checkKafkaSetting(options.kafka)
    this.#logger = options.logger === undefined ? undefined : resolveLogger(options.logger, 'outbox options')
  }

  /** Typed producers bound to the transaction open on `db`. */
  in(db: Db): SqliteTopicProducers<M> {
    const connection = this.#driver.wrap(db)
    const producers: Record<string, SqliteTopicProducer<unknown>> = {}
    for (const [accessor, topic] of Object.entries(this.outbox.topics)) {
      producers[accessor] = {
        produce: (message, options) => this.#store(connection, [topic.toRecord(message, options)]),
        produceMany: (messages, options) => {
          if (!Array.isArray(messages)) {
            throw invalidArgument(
              `produceMany() on topic '${topic.name}' needs an array, got ${describe(messages)}`,
            )
          }
          if (messages.length === 0) return
          this.#store(
            connection,
            messages.map((message) => topic.toRecord(message, options)),
          )
        },
      }
    }
    return Object.freeze(producers) as SqliteTopicProducers<M>
  }

  #store(connection: SqliteConnection, records: OutboxRecord[]): void {
    if (!connection.inTransaction) {
      throw new KEntityError(
        ErrorCodes.NO_TRANSACTION,
        'outbox topics must be produced inside a transaction: wrap the work in db.transaction(...) (better-sqlite3), run BEGIN first, or use outbox.transaction(db, fn); nothing was stored',
      )
    }
    for (const statement of sqliteDialect.insert(this.outbox.table, records)) {
      try {
        connection.run(statement.text, statement.values)
      } catch (error) {
        throw this.#explain(error, 'outbox.migrate(db)')
      }
    }
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

  /** Creates or upgrades the outbox tables in `db` (a handle or a file path). */
  migrate(db: Db | string): MigrationResult {
    if (typeof db === 'string') {
      const connection = this.#driver.open(checkFilename(db))
      try {
        return migrate(connection, this.outbox.table)
      } finally {
        connection.close()
      }
    }
    return migrate(this.#driver.wrap(db), this.outbox.table)
  }

  /** The schema as a SQL script, for applying with your own migration tool. */
  migrationSql(): string {
    return migrationScript(this.outbox.table)
  }

  /** The relay for this outbox (one per outbox); call `start()` on it (or `runOnce()` in tests). */
  relay(options: SqliteRelayOptions<Db>): OutboxRelay {
    if (typeof options !== 'object' || options === null) {
      throw invalidArgument(
        'relay() needs options with the database: outbox.relay({ connection: db }) (or a file path)',
      )
    }
    if (options.mode === 'exclusive' || options.mode === 'concurrent') {
      throw invalidArgument(
        `relay mode '${options.mode}' is not available on SQLite: it has a single writer and no session-bound locks, so a relay that stalls cannot be fenced off, and several relays would send keys out of order. Run one relay (mode 'single'), in the process that owns the database`,
      )
    }
    const open = this.#borrow(options.connection)
    const busyTimeout = options.busyTimeout ?? 10_000
    if (!Number.isInteger(busyTimeout) || busyTimeout < 0) {
      throw invalidArgument(
        `relay option 'busyTimeout' must be an integer number of ms >= 0, got ${describe(busyTimeout)}`,
      )
    }
    const store = new SqliteRelayStore({
      table: this.outbox.table,
      connect: open,
      busyTimeout,
      openLock: (filename) => this.#driver.open(filename),
    })
    return this.#localRelays.create(this.outbox, store, this.#kafka, options, {
      logger: this.#logger,
      database: typeof options.connection === 'string' ? options.connection : undefined,
    })
  }

  /**
   * Creates this outbox's missing topics with their declared partitions, replication factor and
   * configs, and reports how existing ones differ from their declarations (never altering them).
   */
  ensureTopics(options?: OutboxEnsureTopicsOptions): Promise<EnsureTopicsReport> {
    return ensureOutboxTopics(this.outbox.topics, this.#kafka, options)
  }

  /** Inspect, replay and purge dead letters in `db` (a handle, or a file path opened per call). */
  deadLetters(db: Db | string): DeadLetters {
    return explainingDeadLetters(sqliteDeadLetters(this.outbox.table, this.#borrow(db)), (error) =>
      this.#explain(error),
    )
  }

  /** Pending, retrying and dead messages and the age of the oldest pending one (the lag). */
  stats(db: Db | string): Promise<OutboxStats> {
    return sqliteStats(this.outbox.table, this.#borrow(db)).catch((error: unknown) => {
      throw this.#explain(error)
    })
  }

  /** SQLite's "no such table" as `KE_NOT_MIGRATED`, saying what to run. */
  #explain(error: unknown, how = 'outbox.migrate(db)'): unknown {
    return explainMissingTable(error, classifyError, qualified(this.outbox.table), how)
  }

  /** The app's handle (shared, never closed here), or a file opened for each use and closed after. */
  #borrow(db: Db | string | undefined | null): () => { connection: SqliteConnection; owned: boolean } {
    if (db === undefined || db === null) {
      throw invalidArgument('pass the database: a database handle or the path of the database file')
    }
    if (typeof db === 'string') {
      const filename = checkFilename(db)
      return () => ({ connection: this.#driver.open(filename), owned: true })
    }
    const wrapped = this.#driver.wrap(db)
    return () => ({ connection: wrapped, owned: false })
  }

  /** Tells this process's relays that new messages were committed (call it after your own COMMIT). */
  notifyCommitted(): void {
    this.#localRelays.wakeAll()
  }
}

function checkFilename(filename: string): string {
  if (filename === '' || filename === ':memory:' || filename.startsWith('file::memory:')) {
    throw invalidArgument(
      `an in-memory or temporary database exists only inside its handle, so '${filename}' would open a different, empty one; pass the database handle itself`,
    )
  }
  return filename
}
