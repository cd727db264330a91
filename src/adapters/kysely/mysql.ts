import { CompiledQuery, Kysely, MysqlAdapter, PostgresAdapter, type Transaction } from 'kysely'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import {
  MysqlOutbox,
  type MysqlOutboxOptions,
  type MysqlRelayOptions,
} from '../../dialects/mysql/mysql-outbox.ts'
import { assertInTransactionBySavepoint } from '../../dialects/mysql/savepoint-probe.ts'
import { errorNumber, type MysqlSession } from '../../dialects/mysql/session.ts'
import { noTransaction } from '../../dialects/mysql/transaction-status.ts'
import { type Mysql2Connection, type MysqlSessionPurpose, openMysql2Session } from '../mysql2/session.ts'

/**
 * What `in()` accepts: the `trx` of `db.transaction().execute(async (trx) => ...)`, or a
 * controlled transaction from `db.startTransaction().execute()` (and its savepoints).
 * A `Kysely` instance is not assignable to it: Kysely types `isTransaction` as `true` only here.
 */
// biome-ignore lint/suspicious/noExplicitAny: any database interface of the app
export type KyselyMysqlTransaction = Transaction<any>

/**
 * Where relays, migrations and admin calls connect: a `mysql://` URL or mysql2 connection
 * options. Kysely keeps its dialect's pool private, so its settings cannot be reused.
 */
export type KyselyMysqlConnection = Mysql2Connection

/** Kysely's own messages for a transaction handle used after it ended (it has no error codes). */
const ENDED = /^Transaction is already (committed|rolled back)$/

/**
 * Asks the server whether a transaction is open. Kysely returns no OK packet, so the status
 * flags TRANSACTION_PROBE reads are out of reach: the savepoint probe stands in.
 */
function probe(trx: KyselyMysqlTransaction): Promise<void> {
  return assertInTransactionBySavepoint(
    trx,
    (text) => trx.executeQuery(CompiledQuery.raw(text)),
    errorNumber,
    'a deadlock, or a statement that commits implicitly such as DDL, ended the transaction of this trx',
  )
}

/** Wraps a Kysely transaction on MySQL or MariaDB (`MysqlDialect`), checked to be a live transaction. */
export function kyselyMysqlTransaction(trx: KyselyMysqlTransaction): TransactionAdapter {
  if (!isKysely(trx)) {
    throw invalidArgument(
      `expected the Kysely transaction passed to db.transaction().execute(async (trx) => ...), got ${describe(trx)}`,
    )
  }
  assertMysqlAdapter(trx)
  return {
    dialect: 'mysql',
    async assertInTransaction() {
      if (trx.isTransaction !== true) {
        throw noTransaction(
          'this is the Kysely instance, not a transaction. Produce with the trx of db.transaction().execute(async (trx) => ...) or use outbox.transaction(db, fn)',
        )
      }
      const controlled = trx as { isCommitted?: unknown; isRolledBack?: unknown }
      if (controlled.isCommitted === true || controlled.isRolledBack === true) {
        throw noTransaction('this controlled transaction already committed or rolled back')
      }
      try {
        await probe(trx)
      } catch (error) {
        if (error instanceof Error && ENDED.test(error.message)) {
          throw noTransaction('this Kysely transaction already committed or rolled back', error)
        }
        throw error
      }
    },
    async execute(statement: SqlStatement) {
      await trx.executeQuery(CompiledQuery.raw(statement.text, statement.values))
    },
  }
}

function isKysely(value: unknown): value is Kysely<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Kysely<unknown>).executeQuery === 'function' &&
    typeof (value as Kysely<unknown>).getExecutor === 'function'
  )
}

/** Refuses a Kysely instance configured for another database, naming the adapter it needs. */
function assertMysqlAdapter(db: Kysely<unknown>): void {
  const adapter = db.getExecutor().adapter
  if (adapter instanceof MysqlAdapter) return
  const advice =
    adapter instanceof PostgresAdapter
      ? "use createKyselyOutbox from 'k-entity/kysely'"
      : "k-entity supports Kysely on PostgreSQL ('k-entity/kysely') and MySQL/MariaDB ('k-entity/kysely/mysql', with MysqlDialect)"
  throw invalidArgument(
    `this outbox is for MySQL/MariaDB but the Kysely instance uses ${adapter.constructor.name}; ${advice}`,
  )
}

function openKyselySession(
  target: KyselyMysqlConnection | undefined,
  purpose: MysqlSessionPurpose,
): Promise<MysqlSession> {
  if (target instanceof Kysely || isKysely(target)) {
    return Promise.reject(
      invalidArgument(
        "a Kysely instance cannot host the outbox's own connection (Kysely keeps its pool's settings private): pass a mysql:// URL or mysql2 connection options",
      ),
    )
  }
  return openMysql2Session(target, purpose)
}

/**
 * The Kysely adapter on MySQL 8 / MariaDB 10.6+ (`MysqlDialect` on a mysql2 pool). Relays,
 * migrations and admin calls open their own mysql2 connection: pass `connection` (a URL or
 * mysql2 options), or set `DATABASE_URL`.
 *
 * @example
 * const db = new Kysely<DB>({ dialect: new MysqlDialect({ pool: createPool(url) }) })
 * const outbox = createKyselyMysqlOutbox({ topics: { orderCreated }, schema: 'shop', kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(url)
 * await outbox.transaction(db, async (trx, topics) => {
 *   await trx.insertInto('orders').values(order).execute()
 *   await topics.orderCreated.produce(order)
 * })
 */
export class KyselyMysqlOutbox<M extends TopicMap> extends MysqlOutbox<
  M,
  KyselyMysqlTransaction,
  KyselyMysqlConnection
> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, { transaction: kyselyMysqlTransaction, openSession: openKyselySession })
  }

  /**
   * Runs `fn` in `db.transaction().execute()`: COMMIT if it resolves, ROLLBACK if it throws.
   * After the commit, relays of this process are woken at once.
   */
  async transaction<DB, R>(
    db: Kysely<DB>,
    fn: (trx: Transaction<DB>, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    if (!isKysely(db) || typeof db.transaction !== 'function' || db.isTransaction) {
      throw invalidArgument(
        `transaction() needs the Kysely instance (not a transaction), got ${describe(db)}; inside a transaction use outbox.in(trx)`,
      )
    }
    assertMysqlAdapter(db)
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a callback, got ${describe(fn)}`)
    const result = await db.transaction().execute((trx) => fn(trx, this.in(trx)))
    this.notifyCommitted()
    return result
  }
}

export function createKyselyMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): KyselyMysqlOutbox<M> {
  return new KyselyMysqlOutbox(options)
}

export type KyselyMysqlOutboxOptions<M extends TopicMap> = MysqlOutboxOptions<M>
export type KyselyMysqlRelayOptions = MysqlRelayOptions<KyselyMysqlConnection>
