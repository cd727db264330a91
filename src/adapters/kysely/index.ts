import { CompiledQuery, type Kysely, PostgresAdapter, type Transaction } from 'kysely'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { withArrayLiterals } from '../../dialects/postgres/parameters.ts'
import {
  PostgresOutbox,
  type PostgresOutboxOptions,
  type PostgresRelayOptions,
} from '../../dialects/postgres/postgres-outbox.ts'
import { noTransaction, transactionError } from '../../dialects/postgres/transaction.ts'
import { openPgSession, type PgRelayConnection } from '../pg/session.ts'

/**
 * What `in()` accepts: the `trx` of `db.transaction().execute(async (trx) => ...)`, or a
 * controlled transaction from `db.startTransaction().execute()` (and its savepoints).
 * A `Kysely` instance is not assignable to it: Kysely types `isTransaction` as `true` only here.
 */
// biome-ignore lint/suspicious/noExplicitAny: any database interface of the app
export type KyselyTransaction = Transaction<any>

/** Kysely's own messages for a transaction handle used after it ended (it has no error codes). */
const ENDED = /^Transaction is already (committed|rolled back)$/

/** Wraps a Kysely transaction on PostgreSQL, checked to be a live transaction. */
export function kyselyTransaction(trx: KyselyTransaction): TransactionAdapter {
  if (
    typeof trx !== 'object' ||
    trx === null ||
    typeof trx.executeQuery !== 'function' ||
    typeof trx.getExecutor !== 'function'
  ) {
    throw invalidArgument(
      `expected the Kysely transaction passed to db.transaction().execute(async (trx) => ...), got ${describe(trx)}`,
    )
  }
  const adapter = trx.getExecutor().adapter
  if (!(adapter instanceof PostgresAdapter)) {
    throw invalidArgument(
      `this outbox is for PostgreSQL but the Kysely instance uses ${adapter.constructor.name}; use the adapter of that database`,
    )
  }
  return {
    dialect: 'postgres',
    assertInTransaction() {
      if (trx.isTransaction !== true) {
        throw noTransaction(
          undefined,
          ': this is the Kysely instance, not a transaction. Produce with the trx of db.transaction().execute(async (trx) => ...) or use outbox.transaction(db, fn)',
        )
      }
      const controlled = trx as { isCommitted?: unknown; isRolledBack?: unknown }
      if (controlled.isCommitted === true || controlled.isRolledBack === true) {
        throw noTransaction(undefined, ': this controlled transaction already ended')
      }
    },
    async execute(statement: SqlStatement) {
      try {
        await trx.executeQuery(CompiledQuery.raw(statement.text, withArrayLiterals(statement.values)))
      } catch (error) {
        if (error instanceof Error && ENDED.test(error.message)) {
          throw noTransaction(error, ': this transaction handle was used after its transaction ended')
        }
        throw transactionError(error) ?? error
      }
    },
  }
}

/**
 * The Kysely adapter (PostgreSQL dialects). Relays and migrations open their own node-postgres
 * session: pass `connection` (URL, config or your `pg.Pool`), or set `DATABASE_URL`.
 *
 * @example
 * const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) })
 * const outbox = createKyselyOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(pool)
 * await outbox.transaction(db, async (trx, topics) => {
 *   await trx.insertInto('orders').values(order).execute()
 *   await topics.orderCreated.produce(order)
 * })
 */
export class KyselyOutbox<M extends TopicMap> extends PostgresOutbox<
  M,
  KyselyTransaction,
  PgRelayConnection
> {
  constructor(options: PostgresOutboxOptions<M>) {
    super(options, { transaction: kyselyTransaction, openSession: openPgSession })
  }

  /**
   * Runs `fn` in `db.transaction().execute()`: COMMIT if it resolves, ROLLBACK if it throws.
   * After the commit, relays of this process are woken at once.
   */
  async transaction<DB, R>(
    db: Kysely<DB>,
    fn: (trx: Transaction<DB>, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    if (typeof db !== 'object' || db === null || typeof db.transaction !== 'function' || db.isTransaction) {
      throw invalidArgument(
        `transaction() needs the Kysely instance (not a transaction), got ${describe(db)}; inside a transaction use outbox.in(trx)`,
      )
    }
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a callback, got ${describe(fn)}`)
    const result = await db.transaction().execute((trx) => fn(trx, this.in(trx)))
    this.notifyCommitted()
    return result
  }
}

export function createKyselyOutbox<M extends TopicMap>(options: PostgresOutboxOptions<M>): KyselyOutbox<M> {
  return new KyselyOutbox(options)
}

export type {
  PgRelayConnection as KyselyRelayConnection,
  PostgresOutboxOptions as KyselyOutboxOptions,
  PostgresRelayOptions as KyselyRelayOptions,
}
