import type { Knex } from 'knex'
import type mysql from 'mysql2/promise'
import { describe, internalError, invalidArgument } from '../../core/errors.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { assertTransactionStatus, TRANSACTION_PROBE } from '../../dialects/mysql/transaction-status.ts'
import { withArrayLiterals } from '../../dialects/postgres/parameters.ts'
import { transactionError } from '../../dialects/postgres/transaction.ts'
import { noTransaction } from '../../dialects/shared/transaction-errors.ts'
import { type SqlDatabase, wrongDatabase } from '../data-layer.ts'

/**
 * What `in()` accepts: the `trx` of `knex.transaction(async (trx) => ...)` (or of a nested
 * `trx.transaction()`, a savepoint). The `knex` instance itself lacks `commit`/`rollback`/
 * `isCompleted` and does not type-check.
 */
export type KnexTransaction = Knex.Transaction

/** The databases the Knex adapter speaks, told apart by the client's dialect. */
export type KnexDatabase = SqlDatabase

type KnexClient = { dialect?: unknown; config?: { connection?: unknown } }

export function isKnex(value: unknown): value is Knex {
  return (
    typeof value === 'function' &&
    typeof (value as Knex).raw === 'function' &&
    typeof (value as Knex).client === 'object' &&
    (value as Knex).client !== null
  )
}

/** The database of a Knex instance or transaction, from its client's dialect. */
export function knexDatabase(knex: Knex): KnexDatabase | undefined {
  const dialect = (knex.client as KnexClient).dialect
  if (dialect === 'postgresql') return 'postgres'
  if (dialect === 'mysql') return 'mysql'
  return undefined
}

/** Refuses a Knex instance configured for another database than the outbox's, saying what to use. */
export function assertKnexDatabase(knex: Knex, expected: KnexDatabase): void {
  const found = knexDatabase(knex)
  if (found === expected) return
  const dialect = String((knex.client as KnexClient).dialect)
  const advice =
    found === undefined
      ? "k-entity supports Knex on PostgreSQL ('k-entity/knex') and MySQL/MariaDB ('k-entity/knex/mysql')"
      : found === 'postgres'
        ? "use createKnexOutbox from 'k-entity/knex'"
        : "use createKnexOutbox({ db: knex }) from 'k-entity/knex', which detects the database, or createKnexMysqlOutbox from 'k-entity/knex/mysql'"
  throw wrongDatabase(expected, `the Knex instance uses the ${dialect} client`, advice)
}

/**
 * The Knex transaction binding on `database`: checks that `trx` is a live transaction of that
 * database and runs the outbox's statements in it.
 */
export function knexTransaction(
  trx: KnexTransaction,
  database: KnexDatabase = 'postgres',
): TransactionAdapter {
  if (!isKnex(trx)) {
    throw invalidArgument(
      `expected the Knex transaction passed to knex.transaction(async (trx) => ...), got ${describe(trx)}`,
    )
  }
  assertKnexDatabase(trx, database)
  return database === 'postgres' ? postgresBinding(trx) : mysqlBinding(trx)
}

/** What Knex itself knows: the root instance is no transaction, a trx may have ended. */
function assertLiveHandle(trx: KnexTransaction): void {
  if (trx.isTransaction !== true) {
    throw noTransaction(
      'this is the knex instance, not a transaction. Produce with the trx of knex.transaction(async (trx) => ...) or use outbox.transaction(knex, fn)',
    )
  }
  if (trx.isCompleted()) throw noTransaction('this Knex transaction already committed or rolled back')
}

/** PostgreSQL: a failed or ended transaction is recognised from the SQLSTATE of the write. */
function postgresBinding(trx: KnexTransaction): TransactionAdapter {
  return {
    dialect: 'postgres',
    assertInTransaction: () => assertLiveHandle(trx),
    async execute(statement: SqlStatement) {
      const { sql, bindings } = toKnexBindings(statement)
      try {
        await trx.raw(sql, bindings)
      } catch (error) {
        throw transactionError(error) ?? error
      }
    },
  }
}

/**
 * MySQL: Knex knows whether the trx was committed or rolled back; only the server knows whether
 * it ended the transaction on its own (a deadlock, or DDL committing implicitly), so each write
 * is preceded by TRANSACTION_PROBE.
 */
function mysqlBinding(trx: KnexTransaction): TransactionAdapter {
  return {
    dialect: 'mysql',
    assertInTransaction: () => checked(TRANSACTION_PROBE, []),
    async execute(statement: SqlStatement) {
      await trx.raw(statement.text, checkedBindings(statement))
    },
    executeChecked: (statement) => checked(statement.text, checkedBindings(statement)),
  }

  async function checked(text: string, bindings: readonly Knex.RawBinding[]): Promise<void> {
    assertLiveHandle(trx)
    const [status] = (await trx.raw(text, bindings)) as [mysql.ResultSetHeader | undefined]
    assertTransactionStatus(
      status?.serverStatus,
      'MySQL ended the transaction of this trx on its own (a deadlock, or a statement that commits implicitly such as DDL)',
    )
  }
}

/**
 * Knex's raw() binds `?` in order, not `$n`: each `$n` becomes a `?` with its value repeated
 * where it is used twice, and a literal `?` is escaped so Knex leaves it alone. Values reach
 * node-postgres unchanged (arrays as literals, see `withArrayLiterals`).
 */
export function toKnexBindings(statement: SqlStatement): { sql: string; bindings: Knex.RawBinding[] } {
  const values = withArrayLiterals(statement.values)
  const bindings: Knex.RawBinding[] = []
  const sql = statement.text.replaceAll('?', '\\?').replace(/\$(\d+)/g, (_, position: string) => {
    const index = Number(position) - 1
    if (index < 0 || index >= values.length) {
      throw internalError(`statement uses $${position} but has ${values.length} values`)
    }
    bindings.push(values[index] as Knex.RawBinding)
    return '?'
  })
  return { sql, bindings }
}

/**
 * Knex's raw() reads every `?` as a value and `??` as an identifier. The MySQL dialect's `?` are
 * all placeholders and it never writes `??`, so the text passes as it is; checked here, because
 * a miscount would bind values to the wrong columns.
 */
function checkedBindings(statement: SqlStatement): Knex.RawBinding[] {
  const placeholders = statement.text.split('?').length - 1
  if (
    statement.text.includes('??') ||
    statement.text.includes('\\?') ||
    placeholders !== statement.values.length
  ) {
    throw internalError(
      `statement has ${placeholders} placeholders for ${statement.values.length} values, or a ?? / \\? Knex would rewrite`,
    )
  }
  return statement.values as Knex.RawBinding[]
}

/** A Knex instance's own connection settings (a URL, options, or a function returning either). */
export async function knexConnectionSettings(knex: Knex): Promise<unknown> {
  const configured = (knex.client as KnexClient).config?.connection
  return typeof configured === 'function' ? await configured() : configured
}
