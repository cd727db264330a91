import type { OutboxTable } from '../../core/seams.ts'

/** Quoted, database-qualified names; the parts were validated as plain identifiers already. */
export function qualified(table: OutboxTable, suffix = ''): string {
  return `\`${table.schema}\`.\`${table.table}${suffix}\``
}

/** GET_LOCK names are server-wide and at most 64 characters long on MySQL. */
const MAX_LOCK_NAME = 64

/**
 * Name of a server-wide user lock (GET_LOCK) of one outbox. Readable when it fits, so a DBA can
 * find the holder with `SELECT IS_USED_LOCK('k-entity:app.outbox:leader')`; hashed otherwise.
 */
export function lockName(
  table: OutboxTable,
  purpose: 'leader' | 'fence' | 'migrate' | `member${number}`,
): string {
  const readable = `k-entity:${table.schema}.${table.table}:${purpose}`
  if (readable.length <= MAX_LOCK_NAME) return readable
  let hash = 0x811c9dc5
  for (const char of `${table.schema}.${table.table}`) {
    hash ^= char.charCodeAt(0)
    hash = Math.imul(hash, 0x01000193)
  }
  return `k-entity:${table.schema.slice(0, 20)}..${(hash >>> 0).toString(16)}:${purpose}`
}

/**
 * Producers serialise per key on rows of a fixed table of 65,536 lock slots, the low 16 bits of
 * the ordering hash. A fixed table keeps the lock rows from growing with the number of keys
 * ever produced; a collision only makes two unrelated keys wait for each other, never reorders.
 */
export const KEY_LOCK_SLOTS = 65_536

export function keyLockSlot(orderingHash: number): number {
  return orderingHash & (KEY_LOCK_SLOTS - 1)
}
