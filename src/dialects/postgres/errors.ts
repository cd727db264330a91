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

/**
 * PostgreSQL SQLSTATEs (`error.code` of node-postgres, postgres.js and PGlite) that k-entity
 * names. One table per dialect, so that every path that sees a statement's error (produce, the
 * COMMIT carrying held writes, stats, dead letters, the relay) names the same condition the same
 * way. An exact SQLSTATE wins over its class (`POSTGRES_ERROR_CLASSES`).
 */
export const POSTGRES_ERROR_CODES: Readonly<Record<string, DatabaseCondition>> = {
  '42P01': permanent(`the outbox table does not exist: ${MIGRATE}`, ErrorCodes.NOT_MIGRATED), // undefined_table
  '3F000': permanent(`the outbox schema does not exist: ${MIGRATE}`, ErrorCodes.NOT_MIGRATED), // invalid_schema_name
  '25P02': permanent(
    'a statement of this transaction failed earlier, so PostgreSQL refuses every other one until ROLLBACK; roll back and look at the first error',
    ErrorCodes.TRANSACTION_ABORTED,
  ), // in_failed_sql_transaction
  '40001': transient(
    `a serialization failure: a concurrent transaction conflicted with this one; ${RUN_AGAIN}`,
  ), // serialization_failure
  '40P01': transient(`a deadlock: PostgreSQL aborted this transaction to break it; ${RUN_AGAIN}`), // deadlock_detected
  '55P03': transient(`a lock could not be taken in time (lock_timeout or NOWAIT); ${RUN_AGAIN}`), // lock_not_available
  '57014': transient(
    `the statement was cancelled (statement_timeout, or pg_cancel_backend); ${RUN_AGAIN}, or raise statement_timeout if it keeps happening`,
  ), // query_canceled
  '25006': transient(
    `the server is read-only (a standby, or a failover in progress); ${RUN_AGAIN} once the connection reaches the new primary`,
  ), // read_only_sql_transaction
  '57P01': transient(`an administrator or a restart ended the session; ${RECONNECT}`), // admin_shutdown
  '57P02': transient(`the server crashed and ended every session; ${RECONNECT}`), // crash_shutdown
  '57P03': transient(
    'the server is starting up or shutting down and takes no connections yet; retry shortly',
  ), // cannot_connect_now
  '57P05': transient(`the session was idle longer than the server allows; ${RECONNECT}`), // idle_session_timeout
  '53300': transient(
    'the server has no free connection slot (max_connections); retry shortly, or use fewer connections (a pool, a smaller one)',
  ), // too_many_connections
  '53200': transient(`the server ran out of memory; ${RUN_AGAIN}`), // out_of_memory
  '53100': permanent('the server ran out of disk space: free some, then run the transaction again'), // disk_full
  '53400': permanent('a server configuration limit was exceeded: raise it (the message names it)'), // configuration_limit_exceeded
  '28000': permanent('the server refused the login: fix the connection settings'), // invalid_authorization_specification
  '28P01': permanent('the server refused the password: fix the connection settings'), // invalid_password
  XX001: permanent('PostgreSQL found corrupted data; retrying will not help: restore or repair the database'), // data_corrupted
  XX002: permanent('PostgreSQL found a corrupted index; retrying will not help: REINDEX it'), // index_corrupted
}

/** SQLSTATE classes (the first two characters), for the codes of a class the table above does not list. */
export const POSTGRES_ERROR_CLASSES: Readonly<Record<string, DatabaseCondition>> = {
  '08': transient(`the connection to the server failed; ${RECONNECT}`), // connection_exception
  '53': transient(`the server lacks a resource (memory, connections) for now; ${RUN_AGAIN}`), // insufficient_resources
}

/**
 * The drivers' own codes for a connection that is gone (postgres.js; node-postgres reports it
 * with no code), and Node.js's socket errors.
 */
export const POSTGRES_DRIVER_CODES: Readonly<Record<string, DatabaseCondition>> = {
  CONNECTION_CLOSED: transient(`the connection to the server was closed; ${RECONNECT}`),
  CONNECTION_ENDED: transient(`the connection to the server was ended; ${RECONNECT}`),
  CONNECTION_DESTROYED: transient(`the connection to the server was destroyed; ${RECONNECT}`),
  CONNECT_TIMEOUT: transient('the server did not accept the connection in time; retry once it is reachable'),
  ...NETWORK_ERROR_CODES,
}

/** The condition a PostgreSQL error (or one it wraps) names, if the tables know it. */
export function classifyFailure(error: unknown): DatabaseFailure | undefined {
  for (const link of errorChain(error)) {
    // Prisma's adapter keeps the SQLSTATE as `originalCode` where it maps the error to a kind of
    // its own (a serialization failure becomes "TransactionWriteConflict", with no `code`).
    const code = typeof link.code === 'string' ? link.code : link.originalCode
    if (typeof code !== 'string') continue
    const sqlState =
      entry(POSTGRES_ERROR_CODES, code) ??
      (/^[0-9A-Z]{5}$/.test(code) ? entry(POSTGRES_ERROR_CLASSES, code.slice(0, 2)) : undefined)
    if (sqlState !== undefined) return { ...sqlState, reason: `SQLSTATE ${code}` }
    const driver = entry(POSTGRES_DRIVER_CODES, code)
    if (driver !== undefined) return { ...driver, reason: code }
  }
  return undefined
}

/** The k-entity code for a PostgreSQL error, if the tables have one. */
export function classifyError(error: unknown): ErrorCode | undefined {
  return classifyFailure(error)?.code
}
