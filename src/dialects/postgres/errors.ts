import { lookUp } from '../../core/error-chain.ts'
import { type ErrorCode, ErrorCodes } from '../../core/errors.ts'

/**
 * PostgreSQL SQLSTATEs (`error.code` of node-postgres, postgres.js and PGlite) that k-entity
 * gives a code of its own. One table per dialect, so that every path that sees a statement's
 * error (produce, the COMMIT carrying held writes, stats, dead letters, the relay) names the same
 * condition the same way.
 */
export const POSTGRES_ERROR_CODES: Readonly<Record<string, ErrorCode>> = {
  '42P01': ErrorCodes.NOT_MIGRATED, // undefined_table
  '3F000': ErrorCodes.NOT_MIGRATED, // invalid_schema_name
  '25P02': ErrorCodes.TRANSACTION_ABORTED, // in_failed_sql_transaction
  '08000': ErrorCodes.STORE_FAILED, // connection_exception
  '08003': ErrorCodes.STORE_FAILED, // connection_does_not_exist
  '08006': ErrorCodes.STORE_FAILED, // connection_failure
  '57P01': ErrorCodes.STORE_FAILED, // admin_shutdown (session terminated)
  '57P02': ErrorCodes.STORE_FAILED, // crash_shutdown
  '57P03': ErrorCodes.STORE_FAILED, // cannot_connect_now
  '28000': ErrorCodes.STORE_FAILED, // invalid_authorization_specification
  '28P01': ErrorCodes.STORE_FAILED, // invalid_password
}

/** The k-entity code for a PostgreSQL error, if the table has one. */
export function classifyError(error: unknown): ErrorCode | undefined {
  return lookUp(error, 'code', POSTGRES_ERROR_CODES)
}
