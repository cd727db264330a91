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
  purpose: 'key' | 'claim' | 'claim-slot' | 'leader' | 'fence' | 'migrate',
): number {
  let hash = 0x811c9dc5
  for (const char of `k-entity:${table.schema}.${table.table}:${purpose}`) {
    hash ^= char.charCodeAt(0)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash | 0
}

/**
 * Producers serialise per key through transaction-scoped advisory locks, one per slot of the
 * ordering hash rather than one per key: a transaction producing 20,000 distinct keys took 20,000
 * locks and failed with "out of shared memory" on stock settings (the lock table is shared by the
 * whole server: max_locks_per_transaction x max_connections, 6,400 by default). Keys that share a
 * slot also wait for each other, which at 1 key per transaction happens to 1 pair in 1,024.
 */
export const KEY_LOCK_SLOTS = 1024

/** SQL for the key-lock slot of an ordering hash column or parameter (NULL stays NULL: no lock). */
export function keyLockSlotSql(hash: string): string {
  return `(${hash} & ${KEY_LOCK_SLOTS - 1})`
}

/** LISTEN/NOTIFY channel of one outbox: short and fixed-length, whatever the names' lengths. */
export function wakeChannel(table: OutboxTable): string {
  return `k_entity_${(lockClass(table, 'key') >>> 0).toString(16)}`
}
