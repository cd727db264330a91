import {
  type DatabaseCondition,
  type DatabaseFailure,
  entry,
  NETWORK_ERROR_CODES,
  permanent,
  RECONNECT,
  RUN_AGAIN,
  transient,
} from '../../core/database-errors.ts'
import { errorChain } from '../../core/error-chain.ts'
import { type ErrorCode, ErrorCodes } from '../../core/errors.ts'

const MIGRATE = 'the outbox was never migrated on this database'
const READ_ONLY = `the server is read-only (a replica, or a failover in progress); ${RUN_AGAIN} once the connection reaches the new primary`
const TIMED_OUT = `the statement ran longer than the server allows (max_execution_time / max_statement_time); ${RUN_AGAIN}, or raise the limit if it keeps happening`

/**
 * MySQL/MariaDB error numbers (`error.errno` of mysql2 and the mariadb driver) that k-entity
 * names; see the PostgreSQL table in ../postgres/errors.ts.
 */
export const MYSQL_ERROR_CODES: Readonly<Record<number, DatabaseCondition>> = {
  1146: permanent(`the outbox table does not exist: ${MIGRATE}`, ErrorCodes.NOT_MIGRATED), // ER_NO_SUCH_TABLE
  // The outbox's schema is its own database.
  1049: permanent(`the outbox database does not exist: ${MIGRATE}`, ErrorCodes.NOT_MIGRATED), // ER_BAD_DB_ERROR
  1213: transient(`a deadlock: the server rolled back this transaction to break it; ${RUN_AGAIN}`), // ER_LOCK_DEADLOCK
  1205: transient(
    `a lock wait timed out (innodb_lock_wait_timeout); the statement (or, with innodb_rollback_on_timeout, the transaction) was rolled back: ${RUN_AGAIN}`,
  ), // ER_LOCK_WAIT_TIMEOUT
  1290: transient(READ_ONLY), // ER_OPTION_PREVENTS_STATEMENT (--read-only, --super-read-only)
  1836: transient(READ_ONLY), // ER_READ_ONLY_MODE
  2006: transient(`the server has gone away; ${RECONNECT}`), // CR_SERVER_GONE_ERROR
  2013: transient(`the connection to the server was lost during a query; ${RECONNECT}`), // CR_SERVER_LOST
  4031: transient(`the server closed a connection idle longer than wait_timeout; ${RECONNECT}`), // ER_CLIENT_INTERACTION_TIMEOUT
  1927: transient(`the connection was killed (KILL, or a server restart); ${RECONNECT}`), // ER_CONNECTION_KILLED (MariaDB)
  1053: transient(`the server is shutting down; ${RECONNECT}`), // ER_SERVER_SHUTDOWN
  1040: transient(
    'the server has no free connection slot (max_connections); retry shortly, or use fewer connections',
  ), // ER_CON_COUNT_ERROR
  3024: transient(TIMED_OUT), // ER_QUERY_TIMEOUT (MySQL)
  1969: transient(TIMED_OUT), // ER_STATEMENT_TIMEOUT (MariaDB)
  1317: transient(`the query was interrupted (KILL QUERY); ${RUN_AGAIN}`), // ER_QUERY_INTERRUPTED
  1045: permanent('the server refused the login: fix the connection settings'), // ER_ACCESS_DENIED_ERROR
  1044: permanent('the server refused access to the database: grant it, or fix the connection settings'), // ER_DBACCESS_DENIED_ERROR
}

/** The same conditions by the drivers' symbolic codes, for errors that carry no (server) errno. */
export const MYSQL_ERROR_NAMES: Readonly<Record<string, DatabaseCondition>> = {
  ER_NO_SUCH_TABLE: MYSQL_ERROR_CODES[1146] as DatabaseCondition,
  ER_BAD_DB_ERROR: MYSQL_ERROR_CODES[1049] as DatabaseCondition,
  ER_LOCK_DEADLOCK: MYSQL_ERROR_CODES[1213] as DatabaseCondition,
  ER_LOCK_WAIT_TIMEOUT: MYSQL_ERROR_CODES[1205] as DatabaseCondition,
  // mysql2, when the socket closes under it.
  PROTOCOL_CONNECTION_LOST: transient(`the connection to the server was lost; ${RECONNECT}`),
  // The mariadb driver's client-side errors (errno 45xxx, not the server's).
  ER_SOCKET_UNEXPECTED_CLOSE: transient(`the connection to the server was closed unexpectedly; ${RECONNECT}`),
  ER_CONNECTION_ALREADY_CLOSED: transient(`the connection was already closed; ${RECONNECT}`),
  ER_GET_CONNECTION_TIMEOUT: transient(
    'no pool connection became free in time (acquireTimeout); retry, or give the pool more connections',
  ),
  ...NETWORK_ERROR_CODES,
}

/** The condition a MySQL/MariaDB error (or one it wraps) names, if the tables know it. */
export function classifyFailure(error: unknown): DatabaseFailure | undefined {
  for (const link of errorChain(error)) {
    const { code } = link
    const errno = errnoOf(link)
    const byNumber = errno === undefined ? undefined : entry(MYSQL_ERROR_CODES, errno)
    if (byNumber !== undefined) return { ...byNumber, reason: `MySQL errno ${errno}` }
    const byName = typeof code === 'string' ? entry(MYSQL_ERROR_NAMES, code) : undefined
    if (byName !== undefined) return { ...byName, reason: code as string }
  }
  return undefined
}

/**
 * The server's error number: mysql2's and mariadb's `errno`, or, behind Prisma's MariaDB adapter,
 * the `originalCode` it keeps as text (its own `code` there is a Prisma kind's).
 */
function errnoOf(link: Record<string, unknown>): number | undefined {
  if (typeof link.errno === 'number') return link.errno
  const original = link.originalCode
  return typeof original === 'string' && /^\d{1,5}$/.test(original) ? Number(original) : undefined
}

/** The k-entity code for a MySQL/MariaDB error, if the tables have one. */
export function classifyError(error: unknown): ErrorCode | undefined {
  return classifyFailure(error)?.code
}
