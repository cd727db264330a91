import {
  type DatabaseCondition,
  type DatabaseFailure,
  entry,
  permanent,
  transient,
} from '../../core/database-errors.ts'
import { errorChain } from '../../core/error-chain.ts'
import { type ErrorCode, ErrorCodes } from '../../core/errors.ts'

const WAIT =
  'run the transaction again once it is released (a relay retries by itself); a busy_timeout makes SQLite wait instead of failing at once'

/**
 * SQLite result codes by their names, primary (`SQLITE_BUSY`) and extended
 * (`SQLITE_READONLY_RECOVERY`): better-sqlite3 reports the extended name as `error.code`,
 * node:sqlite the extended number as `error.errcode` (its low byte is the primary code). An
 * extended code listed here wins over its primary one.
 */
export const SQLITE_RESULT_CODES: Readonly<Record<string, DatabaseCondition>> = {
  SQLITE_BUSY: transient(`the database is locked by another connection; ${WAIT}`),
  SQLITE_LOCKED: transient(
    `a table is locked by another statement or connection sharing this cache; ${WAIT}`,
  ),
  SQLITE_READONLY: permanent(
    'the database is read-only (opened read-only, or its file or directory is not writable): open it writable',
  ),
  // Another connection is recovering the WAL: it is writable again once that is done.
  SQLITE_READONLY_RECOVERY: transient(`the database is being recovered by another connection; ${WAIT}`),
  SQLITE_IOERR: transient(
    'the disk or file system failed a read or write; run the transaction again, and check the disk if it keeps happening',
  ),
  SQLITE_FULL: permanent(
    'the disk (or the temporary directory) is full: free some space, then run the transaction again',
  ),
  SQLITE_CORRUPT: permanent(
    'the database file is corrupt; retrying will not help: restore it from a backup (PRAGMA integrity_check says more)',
  ),
  SQLITE_NOTADB: permanent('the file is not a SQLite database (or is encrypted): check the path'),
}

/** The primary result codes by number, for node:sqlite's `errcode`. */
const PRIMARY_NAMES: Readonly<Record<number, string>> = {
  5: 'SQLITE_BUSY',
  6: 'SQLITE_LOCKED',
  8: 'SQLITE_READONLY',
  10: 'SQLITE_IOERR',
  11: 'SQLITE_CORRUPT',
  13: 'SQLITE_FULL',
  26: 'SQLITE_NOTADB',
}

/** Extended result codes by number that the table lists on their own. */
const EXTENDED_NAMES: Readonly<Record<number, string>> = {
  264: 'SQLITE_READONLY_RECOVERY',
}

/**
 * SQLite reports a missing table only as SQLITE_ERROR with a message; better-sqlite3 and
 * node:sqlite both keep SQLite's message text, so the table matches on it. Checked in order.
 */
export const SQLITE_ERROR_MESSAGES: readonly (readonly [RegExp, DatabaseCondition])[] = [
  [
    /\bno such table\b/i,
    permanent(
      'the outbox table does not exist: the outbox was never migrated on this database',
      ErrorCodes.NOT_MIGRATED,
    ),
  ],
]

/** The condition a SQLite error (or one it wraps) names, if the tables know it. */
export function classifyFailure(error: unknown): DatabaseFailure | undefined {
  for (const link of errorChain(error)) {
    const name = resultCodeName(link)
    if (name !== undefined) {
      const primary = name.match(/^SQLITE_[A-Z]+/)?.[0] ?? name
      const known = entry(SQLITE_RESULT_CODES, name) ?? entry(SQLITE_RESULT_CODES, primary)
      if (known !== undefined) return { ...known, reason: name }
    }
    const message = link.message
    if (typeof message !== 'string') continue
    for (const [pattern, condition] of SQLITE_ERROR_MESSAGES) {
      if (pattern.test(message)) return { ...condition, reason: name ?? 'SQLITE_ERROR' }
    }
  }
  return undefined
}

/** The result code's name: better-sqlite3's `code`, or node:sqlite's `errcode` named. */
function resultCodeName(link: Record<string, unknown>): string | undefined {
  if (typeof link.code === 'string' && link.code.startsWith('SQLITE_')) return link.code
  const errcode = link.errcode
  if (typeof errcode !== 'number') return undefined
  if (Object.hasOwn(EXTENDED_NAMES, errcode)) return EXTENDED_NAMES[errcode]
  const primary = errcode & 0xff
  return Object.hasOwn(PRIMARY_NAMES, primary) ? PRIMARY_NAMES[primary] : `SQLite result code ${errcode}`
}

/** The k-entity code for a SQLite error, if the tables have one. */
export function classifyError(error: unknown): ErrorCode | undefined {
  return classifyFailure(error)?.code
}
