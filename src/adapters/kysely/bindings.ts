import { CompiledQuery, type Kysely, MysqlAdapter, PostgresAdapter, type Transaction } from 'kysely'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { assertInTransactionBySavepoint } from '../../dialects/mysql/savepoint-probe.ts'
import { errorNumber } from '../../dialects/mysql/session.ts'
import { withArrayLiterals } from '../../dialects/postgres/parameters.ts'
import { transactionError } from '../../dialects/postgres/transaction.ts'
import { noTransaction } from '../../dialects/shared/transaction-errors.ts'
import { type SqlDatabase, wrongDatabase } from '../data-layer.ts'

/**
 * What `in()` accepts: the `trx` of `db.transaction().execute(async (trx) => ...)`, or a
 * controlled transaction from `db.startTransaction().execute()` (and its savepoints).
 * A `Kysely` instance is not assignable to it: Kysely types `isTransaction` as `true` only here.
 */
// biome-ignore lint/suspicious/noExplicitAny: any database interface of the app
export type KyselyTransaction = Transaction<any>

/** The databases the Kysely adapter speaks, told apart by the dialect's adapter class. */
export type KyselyDatabase = SqlDatabase

/** Kysely's own messages for a transaction handle used after it ended (it has no error codes). */
const ENDED = /^Transaction is already (committed|rolled back)$/

export function isKysely(value: unknown): value is Kysely<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Kysely<unknown>).executeQuery === 'function' &&
    typeof (value as Kysely<unknown>).getExecutor === 'function'
  )
}

/** The database of a Kysely instance or transaction, from its executor's adapter. */
export function kyselyDatabase(db: Kysely<unknown>): KyselyDatabase | undefined {
  const adapter = db.getExecutor().adapter
  if (adapter instanceof PostgresAdapter) return 'postgres'
  if (adapter instanceof MysqlAdapter) return 'mysql'
  return undefined
}

/** Refuses a Kysely instance configured for another database than the outbox's, saying what to use. */
export function assertKyselyDatabase(db: Kysely<unknown>, expected: KyselyDatabase): void {
  const found = kyselyDatabase(db)
  if (found === expected) return
  const advice =
    found === undefined
      ? 'k-entity supports Kysely on PostgreSQL (PostgresDialect) and MySQL/MariaDB (MysqlDialect)'
      : found === 'postgres'
        ? "use createKyselyOutbox from 'k-entity/kysely'"
        : "use createKyselyOutbox({ db }) from 'k-entity/kysely', which detects the database, or createKyselyMysqlOutbox from 'k-entity/kysely/mysql'"
  throw wrongDatabase(
    expected,
    `the Kysely instance uses ${db.getExecutor().adapter.constructor.name}`,
    advice,
  )
}

/**
 * The Kysely transaction binding on `database`: checks that `trx` is a live transaction of that
 * database and runs the outbox's statements in it.
 */
export function kyselyTransaction(
  trx: KyselyTransaction,
  database: KyselyDatabase = 'postgres',
): TransactionAdapter {
  if (!isKysely(trx)) {
    throw invalidArgument(
      `expected the Kysely transaction passed to db.transaction().execute(async (trx) => ...), got ${describe(trx)}`,
    )
  }
  assertKyselyDatabase(trx, database)
  return database === 'postgres' ? postgresBinding(trx) : mysqlBinding(trx)
}

/** What Kysely itself knows: the root instance is no transaction, a controlled one may have ended. */
function assertLiveHandle(trx: KyselyTransaction): void {
  if (trx.isTransaction !== true) {
    throw noTransaction(
      'this is the Kysely instance, not a transaction. Produce with the trx of db.transaction().execute(async (trx) => ...) or use outbox.transaction(db, fn)',
    )
  }
  const controlled = trx as { isCommitted?: unknown; isRolledBack?: unknown }
  if (controlled.isCommitted === true || controlled.isRolledBack === true) {
    throw noTransaction('this controlled transaction already committed or rolled back')
  }
}

/** A handle used after Kysely ended its transaction, as KE_NO_TRANSACTION. */
function endedHandle(error: unknown): unknown {
  return error instanceof Error && ENDED.test(error.message)
    ? noTransaction('this Kysely transaction already committed or rolled back', error)
    : undefined
}

/** PostgreSQL: a failed or ended transaction is recognised from the SQLSTATE of the write. */
function postgresBinding(trx: KyselyTransaction): TransactionAdapter {
  return {
    dialect: 'postgres',
    assertInTransaction: () => assertLiveHandle(trx),
    async execute(statement: SqlStatement) {
      try {
        await trx.executeQuery(CompiledQuery.raw(statement.text, withArrayLiterals(statement.values)))
      } catch (error) {
        throw endedHandle(error) ?? transactionError(error) ?? error
      }
    },
  }
}

/**
 * MySQL: the server is asked whether a transaction is open. Kysely returns no OK packet, so the
 * status flags TRANSACTION_PROBE reads are out of reach: the savepoint probe stands in.
 */
function mysqlBinding(trx: KyselyTransaction): TransactionAdapter {
  return {
    dialect: 'mysql',
    async assertInTransaction() {
      assertLiveHandle(trx)
      try {
        await assertInTransactionBySavepoint(
          trx,
          (text) => trx.executeQuery(CompiledQuery.raw(text)),
          errorNumber,
          'a deadlock, or a statement that commits implicitly such as DDL, ended the transaction of this trx',
        )
      } catch (error) {
        throw endedHandle(error) ?? error
      }
    },
    async execute(statement: SqlStatement) {
      await trx.executeQuery(CompiledQuery.raw(statement.text, statement.values))
    },
  }
}
