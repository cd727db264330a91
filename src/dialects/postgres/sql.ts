import type { OutboxRecord } from '../../core/record.ts'
import type { OutboxTable, SqlStatement } from '../../core/seams.ts'
import { lockClass, qualified } from './names.ts'

/** Headers as stored: JSON pairs keep duplicates and order; values are base64 so bytes survive. */
export function encodeHeaders(headers: OutboxRecord['headers']): string | null {
  if (headers.length === 0) return null
  return JSON.stringify(
    headers.map(([name, value]) => [name, value === null ? null : value.toString('base64')]),
  )
}

export function decodeHeaders(stored: unknown): OutboxRecord['headers'] {
  if (!Array.isArray(stored)) return []
  return stored.map(([name, value]: [string, string | null]) => [
    name,
    value === null ? null : Buffer.from(value, 'base64'),
  ])
}

/**
 * One statement for any number of messages: parallel arrays through unnest keep the text
 * constant (so it is prepared once per connection) and the parameter count at 6.
 * The uncorrelated sub-select runs once, before the first row gets its id: it takes the
 * transaction-scoped lock of every key being produced, in ascending order so that two
 * producers sharing keys cannot deadlock. Holding the key lock until commit makes id order
 * equal commit order for each key, which the relay's oldest-first claim relies on.
 */
export function insertStatement(table: OutboxTable, records: readonly OutboxRecord[]): SqlStatement {
  const topics: string[] = []
  const keys: (Buffer | null)[] = []
  const values: (Buffer | null)[] = []
  const headers: (string | null)[] = []
  const hashes: (number | null)[] = []
  for (const record of records) {
    topics.push(record.topic)
    keys.push(record.key)
    values.push(record.value)
    headers.push(encodeHeaders(record.headers))
    hashes.push(record.orderingHash)
  }
  const outbox = qualified(table)
  return {
    name: `ke_insert_${table.schema}_${table.table}`,
    text: `INSERT INTO ${outbox} (topic, key, value, headers, ordering_hash)
SELECT m.topic, m.key, m.value, m.headers, m.ordering_hash
FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[], $5::int[]) AS m(topic, key, value, headers, ordering_hash)
WHERE (SELECT count(*) FROM (
  SELECT pg_advisory_xact_lock($6::int, h)
  FROM (SELECT DISTINCT h FROM unnest($5::int[]) AS u(h) WHERE h IS NOT NULL ORDER BY h) AS keys
) AS locks) >= 0`,
    values: [topics, keys, values, headers, hashes, lockClass(table, 'key')],
  }
}

/**
 * Oldest first, skipping rows another session holds, and never a message whose key has an
 * older message waiting for a retry (that would overtake it). Rows stay locked by this
 * session's transaction until the batch is acknowledged or released.
 */
export function claimSql(table: OutboxTable, limit: number): string {
  const outbox = qualified(table)
  return `SELECT o.id, o.topic, o.key, o.value, o.headers, o.ordering_hash, o.attempts, o.created_at
FROM ${outbox} AS o
WHERE o.available_at <= now()
  AND NOT EXISTS (
    SELECT 1 FROM ${outbox} AS older
    WHERE older.attempts > 0 AND older.ordering_hash = o.ordering_hash AND older.id < o.id
      AND older.available_at > now()
  )
ORDER BY o.id
LIMIT ${Math.trunc(limit)}
FOR UPDATE OF o SKIP LOCKED`
}

/** Ids come from the database as decimal strings; anything else is a bug, not input. */
export function idArrayLiteral(ids: readonly string[]): string {
  for (const id of ids) {
    if (!/^\d{1,19}$/.test(id)) throw new Error(`outbox id ${JSON.stringify(id)} is not a bigint`)
  }
  return `'{${ids.join(',')}}'::bigint[]`
}

export function deleteSql(table: OutboxTable, ids: readonly string[]): string {
  return `DELETE FROM ${qualified(table)} WHERE id = ANY(${idArrayLiteral(ids)})`
}

export function failStatement(
  table: OutboxTable,
  ids: readonly string[],
  error: string,
  retryAt: Date,
): SqlStatement {
  return {
    text: `UPDATE ${qualified(table)} SET attempts = attempts + 1, last_error = $2, available_at = $3 WHERE id = ANY($1::bigint[])`,
    values: [ids, error, retryAt],
  }
}
