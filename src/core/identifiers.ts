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

/**
 * Schemas (MySQL: databases) that belong to the database server itself: an outbox there would
 * mix k-entity's tables with the catalog's, and the server refuses most writes there anyway,
 * in ways that look like k-entity bugs. `pg_` is PostgreSQL's reserved prefix.
 */
const RESERVED_SCHEMAS = new Set([
  'information_schema',
  'pg_catalog',
  'pg_toast',
  'mysql',
  'performance_schema',
  'sys',
])

function validateSchema(value: unknown): string {
  const schema = validateIdentifier(value, 'schema name')
  if (RESERVED_SCHEMAS.has(schema) || schema.startsWith('pg_')) {
    throw new KEntityError(
      ErrorCodes.INVALID_IDENTIFIER,
      `invalid schema name ${describe(schema)}: it belongs to the database server (information_schema, pg_catalog, pg_toast, mysql, performance_schema, sys and names starting with pg_ are reserved); use a schema of your own, like the default 'k_entity'`,
    )
  }
  return schema
}

/** Frozen: dialects build their statements once per table object. */
export function resolveTable(options: { schema?: unknown; table?: unknown }): OutboxTable {
  // Each option is read once: what was checked is what is used.
  const { schema, table } = options
  return Object.freeze({
    schema: schema === undefined ? DEFAULT_TABLE.schema : validateSchema(schema),
    table: table === undefined ? DEFAULT_TABLE.table : validateIdentifier(table, 'table name'),
  })
}
