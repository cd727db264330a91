/** A header as Kafka carries it: a UTF-8 name and raw bytes (or null). */
export type RecordHeader = [name: string, value: Buffer | null]

/** A message fully serialized, ready to be stored in the outbox or sent to Kafka. */
export interface OutboxRecord {
  topic: string
  key: Buffer | null
  value: Buffer | null
  headers: RecordHeader[]
  /**
   * 32-bit hash of (topic, key). Producers lock it for the rest of their transaction so that,
   * per key, outbox id order equals commit order; relays use it to never overtake an older
   * message of the same key. Collisions only serialize unrelated keys, never reorder.
   */
  orderingHash: number | null
}

/** A stored message handed to the relay. */
export interface StoredMessage extends OutboxRecord {
  id: string
  attempts: number
}

const FNV_OFFSET = 0x811c9dc5
const FNV_PRIME = 0x01000193

/** FNV-1a over topic, a separator and the key bytes, as a signed int4 (PostgreSQL's `integer`). */
export function orderingHash(topic: string, key: Buffer): number {
  let hash = FNV_OFFSET
  for (let i = 0; i < topic.length; i++) {
    hash ^= topic.charCodeAt(i) & 0xff
    hash = Math.imul(hash, FNV_PRIME)
  }
  hash ^= 0
  hash = Math.imul(hash, FNV_PRIME)
  for (let i = 0; i < key.length; i++) {
    hash ^= key[i] as number
    hash = Math.imul(hash, FNV_PRIME)
  }
  return hash | 0
}
