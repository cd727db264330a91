import { ErrorCodes, KEntityError } from '../../core/errors.ts'
import type { OutboxTable, SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { noTransaction } from '../shared/transaction-errors.ts'
import { qualified } from './names.ts'

export { noTransaction }

/** SQLSTATEs that mean "no usable transaction" rather than a failed statement. */
export const NO_ACTIVE_SQL_TRANSACTION = '25P01'
export const IN_FAILED_SQL_TRANSACTION = '25P02'

/**
 * Runs the outbox's statements on a connection whose transaction state the driver does not
 * report (postgres.js). Before each write it locks the outbox table in ROW EXCLUSIVE mode, the
 * lock the INSERT takes anyway: PostgreSQL refuses LOCK TABLE outside a transaction block, so a
 * handle whose transaction already ended (or never began) is refused before anything is
 * written, instead of writing in autocommit.
 */
export function probedTransaction(
  table: () => OutboxTable,
  run: (text: string, values: unknown[]) => Promise<unknown>,
): TransactionAdapter {
  return {
    dialect: 'postgres',
    assertInTransaction() {},
    async execute(statement: SqlStatement) {
      try {
        await run(`LOCK TABLE ${qualified(table())} IN ROW EXCLUSIVE MODE`, [])
      } catch (error) {
        throw transactionError(error) ?? error
      }
      try {
        await run(statement.text, statement.values)
      } catch (error) {
        throw transactionError(error) ?? error
      }
    },
  }
}

/** The KEntityError for a driver error that means the transaction is gone or failed. */
export function transactionError(error: unknown): KEntityError | undefined {
  const code = sqlState(error)
  if (code === NO_ACTIVE_SQL_TRANSACTION) return noTransaction(undefined, error)
  if (code === IN_FAILED_SQL_TRANSACTION) return abortedTransaction(error)
  return undefined
}

/** The SQLSTATE of a driver error, also when a query builder wrapped it (Drizzle sets `cause`). */
export function sqlState(error: unknown): string | undefined {
  for (
    let current = error, depth = 0;
    current !== null && typeof current === 'object' && depth < 5;
    depth++
  ) {
    const code = (current as { code?: unknown }).code
    if (typeof code === 'string' && code.length === 5) return code
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

export function abortedTransaction(cause?: unknown): KEntityError {
  return new KEntityError(
    ErrorCodes.TRANSACTION_ABORTED,
    'the transaction already failed (PostgreSQL ignores further commands until ROLLBACK); nothing was stored',
    cause === undefined ? {} : { cause },
  )
}
