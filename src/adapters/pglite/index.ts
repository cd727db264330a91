import { PGlite, type PGliteInterface, type PGliteOptions, type Transaction } from '@electric-sql/pglite'
import type { InboxConsumerOptions, TransactionRunner } from '../../consumer/inbox.ts'
import type { KafkaConsumer } from '../../consumer/kafka-consumer.ts'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import { Outbox, type TopicMap, type TopicProducers } from '../../core/outbox.ts'
import type { RelayOptions } from '../../core/relay.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import type { Topic } from '../../core/topic.ts'
import { pgliteSessions, pgliteSql } from '../../dialects/pglite/sql-dialect.ts'
import { postgresDialect } from '../../dialects/postgres/index.ts'
import type { PostgresOutboxOptions } from '../../dialects/postgres/postgres-outbox.ts'
import type { PgSession } from '../../dialects/postgres/session.ts'
import { transactionError } from '../../dialects/postgres/transaction.ts'
import { SqlOutbox } from '../../outbox/sql-outbox.ts'
import { checkKafkaSetting, type KafkaSetting } from '../../transports/kafka/index.ts'

/** Wraps the `tx` PGlite passes to `db.transaction(async (tx) => ...)`. */
export function pgliteTransaction(tx: Transaction): TransactionAdapter {
  if (typeof tx !== 'object' || tx === null || typeof tx.query !== 'function') {
    throw invalidArgument(
      `expected the transaction of db.transaction(async (tx) => ...) of a PGlite database, got ${describe(tx)}`,
    )
  }
  return {
    dialect: 'postgres',
    assertInTransaction() {
      // The database itself runs each query in a transaction of its own, and a bare BEGIN on it
      // would let every other caller of the shared session (the relay too) into the transaction.
      if (typeof (tx as unknown as PGliteInterface).transaction === 'function') {
        throw new KEntityError(
          ErrorCodes.NO_TRANSACTION,
          'outbox topics must be produced inside a transaction: this is the PGlite database itself; use the tx of db.transaction(async (tx) => ...) (or outbox.transaction(fn)); nothing was stored',
        )
      }
      if (tx.closed) {
        throw new KEntityError(
          ErrorCodes.NO_TRANSACTION,
          'this PGlite transaction already ended (committed or rolled back); produce inside the db.transaction callback, before it returns; nothing was stored',
        )
      }
    },
    async execute(statement: SqlStatement) {
      try {
        await tx.query(statement.text, statement.values)
      } catch (error) {
        throw transactionError(error) ?? error
      }
    },
  }
}

export interface PgliteOutboxOptions<M extends TopicMap> extends PostgresOutboxOptions<M> {
  /** The app's PGlite database: the outbox table lives in it and the relay reads it in this process. */
  db: PGliteInterface
}

/** Relay options on PGlite: always the single relay of its database, on the outbox's own `db`. */
export interface PgliteRelayOptions
  extends Omit<RelayOptions, 'mode' | 'leaderCheckInterval' | 'topicRetry'> {
  /** Kafka for this relay; defaults to the outbox's `kafka` option. */
  kafka?: KafkaSetting
  /** Only `single`: an embedded database has one relay, in the process that embeds it. */
  mode?: 'single'
}

/** `outbox.consume()`'s options on PGlite: the handler's `tx` is PGlite's; `db` may be left out. */
export type PgliteInboxConsumerOptions<T, M extends TopicMap> = Omit<
  InboxConsumerOptions<T, PGliteInterface, Transaction, M>,
  'db'
> & { db?: PGliteInterface }

/**
 * The PGlite adapter: the outbox inside an embedded PostgreSQL (WebAssembly), with the relay
 * in the same process on the same database. The relay never keeps a transaction open while it
 * waits for Kafka, so the app's queries wait at most for one claim or one delete.
 *
 * @example
 * const outbox = await openPgliteOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.relay().start()
 * await outbox.transaction(async (tx, topics) => {
 *   await tx.query('INSERT INTO orders (id) VALUES ($1)', [order.id])
 *   await topics.orderCreated.produce(order)
 * })
 */
export class PgliteOutbox<M extends TopicMap> extends SqlOutbox<
  M,
  Transaction,
  PGliteInterface,
  Promise<PgSession>,
  PgliteRelayOptions,
  false,
  true
> {
  readonly db: PGliteInterface
  readonly #ownsDatabase: boolean

  /** Use `createPgliteOutbox` (your database) or `openPgliteOutbox` (a new one). */
  constructor(options: PgliteOutboxOptions<M>, ownsDatabase = false) {
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      throw invalidArgument(
        `the PGlite outbox needs an options object: { db, topics: { ... } }, got ${describe(options)}`,
      )
    }
    const db = options.db
    if (typeof db !== 'object' || db === null || typeof db.transaction !== 'function') {
      throw invalidArgument(
        `'db' must be a PGlite database (await PGlite.create()), got ${describe(db)}; openPgliteOutbox() creates one for you`,
      )
    }
    super(options, { dialect: pgliteSql(db), binding: pgliteTransaction, sessions: pgliteSessions(db) })
    this.db = db
    this.#ownsDatabase = ownsDatabase
  }

  /** Runs `fn` in `db.transaction()`: COMMIT if it resolves, ROLLBACK if it throws. */
  async transaction<R>(fn: (tx: Transaction, topics: TopicProducers<M>) => Promise<R>): Promise<R> {
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a function, got ${describe(fn)}`)
    const result = await this.db.transaction((tx) => fn(tx, this.in(tx)))
    this.notifyCommitted()
    return result
  }

  /**
   * A consumer whose handler runs in a transaction of this outbox's database with the message's
   * inbox row (see `SqlOutbox.consume`). `db` may be left out: it can only be this database.
   */
  override consume<T>(topic: Topic<T>, options: PgliteInboxConsumerOptions<T, M>): KafkaConsumer<T> {
    const withDb = typeof options === 'object' && options !== null ? { db: this.db, ...options } : options
    return super.consume(topic, withDb as never)
  }

  /** The inbox's handler transactions run on this outbox's database: `consume()`'s `db` is that database. */
  protected override inboxRunner<D, X>(): TransactionRunner<D, X, M> {
    return {
      transaction: (_db, fn) =>
        this.transaction((tx, topics) =>
          (fn as (tx: Transaction, topics: TopicProducers<M>) => Promise<never>)(tx, topics),
        ),
    } as TransactionRunner<D, X, M>
  }

  /** Closes the Kafka producer for `outbox: false` topics, and the database if `openPgliteOutbox` created it. */
  override async close(): Promise<void> {
    await super.close()
    if (this.#ownsDatabase && !this.db.closed) await this.db.close()
  }
}

/** The outbox in a PGlite database the app already has; run `migrate()` once before use. */
export function createPgliteOutbox<M extends TopicMap>(options: PgliteOutboxOptions<M>): PgliteOutbox<M> {
  return new PgliteOutbox(options)
}

export interface OpenPgliteOutboxOptions<M extends TopicMap> extends PostgresOutboxOptions<M> {
  /**
   * Where PGlite keeps its files: a directory path (kept across restarts) or `memory://` (the
   * default: gone when the process ends).
   */
  dataDir?: string
  /** Further PGlite options (extensions, parsers...). */
  pglite?: Omit<PGliteOptions, 'dataDir'>
}

/**
 * Creates a PGlite database (in memory, or in `dataDir`), migrates the outbox into it and returns
 * the outbox; `outbox.db` is the database for the app's own tables, `outbox.close()` closes it.
 */
export async function openPgliteOutbox<M extends TopicMap>(
  options: OpenPgliteOutboxOptions<M>,
): Promise<PgliteOutbox<M>> {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument('openPgliteOutbox() needs an options object: { topics: { ... }, dataDir? }')
  }
  const { dataDir = 'memory://', pglite = {}, ...outboxOptions } = options
  if (typeof dataDir !== 'string' || dataDir === '') {
    throw invalidArgument(`'dataDir' must be a directory path or 'memory://', got ${describe(dataDir)}`)
  }
  if (typeof pglite !== 'object' || pglite === null) {
    throw invalidArgument(`'pglite' must be an object of PGlite options, got ${describe(pglite)}`)
  }
  // Validate the topics and Kafka settings before paying for a database start.
  new Outbox(outboxOptions, postgresDialect)
  checkKafkaSetting(outboxOptions.kafka)
  const db = await PGlite.create({ ...pglite, dataDir })
  const outbox = new PgliteOutbox({ ...outboxOptions, db }, true)
  try {
    await outbox.migrate()
  } catch (error) {
    await db.close().catch(() => {})
    throw error
  }
  return outbox
}
