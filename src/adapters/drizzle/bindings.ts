import { entityKind, is, type SQL, type SQLChunk, sql } from 'drizzle-orm'
import { MySqlDatabase, MySqlTransaction } from 'drizzle-orm/mysql-core'
import { PgDatabase, PgTransaction } from 'drizzle-orm/pg-core'
import type mysql from 'mysql2/promise'
import { describe, internalError, invalidArgument } from '../../core/errors.ts'
import type { OutboxTable, SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { assertTransactionStatus, TRANSACTION_PROBE } from '../../dialects/mysql/transaction-status.ts'
import { withArrayLiterals } from '../../dialects/postgres/parameters.ts'
import {
  abortedTransaction,
  probedTransaction,
  transactionError,
} from '../../dialects/postgres/transaction.ts'
import { noTransaction } from '../../dialects/shared/transaction-errors.ts'
import { DATABASE_NAMES, type SqlDatabase } from '../data-layer.ts'

/**
 * What `in()` accepts on PostgreSQL: the `tx` of `db.transaction(async (tx) => ...)` (or of a
 * nested `tx.transaction()`), whatever the driver. The `db` itself lacks `rollback()` and does
 * not type-check.
 */
// biome-ignore lint/suspicious/noExplicitAny: any driver, schema and relations of the app
export type DrizzleTransaction = PgTransaction<any, any, any>

/** What `in()` accepts on MySQL: the `tx` of `db.transaction(async (tx) => ...)` (drizzle-orm/mysql2). */
// biome-ignore lint/suspicious/noExplicitAny: any schema and relations of the app
export type DrizzleMysqlTransaction = MySqlTransaction<any, any, any, any>

/** Drizzle's entity kinds of `value`'s class chain (`is()` only answers for classes it is given). */
function kinds(value: unknown): string[] {
  const found: string[] = []
  let type: unknown = (value as { constructor?: unknown } | null)?.constructor
  while (typeof type === 'function') {
    if (Object.hasOwn(type, entityKind))
      found.push(String((type as unknown as Record<symbol, unknown>)[entityKind]))
    type = Object.getPrototypeOf(type)
  }
  return found
}

/** The database of a Drizzle db or transaction, from Drizzle's own entity kinds. */
export function drizzleDatabase(value: unknown): SqlDatabase | undefined {
  if (is(value, PgDatabase)) return 'postgres'
  if (is(value, MySqlDatabase)) return 'mysql'
  return undefined
}

/** A Drizzle transaction (of either database), not the db. */
export function isDrizzleTransaction(value: unknown): boolean {
  return is(value, PgTransaction) || is(value, MySqlTransaction)
}

/**
 * Refuses anything but a Drizzle db (or transaction) of `expected` (on MySQL: on mysql2, the
 * relay needing a MySQL session of its own, with locks), naming what to use instead.
 */
export function assertDrizzleDatabase(value: unknown, expected: SqlDatabase, what: string): void {
  const found = drizzleDatabase(value)
  if (found === expected) {
    if (found === 'postgres') return
    const session = (value as { session?: unknown }).session
    if (kinds(session).includes('MySql2Session')) return
    throw invalidArgument(
      `this Drizzle db runs on ${kinds(session)[0] ?? 'an unknown driver'}; k-entity needs drizzle-orm/mysql2 on MySQL (the relay needs a MySQL session of its own, with locks)`,
    )
  }
  const advice =
    found === 'postgres'
      ? "this Drizzle db is PostgreSQL: use createDrizzleOutbox from 'k-entity/drizzle'"
      : found === 'mysql'
        ? "this Drizzle db is MySQL/MariaDB: use createDrizzleOutbox({ db }) from 'k-entity/drizzle', which detects the database, or createDrizzleMysqlOutbox from 'k-entity/drizzle/mysql'"
        : kinds(value).length > 0
          ? `this Drizzle db is ${kinds(value)[0]}; k-entity supports Drizzle on PostgreSQL and MySQL/MariaDB (drizzle-orm/mysql2)`
          : `got ${describe(value)}`
  throw invalidArgument(`expected ${what} of a ${DATABASE_NAMES[expected]} database; ${advice}`)
}

/**
 * The Drizzle transaction binding on `database`. `is()` follows Drizzle's own entity kinds, so
 * it holds for every driver's transaction class and across duplicate copies of drizzle-orm.
 * `table` is the outbox table, for PostgreSQL's probe (see `probedTransaction`).
 */
export function drizzleTransaction(
  tx: DrizzleTransaction | DrizzleMysqlTransaction,
  database: SqlDatabase,
  table: () => OutboxTable,
): TransactionAdapter {
  assertDrizzleDatabase(tx, database, 'the Drizzle transaction passed to db.transaction(async (tx) => ...)')
  if (!isDrizzleTransaction(tx)) {
    const refuse = () => {
      throw noTransaction(
        'this is the Drizzle db, not a transaction. Produce with the tx of db.transaction(async (tx) => ...) or use outbox.transaction(db, fn)',
      )
    }
    return { dialect: database, assertInTransaction: refuse, execute: async () => refuse() }
  }
  return database === 'postgres'
    ? postgresBinding(tx as DrizzleTransaction, table)
    : mysqlBinding(tx as DrizzleMysqlTransaction)
}

/**
 * PostgreSQL: node-postgres reports the transaction state on the client (free); for other
 * drivers the database is asked before each write (`probedTransaction`).
 */
function postgresBinding(tx: DrizzleTransaction, table: () => OutboxTable): TransactionAdapter {
  const run = async (text: string, values: unknown[]) => {
    await tx.execute(toDrizzleSql({ text, values }))
  }
  const client = (tx._.session as { client?: { getTransactionStatus?: unknown } }).client
  const getStatus = client?.getTransactionStatus
  if (typeof getStatus !== 'function') return probedTransaction(table, run)
  return {
    dialect: 'postgres',
    assertInTransaction() {
      const status = getStatus.call(client)
      if (status === 'T') return
      if (status === 'E') throw abortedTransaction()
      throw noTransaction('this transaction already committed or rolled back')
    },
    async execute(statement: SqlStatement) {
      try {
        await run(statement.text, statement.values)
      } catch (error) {
        throw transactionError(error) ?? error
      }
    },
  }
}

/**
 * MySQL: Drizzle keeps no transaction state (a finished `tx` still runs queries, on a
 * connection back in the pool), so the server is asked before each write (TRANSACTION_PROBE).
 */
function mysqlBinding(tx: DrizzleMysqlTransaction): TransactionAdapter {
  return {
    dialect: 'mysql',
    assertInTransaction: () => checked(TRANSACTION_PROBE),
    async execute(statement: SqlStatement) {
      await tx.execute(toDrizzleMysqlSql(statement))
    },
    executeChecked: (statement) => checked(toDrizzleMysqlSql(statement)),
  }

  async function checked(query: string | SQL): Promise<void> {
    const [status] = (await tx.execute(query)) as unknown as [mysql.ResultSetHeader | undefined]
    assertTransactionStatus(
      status?.serverStatus,
      'this Drizzle transaction already committed or rolled back, or MySQL ended it on its own (a deadlock, or a statement that commits implicitly such as DDL)',
    )
  }
}

/**
 * The statement as a Drizzle `SQL` object: text between placeholders stays raw, each `$n`
 * becomes a bound parameter (Drizzle renumbers them, repeating a value used twice).
 */
export function toDrizzleSql(statement: SqlStatement): SQL {
  const values = withArrayLiterals(statement.values)
  const chunks: SQLChunk[] = []
  let last = 0
  for (const match of statement.text.matchAll(/\$(\d+)/g)) {
    const index = Number(match[1]) - 1
    if (index < 0 || index >= values.length) {
      throw internalError(`statement uses ${match[0]} but has ${values.length} values`)
    }
    chunks.push(sql.raw(statement.text.slice(last, match.index)), sql.param(values[index]))
    last = match.index + match[0].length
  }
  chunks.push(sql.raw(statement.text.slice(last)))
  return sql.join(chunks)
}

/** The statement as a Drizzle `SQL` object: text between `?` stays raw, each `?` binds its value. */
function toDrizzleMysqlSql(statement: SqlStatement): SQL {
  const parts = statement.text.split('?')
  if (parts.length - 1 !== statement.values.length) {
    throw internalError(
      `statement has ${parts.length - 1} placeholders for ${statement.values.length} values`,
    )
  }
  const chunks: SQLChunk[] = []
  parts.forEach((part, index) => {
    chunks.push(sql.raw(part))
    if (index < statement.values.length) chunks.push(sql.param(statement.values[index]))
  })
  return sql.join(chunks)
}
