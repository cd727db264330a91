import type { OutboxTable } from '../../core/seams.ts'

/**
 * SQLite has no schemas (a schema name there means an attached database file), so the outbox's
 * schema becomes a prefix: `k_entity_outbox` by default. Both parts were validated already.
 */
export function qualified(table: OutboxTable, suffix = ''): string {
  return `"${table.schema}_${table.table}${suffix}"`
}
