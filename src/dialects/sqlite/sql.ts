import { internalError } from '../../core/errors.ts'
import type { OutboxRecord, StoredMessage } from '../../core/record.ts'
import { type FailedDelivery, HELD_ATTEMPTS, type OutboxTable, type SqlStatement } from '../../core/seams.ts'
import { decodeHeaders, encodeHeaders, nextAttemptsSql } from '../shared/stored-columns.ts'
import { qualified } from './names.ts'

/** Rows per INSERT: 5 parameters each, far below SQLite's limit of 32,766 bound parameters. */
const MAX_ROWS_PER_INSERT = 1000

/** Unix time in ms, the unit of every timestamp column (SQLite has no date type). */
export const NOW_MS = `CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)`

/**
 * One multi-row INSERT per 1,000 messages. No per-key lock is needed: SQLite has one writer at a
 * time, and a write transaction holds the database's write lock from its first write (or from
 * BEGIN IMMEDIATE) until COMMIT, so ids are handed out in commit order for all keys at once.
 */
export function insertStatements(table: OutboxTable, records: readonly OutboxRecord[]): SqlStatement[] {
  const statements: SqlStatement[] = []
  for (let start = 0; start < records.length; start += MAX_ROWS_PER_INSERT) {
    const chunk = records.slice(start, start + MAX_ROWS_PER_INSERT)
    const values: unknown[] = []
    for (const record of chunk) {
      values.push(record.topic, record.key, record.value, encodeHeaders(record.headers), record.orderingHash)
    }
    statements.push({
      text: `INSERT INTO ${qualified(table)} (topic, key, value, headers, ordering_hash) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?)').join(', ')}`,
      values,
    })
  }
  return statements
}

/**
 * Oldest first, and never a message whose key has an older message waiting for a retry (that
 * would overtake it); the probe uses the partial index of failed rows, so it stays one look-up
 * however long the backlog. No lock is taken: there is exactly one relay, which alone deletes.
 *
 * `maxBytes`: the byte budget (see `RelayStore.claim`). The same scan first sums the rows' key,
 * value and headers bytes in id order, reading only their lengths (SQLite's length() of a blob
 * column does not load the blob), and gives the last id within the budget (the first row's at
 * least); the claim then reads the payloads of rows up to it only.
 */
export function claimStatement(
  table: OutboxTable,
  limit: number,
  now: number,
  maxBytes?: number,
): SqlStatement {
  const outbox = qualified(table)
  const due = (alias: string) => `${alias}.available_at <= ?
  AND NOT EXISTS (
    SELECT 1 FROM ${outbox} AS older
    WHERE older.attempts > 0 AND older.ordering_hash = ${alias}.ordering_hash AND older.id < ${alias}.id
      AND older.available_at > ?
  )`
  if (maxBytes === undefined) {
    return {
      text: `SELECT o.id, o.topic, o.key, o.value, o.headers, o.ordering_hash, o.attempts
FROM ${outbox} AS o
WHERE ${due('o')}
ORDER BY o.id
LIMIT ?`,
      values: [now, now, Math.trunc(limit)],
    }
  }
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1)
    throw internalError(`byte budget ${maxBytes} is not a positive integer`)
  return {
    text: `SELECT o.id, o.topic, o.key, o.value, o.headers, o.ordering_hash, o.attempts
FROM ${outbox} AS o
WHERE o.id <= (
  SELECT max(id) FROM (
    SELECT id, sum(bytes) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS running, row_number() OVER (ORDER BY id) AS n
    FROM (
      SELECT s.id, coalesce(length(s.key), 0) + coalesce(length(s.value), 0) + coalesce(length(CAST(s.headers AS BLOB)), 0) AS bytes
      FROM ${outbox} AS s
      WHERE ${due('s')}
      ORDER BY s.id
      LIMIT ?
    )
  )
  WHERE running <= ? OR n = 1
)
  AND ${due('o')}
ORDER BY o.id
LIMIT ?`,
    values: [now, now, Math.trunc(limit), maxBytes, now, now, Math.trunc(limit)],
  }
}

/** Ids come from the database as integers; anything else is a bug, not input. */
function idList(ids: readonly string[]): string {
  for (const id of ids) {
    if (!/^\d{1,16}$/.test(id)) throw internalError(`outbox id ${JSON.stringify(id)} is not an integer`)
  }
  return ids.join(',')
}

export function deleteSql(table: OutboxTable, ids: readonly string[]): string {
  return `DELETE FROM ${qualified(table)} WHERE id IN (${idList(ids)})`
}

/** Error history kept per message (the oldest entries are dropped first). */
const ERROR_HISTORY = 20

/**
 * Records every failure of a batch: retried messages get attempts+1, their error appended to
 * the history and a retry time; dead ones are copied, with their history, to the dead-letter
 * table and deleted. The caller runs them in one write transaction (never both deleted and lost).
 */
export function failureStatements(table: OutboxTable, failures: readonly FailedDelivery[]): SqlStatement[] {
  const outbox = qualified(table)
  const history = `json_insert(CASE WHEN json_array_length(errors) >= ${ERROR_HISTORY} THEN json_remove(errors, '$[0]') ELSE errors END, '$[#]', json_object('at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'error', ?))`
  const statements: SqlStatement[] = []
  for (const failure of failures) {
    const ids = idList(failure.ids)
    if (failure.deadLetter === true) {
      statements.push(
        {
          text: `INSERT INTO ${qualified(table, '_dead_letters')} (message_id, topic, key, value, headers, ordering_hash, attempts, errors, created_at)
SELECT id, topic, key, value, headers, ordering_hash, attempts % ${HELD_ATTEMPTS} + 1, ${history}, created_at FROM ${outbox} WHERE id IN (${ids}) ORDER BY id`,
          values: [failure.error],
        },
        { text: deleteSql(table, failure.ids), values: [] },
      )
    } else {
      statements.push({
        text: `UPDATE ${outbox} SET attempts = ${nextAttemptsSql('attempts', failure.countAttempt === false ? '0' : '1')}, last_error = ?, available_at = ${NOW_MS} + ?, errors = ${history} WHERE id IN (${ids})`,
        // A delay added to SQLite's clock, like the other dialects (see `FailedDelivery.retryInMs`).
        values: [failure.error, Math.max(0, Math.trunc(failure.retryInMs)), failure.error],
      })
    }
  }
  return statements
}

export function toMessage(row: Record<string, unknown>): StoredMessage {
  return {
    id: String(row.id),
    topic: row.topic as string,
    key: (row.key as Buffer | null) ?? null,
    value: (row.value as Buffer | null) ?? null,
    headers: decodeHeaders(row.headers),
    orderingHash: (row.ordering_hash as number | null) ?? null,
    attempts: row.attempts as number,
  }
}
