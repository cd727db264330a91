import { errorChain } from '../../core/error-chain.ts'
import { type ErrorCode, ErrorCodes } from '../../core/errors.ts'

/**
 * SQLite reports a missing table only as SQLITE_ERROR with a message; better-sqlite3 and
 * node:sqlite both keep SQLite's message text, so the table matches on it. Checked in order.
 */
export const SQLITE_ERROR_CODES: readonly (readonly [RegExp, ErrorCode])[] = [
  [/\bno such table\b/i, ErrorCodes.NOT_MIGRATED],
]

/** The k-entity code for a SQLite error, if the table has one. */
export function classifyError(error: unknown): ErrorCode | undefined {
  for (const link of errorChain(error)) {
    const message = (link as { message?: unknown }).message
    if (typeof message !== 'string') continue
    for (const [pattern, code] of SQLITE_ERROR_CODES) if (pattern.test(message)) return code
  }
  return undefined
}
