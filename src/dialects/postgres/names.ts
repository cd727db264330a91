import type { OutboxTable } from '../../core/seams.ts'

/** Quoted, schema-qualified names; the parts were validated as plain identifiers already. */
export function qualified(table: OutboxTable, suffix = ''): string {
  return `"${table.schema}"."${table.table}${suffix}"`
}

/**
 * Advisory-lock namespaces (the first int of the two-int lock key), derived from the table so
 * that two outboxes in one database never contend, and distinct from each other.
 */
export function lockClass(
  table: OutboxTable,
  purpose: 'key' | 'claim' | 'leader' | 'fence' | 'migrate',
): number {
  let hash = 0x811c9dc5
  for (const char of `k-entity:${table.schema}.${table.table}:${purpose}`) {
    hash ^= char.charCodeAt(0)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash | 0
}

/** LISTEN/NOTIFY channel of one outbox: short and fixed-length, whatever the names' lengths. */
export function wakeChannel(table: OutboxTable): string {
  return `k_entity_${(lockClass(table, 'key') >>> 0).toString(16)}`
}
