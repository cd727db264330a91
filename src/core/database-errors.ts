import { type ErrorCode, ErrorCodes, KEntityError, redactCredentials } from './errors.ts'

/**
 * A database condition k-entity names: its stable code, whether running the same work again can
 * succeed without anyone changing anything, and what to tell the user. Every dialect's table in
 * its errors.ts maps the driver's codes to these.
 */
export interface DatabaseCondition {
  readonly code: ErrorCode
  readonly retryable: boolean
  /** What happened and what to do, as one clause ("a deadlock ...; run the transaction again"). */
  readonly explanation: string
}

/** A driver error the dialect's table knows: the condition and the driver's own name for it. */
export interface DatabaseFailure extends DatabaseCondition {
  /** The driver's code as the database documents it ("SQLSTATE 40P01", "MySQL errno 1213", "SQLITE_BUSY"). */
  readonly reason: string
}

/** Advice shared by the entries: said once, so every table words the same reaction the same way. */
export const RUN_AGAIN = 'run the whole transaction again (a relay retries by itself)'
export const RECONNECT =
  'the connection is gone: run the whole transaction again on a new one (a relay reconnects by itself)'

export function transient(explanation: string, code: ErrorCode = ErrorCodes.STORE_FAILED): DatabaseCondition {
  return { code, retryable: true, explanation }
}

export function permanent(explanation: string, code: ErrorCode = ErrorCodes.STORE_FAILED): DatabaseCondition {
  return { code, retryable: false, explanation }
}

/**
 * Socket errors Node.js reports for a database connection of any driver (`error.code`): the
 * server went away or cannot be reached right now.
 */
export const NETWORK_ERROR_CODES: Readonly<Record<string, DatabaseCondition>> = {
  ECONNRESET: transient(`the database connection was reset; ${RECONNECT}`),
  ECONNREFUSED: transient(
    'the database refused the connection (not running, restarting, or a wrong host or port); retry once it is up',
  ),
  EPIPE: transient(`the database connection was closed while writing to it; ${RECONNECT}`),
  ETIMEDOUT: transient('the database did not answer in time; retry once it is reachable'),
  EHOSTUNREACH: transient('the database host is unreachable; retry once the network is back'),
}

/** The table's entry for `key`, never one inherited from `Object.prototype` ("constructor"). */
export function entry<K extends string | number>(
  table: Readonly<Partial<Record<K, DatabaseCondition>>>,
  key: K,
): DatabaseCondition | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined
}

/**
 * A classified driver error as a `KEntityError` with the condition's code and `retryable`, the
 * driver's error kept as `cause`.
 */
export function databaseError(failure: DatabaseFailure, cause: unknown): KEntityError {
  const said = cause instanceof Error && cause.message !== '' ? `: ${redactCredentials(cause.message)}` : ''
  return new KEntityError(failure.code, `${failure.explanation} (${failure.reason}${said})`, {
    cause,
    retryable: failure.retryable,
  })
}
