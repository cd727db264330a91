import { describe, ErrorCodes, KEntityError } from './errors.ts'
import type { OutboxTable } from './seams.ts'

/**
 * Lower-case SQL identifiers only: they need no quoting rules of their own on any dialect, so a
 * configured name can never carry SQL, and the name a user sees in `psql` is the one they set.
 */
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,47}$/

export function validateIdentifier(value: unknown, what: string): string {
  if (typeof value !== 'string' || !IDENTIFIER.test(value)) {
    throw new KEntityError(
      ErrorCodes.INVALID_IDENTIFIER,
      `invalid ${what} ${describe(value)}: use 1-48 characters of lower-case letters, digits and '_', starting with a letter or '_'`,
    )
  }
  return value
}

export const DEFAULT_TABLE: OutboxTable = Object.freeze({ schema: 'k_entity', table: 'outbox' })

/** Frozen: dialects build their statements once per table object. */
export function resolveTable(options: { schema?: unknown; table?: unknown }): OutboxTable {
  return Object.freeze({
    schema:
      options.schema === undefined ? DEFAULT_TABLE.schema : validateIdentifier(options.schema, 'schema name'),
    table:
      options.table === undefined ? DEFAULT_TABLE.table : validateIdentifier(options.table, 'table name'),
  })
}
