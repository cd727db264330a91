import { composeAdmin } from '../admin/admin.ts'
import type { OutboxAdmin } from '../admin/types.ts'
import { type InboxConsumerOptions, inboxProcessor, type TransactionRunner } from '../consumer/inbox.ts'
import type { InboxSql } from '../consumer/inbox-sql.ts'
import { KafkaConsumer, type MessageProcessor } from '../consumer/kafka-consumer.ts'
import { checkTopic, resolveConsumerOptions } from '../consumer/options.ts'
import type { DeadLetters, OutboxStats } from '../core/dead-letters.ts'
import { describe, invalidArgument } from '../core/errors.ts'
import { type Logger, resolveLogger } from '../core/logger.ts'
import { Outbox, type SyncTopicProducers, type TopicMap, type TopicProducers } from '../core/outbox.ts'
import type { OutboxRelay } from '../core/relay.ts'
import type { OutboxTable, SyncTransactionAdapter, TransactionAdapter } from '../core/seams.ts'
import type { Topic } from '../core/topic.ts'
import {
  checkKafkaSetting,
  isTransport,
  type KafkaOptions,
  type KafkaSetting,
  LazyTransport,
  validateKafkaOptions,
} from '../transports/kafka/index.ts'
import {
  type EnsureTopicsReport,
  ensureOutboxTopics,
  type OutboxEnsureTopicsOptions,
} from '../transports/kafka/topics.ts'
import { refuseOutboxOptions, refuseRelayOptions } from './capabilities.ts'
import { LocalRelays } from './local-relays.ts'
import { explainDatabaseError, explainingDeadLetters, explainMissingTable } from './not-migrated.ts'
import { checkOptionsObject } from './outbox-options.ts'
import type {
  MigrationResult,
  SessionOpener,
  SqlDialect,
  SqlOutboxOptions,
  SqlRelayOptions,
} from './parts.ts'

/** The three parts of one SQL outbox (see parts.ts). */
export interface SqlOutboxParts<Tx, Target, Session, R extends SqlRelayOptions, Sync extends boolean> {
  dialect: SqlDialect<Session, R>
  // Methods, not function properties: outboxes of related handle types stay comparable.
  /** The transaction binding: the app's handle as the adapter the producers write through. */
  binding(tx: Tx): Sync extends true ? SyncTransactionAdapter : TransactionAdapter
  /** The session opener: the outbox's own connections (see `SessionOpener`). */
  sessions(...args: Parameters<SessionOpener<Target, Session>>): ReturnType<SessionOpener<Target, Session>>
}

/** What `in()` returns: producers that write before they return on a synchronous driver. */
export type ProducersOf<M extends TopicMap, Sync extends boolean> = Sync extends true
  ? SyncTopicProducers<M>
  : TopicProducers<M>

/** What `migrate()` returns: the result itself on a synchronous driver. */
export type MigrationOf<Sync extends boolean> = Sync extends true ? MigrationResult : Promise<MigrationResult>

/** What `migrateInbox()` returns: nothing to wait for on a synchronous driver. */
export type InboxMigrationOf<Sync extends boolean> = Sync extends true ? undefined : Promise<void>

/**
 * `consume()`'s options where handlers are awaited; an outbox on a synchronous driver, or whose
 * `transaction()` takes no db (`OwnConsume`), declares its own.
 */
export type AsyncInboxOptions<Sync extends boolean, O, OwnConsume extends boolean = false> = [
  OwnConsume,
] extends [true]
  ? never
  : Sync extends true
    ? never
    : O

/** What `consume()` gives the inbox processor of every outbox, whatever runs its transactions. */
export interface InboxParts<Sync extends boolean> {
  table: OutboxTable
  sql: InboxSql<unknown>
  /** The app's transaction handle as the adapter the inbox writes through. */
  binding(tx: unknown): Sync extends true ? SyncTransactionAdapter : TransactionAdapter
  isRetryable: (error: unknown) => boolean
  logger: Logger
}

/**
 * The outbox on a SQL database, whatever the database and the driver: typed producers bound to
 * the app's transaction, migrations, relays, topics, dead letters and stats, written once and
 * composed with a dialect, a transaction binding and a session opener. Each database's facade
 * (`PostgresOutbox`, `MysqlOutbox`, `SqliteOutbox`) and each adapter subclass it.
 */
export class SqlOutbox<
  M extends TopicMap,
  Tx,
  Target,
  Session = unknown,
  R extends SqlRelayOptions = SqlRelayOptions,
  Sync extends boolean = false,
  /** The subclass declares its own `consume()` signature (PGlite: `transaction(fn)` takes no db). */
  OwnConsume extends boolean = false,
> {
  readonly outbox: Outbox<M>
  readonly #parts: SqlOutboxParts<Tx, Target, Session, R, Sync>
  readonly #kafka: KafkaSetting | undefined
  readonly #direct: LazyTransport
  /** Relays of this process, woken right after a transaction helper commits. */
  readonly #localRelays = new LocalRelays()
  /** The `logger` option; undefined leaves each relay its default. */
  readonly #logger: Logger | undefined

  constructor(options: SqlOutboxOptions<M>, parts: SqlOutboxParts<Tx, Target, Session, R, Sync>) {
    checkOptionsObject(options)
    const { dialect } = parts
    const notify = (options as { notify?: boolean }).notify
    refuseOutboxOptions(dialect, { notify }, {})
    this.outbox = new Outbox(options, dialect.producer({ notify }))
    refuseOutboxOptions(dialect, {}, this.outbox.topics)
    this.#parts = parts
    this.#kafka = checkKafkaSetting(options.kafka)
    this.#logger = options.logger === undefined ? undefined : resolveLogger(options.logger, 'outbox options')
    this.#direct = new LazyTransport(options.kafka, 'a topic mapped with outbox: false')
  }

  /** Typed producers bound to the app's open transaction. */
  in(tx: Tx): ProducersOf<M, Sync> {
    const adapter = this.#parts.binding(tx)
    if (!this.#parts.dialect.capabilities.synchronous) {
      return this.producersOn(adapter as TransactionAdapter) as ProducersOf<M, Sync>
    }
    const sync = adapter as SyncTransactionAdapter
    return this.outbox.producersSync({
      dialect: sync.dialect,
      assertInTransaction: () => sync.assertInTransaction(),
      execute: (statement) => {
        try {
          sync.execute(statement)
        } catch (error) {
          // The app's transaction: its error stays the driver's, a missing table aside (see Outbox).
          throw this.#explain(error, explainMissingTable)
        }
      },
    }) as ProducersOf<M, Sync>
  }

  /** Typed producers that write through `adapter` (for adapters that hold writes back). */
  protected producersOn(adapter: TransactionAdapter): TopicProducers<M> {
    return this.outbox.producers(adapter, () => this.#direct.get())
  }

  /** Creates or upgrades the outbox schema; safe to run from several instances at once. */
  migrate(target?: Target): MigrationOf<Sync> {
    const { dialect, sessions } = this.#parts
    return dialect.migrate(this.outbox.table, sessions(target, 'migrate')) as MigrationOf<Sync>
  }

  /** The schema as a SQL script, for applying with your own migration tool. */
  migrationSql(): string {
    return this.#parts.dialect.migrationScript(this.outbox.table)
  }

  /** A relay worker for this outbox; call `start()` on it (or `runOnce()` in tests). */
  relay(options: R = {} as R): OutboxRelay {
    const { dialect, sessions } = this.#parts
    if (typeof options !== 'object' || options === null) {
      throw invalidArgument(dialect.relayOptionsHint ?? 'relay options must be an object')
    }
    refuseRelayOptions(dialect, options)
    const open = sessions(options.connection as Target | undefined, 'relay')
    const store = dialect.relayStore(this.outbox.table, open, options)
    return this.#localRelays.create(this.outbox, store, this.#kafka, options, {
      logger: this.#logger,
      database: dialect.endpoint(options.connection),
    })
  }

  /**
   * Creates this outbox's missing topics with their declared partitions, replication factor and
   * configs, and reports how existing ones differ from their declarations (never altering them).
   */
  ensureTopics(options?: OutboxEnsureTopicsOptions): Promise<EnsureTopicsReport> {
    return ensureOutboxTopics(this.outbox.topics, this.#kafka, options)
  }

  /** Inspect, replay and purge dead letters (each call uses its own short session). */
  deadLetters(connection?: Target): DeadLetters {
    const { dialect, sessions } = this.#parts
    return explainingDeadLetters(
      dialect.deadLetters(this.outbox.table, sessions(connection, 'admin')),
      (error) => this.#explain(error),
    )
  }

  /** Pending, retrying and dead messages and the age of the oldest pending one (the lag). */
  stats(connection?: Target): Promise<OutboxStats> {
    const { dialect, sessions } = this.#parts
    return dialect.stats(this.outbox.table, sessions(connection, 'admin')).catch((error: unknown) => {
      throw this.#explain(error)
    })
  }

  /**
   * The admin part of this outbox (status without `count(*)`, dead letters, migrations), for the
   * app's own operator endpoints; each call opens a short session on `connection` (the default as
   * for `deadLetters()`). `close()` on it closes nothing of the outbox.
   */
  admin(connection?: Target): OutboxAdmin {
    const { dialect, sessions } = this.#parts
    return composeAdmin({
      dialect,
      table: this.outbox.table,
      open: sessions(connection, 'admin'),
      migrateHint: dialect.migrateHint,
    })
  }

  /**
   * Whether running the same work again can succeed: a `KEntityError`'s `retryable`, or what this
   * database's error table says of a driver error (`produce()` in your transaction lets those
   * through unchanged). Unknown errors: false.
   */
  isRetryable(error: unknown): boolean {
    return this.outbox.isRetryable(error)
  }

  /** A driver error its dialect's table knows as a `KEntityError` (`KE_NOT_MIGRATED` saying what to run). */
  #explain(error: unknown, explain = explainDatabaseError): unknown {
    const { dialect } = this.#parts
    return explain(
      error,
      (cause) => this.outbox.dialect.classifyFailure?.(cause),
      dialect.qualified(this.outbox.table),
      dialect.migrateHint,
    )
  }

  /**
   * A consumer of `topic` whose handler runs in a transaction of this outbox's data layer
   * together with an inbox row per message: effects exactly once, even across crashes and
   * rebalances; the Kafka offset is committed after the database commit. Started at once; run
   * `migrateInbox()` first. Available on outboxes whose `transaction(db, fn)` takes a db and a
   * function (node-postgres, postgres.js, Kysely, Knex, Drizzle, TypeORM, MikroORM, Prisma, mysql2);
   * SQLite outboxes declare their own, with a synchronous handler (`SqliteOutbox.consume`).
   */
  consume<T, D, X>(
    this: this & TransactionRunner<D, X, M>,
    topic: Topic<T>,
    options: AsyncInboxOptions<Sync, InboxConsumerOptions<T, D, X, M>, OwnConsume>,
  ): KafkaConsumer<T> {
    const where = 'outbox.consume()'
    checkTopic(topic, where)
    const resolved = resolveConsumerOptions(options, where)
    const sql = this.#inbox(where)
    const kafka = this.#consumerKafka(options.kafka, where)
    const processor = this.inboxProcessor(
      options as InboxConsumerOptions<T, unknown, unknown, M>,
      {
        table: this.outbox.table,
        sql,
        binding: (tx: unknown) => this.#parts.binding(tx as Tx),
        isRetryable: (error) => this.isRetryable(error),
        logger: resolved.logger,
      },
      resolved.groupId,
    )
    const consumer = new KafkaConsumer(topic, kafka, resolved, processor)
    consumer.start().catch((error: unknown) => {
      resolved.logger.error(
        { topic: topic.name, groupId: resolved.groupId, error: String(error) },
        'the consumer failed to start',
      )
    })
    return consumer
  }

  /**
   * The inbox's processor for `consume()`: handlers awaited in this outbox's `transaction(db, fn)`
   * (see `inboxRunner`). A synchronous driver's outbox runs them its own way.
   */
  protected inboxProcessor<T>(
    options: InboxConsumerOptions<T, unknown, unknown, M>,
    parts: InboxParts<Sync>,
    group: string,
  ): MessageProcessor<T> {
    const runner = this.inboxRunner<unknown, unknown>()
    if (typeof (runner as Partial<TransactionRunner<unknown, unknown, M>>).transaction !== 'function') {
      throw invalidArgument('outbox.consume(): this outbox has no transaction(db, fn) to run the handler in')
    }
    return inboxProcessor(
      { ...parts, runner, binding: parts.binding as (tx: unknown) => TransactionAdapter },
      options,
      group,
    )
  }

  /**
   * What runs the inbox's transactions: this outbox's `transaction(db, fn)`. An outbox whose
   * `transaction` takes no db (PGlite: the outbox has its database) adapts it here; without that
   * every message failed on `transaction(db, fn)` and so did its dead letter, without end.
   */
  protected inboxRunner<D, X>(): TransactionRunner<D, X, M> {
    return this as unknown as TransactionRunner<D, X, M>
  }

  /**
   * Creates the consumer inbox and its dead-letter table if missing (safe from several instances);
   * at once on a synchronous driver (SQLite), as `migrate()` does.
   */
  migrateInbox(target?: Target): InboxMigrationOf<Sync> {
    const { dialect, sessions } = this.#parts
    const run = () => this.#inbox('migrateInbox()').migrate(this.outbox.table, sessions(target, 'migrate'))
    if (dialect.capabilities.synchronous) {
      run()
      return undefined as InboxMigrationOf<Sync>
    }
    // Async: a refused call rejects, as it always did, rather than throwing.
    return (async () => {
      await run()
    })() as InboxMigrationOf<Sync>
  }

  /** The inbox tables as a SQL script, for applying with your own migration tool. */
  inboxMigrationSql(): string {
    return this.#inbox('inboxMigrationSql()').script(this.outbox.table)
  }

  /** Deletes expired inbox rows, `batchSize` (default 5000) per statement, until none is left. */
  purgeInbox(target?: Target, options: { batchSize?: number } = {}): Promise<number> {
    const batchSize = options.batchSize ?? 5000
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 1_000_000) {
      throw invalidArgument(
        `purgeInbox(): 'batchSize' must be an integer from 1 to 1000000, got ${describe(batchSize)}`,
      )
    }
    const { sessions } = this.#parts
    return this.#inbox('purgeInbox()').purge(this.outbox.table, sessions(target, 'admin'), batchSize)
  }

  #inbox(where: string): InboxSql<Session> {
    const { dialect } = this.#parts
    if (dialect.inbox === undefined) {
      throw invalidArgument(
        `${where}: consumers with an inbox are not available on ${dialect.database} yet; use PostgreSQL, MySQL/MariaDB or SQLite, or consume() without an inbox`,
      )
    }
    return dialect.inbox
  }

  #consumerKafka(kafka: KafkaOptions | undefined, where: string): KafkaOptions {
    if (kafka !== undefined) return validateKafkaOptions(kafka) as unknown as KafkaOptions
    if (this.#kafka === undefined || isTransport(this.#kafka)) {
      throw invalidArgument(
        `${where}: pass kafka: { brokers: [...] } (the outbox's kafka option is ${this.#kafka === undefined ? 'not set' : 'a transport, not connection options'})`,
      )
    }
    return this.#kafka
  }

  /** Tells this process's relays that new messages were committed (adapters call it after COMMIT). */
  notifyCommitted(): void {
    this.#localRelays.wakeAll()
  }

  /** Closes the Kafka producer used for `outbox: false` topics. */
  async close(): Promise<void> {
    await this.#direct.close()
  }
}
