import { lookUp } from '../../core/error-chain.ts'
import { type ErrorCode, ErrorCodes } from '../../core/errors.ts'

/**
 * MySQL/MariaDB server error numbers (`error.errno` of mysql2 and the mariadb driver) that
 * k-entity gives a code of its own; see the PostgreSQL table in ../postgres/errors.ts.
 */
export const MYSQL_ERROR_CODES: Readonly<Record<number, ErrorCode>> = {
  1146: ErrorCodes.NOT_MIGRATED, // ER_NO_SUCH_TABLE
  1049: ErrorCodes.NOT_MIGRATED, // ER_BAD_DB_ERROR (the outbox's schema is its own database)
  1045: ErrorCodes.STORE_FAILED, // ER_ACCESS_DENIED_ERROR
  1044: ErrorCodes.STORE_FAILED, // ER_DBACCESS_DENIED_ERROR
  2006: ErrorCodes.STORE_FAILED, // CR_SERVER_GONE_ERROR
  2013: ErrorCodes.STORE_FAILED, // CR_SERVER_LOST
  1927: ErrorCodes.STORE_FAILED, // ER_CONNECTION_KILLED (MariaDB)
}

/** The same conditions by the drivers' symbolic codes, for errors that carry no errno. */
const BY_NAME: Readonly<Record<string, ErrorCode>> = {
  ER_NO_SUCH_TABLE: ErrorCodes.NOT_MIGRATED,
  ER_BAD_DB_ERROR: ErrorCodes.NOT_MIGRATED,
}

/** The k-entity code for a MySQL/MariaDB error, if the table has one. */
export function classifyError(error: unknown): ErrorCode | undefined {
  return lookUp(error, 'errno', MYSQL_ERROR_CODES) ?? lookUp(error, 'code', BY_NAME)
}
