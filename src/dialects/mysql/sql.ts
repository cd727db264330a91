import { internalError } from '../../core/errors.ts'
import type { OutboxRecord, StoredMessage } from '../../core/record.ts'
import { type FailedDelivery, HELD_ATTEMPTS, type OutboxTable, type SqlStatement } from '../../core/seams.ts'
import { decodeHeaders, encodeHeaders, nextAttemptsSql } from '../shared/stored-columns.ts'
import { keyLockSlot, qualified } from './names.ts'

/** Rows per INSERT: far below the 65,535 placeholders of a prepared statement. */
const MAX_ROWS_PER_INSERT = 1000
/**
 * Bytes of parameters per INSERT. Bytes travel hex-encoded in text-protocol statements, so this
 * keeps a statement near 8 MiB, under MariaDB's default 16 MiB max_allowed_packet.
 */
const MAX_BYTES_PER_INSERT = 4 * 1024 * 1024

/**
 * The statements that store one batch inside the app's transaction.
 *
 * Per-key order across concurrent producers: MySQL has no transaction-scoped advisory lock
 * (GET_LOCK belongs to the session and would outlive a rollback in a pooled connection), so
 * the first statement locks rows of the key-lock table instead: one row per slot of the
 * ordering hash, all created by the migration, locked `FOR UPDATE` in ascending order before
 * any outbox row gets its id. InnoDB holds row locks until COMMIT or ROLLBACK, so a second
 * transaction producing the same key waits until the first has ended: per key, id order is
 * commit order, which the relay's oldest-first claim relies on. Ascending order means two
 * producers sharing keys cannot deadlock on these locks; the slot rows always exist and are never
 * inserted, so the gap locks REPEATABLE READ may add block nothing. The slots are looked up one
 * by one (see `lookUp`): a table scan under FOR UPDATE would lock every slot.
 *
 * Every value is a number, a validated topic name or bytes (the JSON headers are sent as bytes
 * and converted on the server), so no string escaping is involved and the statements work
 * whatever the connection's character set or sql_mode (NO_BACKSLASH_ESCAPES included).
 */
export function insertStatements(table: OutboxTable, records: readonly OutboxRecord[]): SqlStatement[] {
  const statements: SqlStatement[] = []
  const slots = new Set<number>()
  for (const record of records) {
    if (record.orderingHash !== null) slots.add(keyLockSlot(record.orderingHash))
  }
  if (slots.size > 0)
    statements.push({ text: keyLocksSql(table, [...slots]), values: [], checksTransaction: true })
  let rows: string[] = []
  let values: unknown[] = []
  let bytes = 0
  const flush = () => {
    statements.push({
      text: `INSERT INTO ${qualified(table)} (topic, \`key\`, value, headers, ordering_hash) VALUES ${rows.join(',')}`,
      values,
    })
    rows = []
    values = []
    bytes = 0
  }
  for (const record of records) {
    const headers = encodeHeaders(record.headers)
    const size = (record.key?.length ?? 0) + (record.value?.length ?? 0) + (headers?.length ?? 0)
    if (rows.length > 0 && (rows.length >= MAX_ROWS_PER_INSERT || bytes + size > MAX_BYTES_PER_INSERT))
      flush()
    rows.push('(?, ?, ?, CONVERT(? USING utf8mb4), ?)')
    values.push(
      record.topic,
      record.key,
      record.value,
      headers === null ? null : Buffer.from(headers, 'utf8'),
      record.orderingHash,
    )
    bytes += size
  }
  if (rows.length > 0) flush()
  return statements
}

/**
 * Locks the key-lock slots, in ascending order (see insertStatements). An UPDATE that changes
 * nothing: it locks the same rows as `SELECT ... FOR UPDATE`, but is answered with an OK packet,
 * whose status flags tell whether a transaction is open (`TRANSACTION_PROBE`), so a producer's
 * check rides on it (`checksTransaction`). Outside a transaction its locks end with it. Not a `DO`
 * of a locking subquery: DO turns the subquery's errors into warnings, so a lock wait timeout
 * let the INSERT go ahead without the lock (test/database-errors.test.ts).
 */
export function keyLocksSql(table: OutboxTable, slots: readonly number[]): string {
  const sorted = [...slots].sort((a, b) => a - b)
  return `UPDATE ${lookUp(sorted, 'slot')} ${byKey(qualified(table, '_key_locks'), 'k', 'slot')} SET k.slot = k.slot`
}

/** Dead letters by id, as a FROM clause naming them `d` (see `lookUp`). */
export function deadLettersByIdSql(table: OutboxTable, ids: readonly string[]): string {
  return `${lookUp(idList(ids), 'id')} ${byKey(qualified(table, '_dead_letters'), 'd', 'id')}`
}

/**
 * Rows of an explicit list, looked up one by one through the primary key, in list order. Every
 * statement that locks outbox or lock rows by id goes through this: InnoDB locks each row a
 * statement reads, and for `WHERE id IN (...)` the optimizer picks a full scan once the list is
 * a large part of a small table (a relay keeping up leaves a small table). A scan would wait for
 * rows other relays hold (deadlocks), and its locks would make other relays' SKIP LOCKED skip rows
 * that are free, letting them send a younger message of a key before an older one. The list
 * drives (STRAIGHT_JOIN) and the table is read through its key (`byKey`). The list holds only
 * integers the dialect produced, so it is inlined as a JSON literal.
 */
function lookUp(values: readonly (number | string)[], column: string): string {
  return `JSON_TABLE('[${values.join(',')}]', '$[*]' COLUMNS (${column} BIGINT PATH '$')) AS f`
}

/**
 * The join of a `lookUp` list to `table` by its primary key. STRAIGHT_JOIN alone fixes only the
 * join order: on a table of a few rows (statistics of a relay that keeps up) MariaDB 10.11 read
 * the outbox with a full scan through a join buffer instead of eq_ref, and a locking statement
 * kept every row it read locked until its transaction ended. A claim whose send was slow (a
 * missing topic's 500 ms) so held rows of keys it never took; the relays that held those keys
 * skipped them and sent their younger messages first (report-mariaorder.md). FORCE INDEX fixes the
 * access too.
 */
function byKey(table: string, alias: string, column: string): string {
  return `STRAIGHT_JOIN ${table} AS ${alias} FORCE INDEX (PRIMARY) ON ${alias}.${column} = f.${column}`
}

const CLAIMED_COLUMNS = `CAST(o.id AS CHAR) AS id, o.topic, o.\`key\`, o.value, CAST(o.headers AS CHAR) AS headers,
  o.ordering_hash, o.attempts`

/**
 * Inside a claim's locking statement this probe locks what it reads too, so it must read only the
 * key's failed rows (the retry index), never scan the outbox (see `byKey`).
 */
const RETRY_WAITING = (table: OutboxTable) => `NOT EXISTS (
    SELECT 1 FROM ${qualified(table)} AS older FORCE INDEX (\`${table.table}_retry_idx\`)
    WHERE older.retry_hash = o.ordering_hash AND older.id < o.id
      AND older.available_at > UTC_TIMESTAMP(6)
  )`

/**
 * `RETRY_WAITING` for a read that locks nothing: first "nothing at all waits", which MySQL runs
 * once per statement (an uncorrelated subquery, its result cached) and which is true in the usual
 * case, so the per-row probe after OR is then never run (500-row candidates over 50,000 rows:
 * 2.0 ms against 2.7 ms). It cannot change the answer: a row that makes the probe fail also makes
 * the first test false. Not in a locking statement, where it would lock every failed row.
 */
const RETRY_WAITING_UNLOCKED = (table: OutboxTable) => `(NOT EXISTS (
    SELECT 1 FROM ${qualified(table)} AS waiting FORCE INDEX (\`${table.table}_retry_idx\`)
    WHERE waiting.retry_hash IS NOT NULL AND waiting.available_at > UTC_TIMESTAMP(6)
  ) OR ${RETRY_WAITING(table)})`

/**
 * Claim, step 1: the oldest messages that are due, and their keys, by a plain consistent read;
 * never a message whose key has an older message waiting for a retry (it would overtake it).
 * The `retry_hash` index makes that probe visit only the key's failed rows.
 *
 * Not a locking scan (`... ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED`, as on PostgreSQL): an
 * InnoDB locking read sees each row's latest committed version when the scan reaches it, so a
 * producer committing in the middle of the scan has its first rows skipped (still locked) and
 * its last ones taken (committed by then): a younger message of a key sent before an older one.
 * A consistent read sees every transaction's rows all or none. Step 2 (`claimIdsSql`) locks them.
 * Each row's key, value and headers bytes (LENGTH: bytes, not characters) come along, for the
 * byte budget (`withinBudget`), so no payload beyond the budget is ever read.
 */
export function candidatesSql(table: OutboxTable, count: number, held: readonly string[] = []): string {
  const outbox = qualified(table)
  // The relay's other session's rows (see `MysqlRelayStore.companion`): a consistent read does not
  // see its locks, and locking them would wait for that session.
  const others = held.length === 0 ? '' : `\n  AND o.id NOT IN (${idList(held).join(',')})`
  // o.id, not id: the select list's `id` is text, and '1000' sorts before '999'.
  return `SELECT CAST(o.id AS CHAR) AS id, o.ordering_hash,
  COALESCE(LENGTH(o.\`key\`), 0) + COALESCE(LENGTH(o.value), 0) + COALESCE(LENGTH(o.headers), 0) AS bytes
FROM ${outbox} AS o FORCE INDEX (PRIMARY)
WHERE o.available_at <= UTC_TIMESTAMP(6)${others}
  AND ${RETRY_WAITING_UNLOCKED(table)}
ORDER BY o.id
LIMIT ${Math.trunc(count)}`
}

/**
 * The candidates a claim takes under a byte budget: in id order until the next would pass it,
 * always the first. The cut is made on step 1's sizes, before step 2 locks and reads the rows,
 * so the batch's payloads are bounded like the rows it locks; a candidate that drops out at step
 * 2 only makes the batch smaller.
 */
export function withinBudget<C extends { bytes?: unknown }>(
  candidates: readonly C[],
  maxBytes?: number,
): C[] {
  if (maxBytes === undefined) return [...candidates]
  let bytes = 0
  const taken: C[] = []
  for (const candidate of candidates) {
    bytes += Number(candidate.bytes ?? 0)
    if (taken.length > 0 && bytes > maxBytes) break
    taken.push(candidate)
  }
  return taken
}

/**
 * Concurrent relays, step 2: the claim slots of the candidates' keys that no other relay holds,
 * locked until this claim ends. SKIP LOCKED never waits, so relays cannot deadlock on them; the
 * slots are a table of their own, so a relay sending to Kafka never holds up producers.
 */
export function claimSlotsSql(table: OutboxTable, slots: readonly number[]): string {
  return `SELECT c.slot FROM ${lookUp(slots, 'slot')} ${byKey(qualified(table, '_claim_locks'), 'c', 'slot')} FOR UPDATE SKIP LOCKED`
}

/**
 * Claim, step 2: the candidates taken, locked by id and read again (READ COMMITTED sees the
 * latest committed version: a row another relay deleted or failed since step 1 drops out).
 * A single relay waits for a row someone else locked rather than skip it, which could send a
 * younger message of its key first; concurrent relays skip, as only keyless rows can be held
 * by another relay (keyed ones belong to keys this relay holds).
 */
export function claimIdsSql(table: OutboxTable, ids: readonly string[], skipLocked: boolean): string {
  const outbox = qualified(table)
  return `SELECT ${CLAIMED_COLUMNS}
FROM ${lookUp(idList(ids), 'id')} ${byKey(outbox, 'o', 'id')}
WHERE o.available_at <= UTC_TIMESTAMP(6)
  AND ${RETRY_WAITING(table)}
ORDER BY o.id
FOR UPDATE${skipLocked ? ' SKIP LOCKED' : ''}`
}

/** Ids come from the database as decimal strings; anything else is a bug, not input. */
export function idList(ids: readonly string[]): readonly string[] {
  for (const id of ids) {
    if (!/^\d{1,19}$/.test(id)) throw internalError(`outbox id ${JSON.stringify(id)} is not a bigint`)
  }
  return ids
}

export function deleteSql(table: OutboxTable, ids: readonly string[]): string {
  return `DELETE o FROM ${lookUp(idList(ids), 'id')} ${byKey(qualified(table), 'o', 'id')}`
}

/** Error history kept per message (the oldest entries are dropped first). */
const ERROR_HISTORY = 20

/**
 * Records every failure of a claim: retried messages get attempts+1, their error appended to
 * the history and a retry time; dead ones are copied, with their history, to the dead-letter
 * table and deleted, in the claim's transaction (never both deleted and lost). The failures
 * travel as one JSON document (sent as bytes, so no escaping is involved), each group is one
 * statement whatever the number of messages, and rows are looked up by id (see `lookUp`).
 */
export function failureStatements(table: OutboxTable, failures: readonly FailedDelivery[]): SqlStatement[] {
  // Built by hand so that ids stay exact JSON integers (they may exceed 2^53).
  const retried: string[] = []
  const dead: string[] = []
  const deadIds: string[] = []
  for (const failure of failures) {
    const rest = `${JSON.stringify(failure.error)},${retryDelay(failure.retryInMs)},${failure.countAttempt === false ? 0 : 1}`
    for (const id of idList(failure.ids)) {
      if (failure.deadLetter === true) {
        dead.push(`[${id},${rest}]`)
        deadIds.push(id)
      } else {
        retried.push(`[${id},${rest}]`)
      }
    }
  }
  const outbox = qualified(table)
  const rows = `JSON_TABLE(CONVERT(? USING utf8mb4), '$[*]' COLUMNS (id BIGINT PATH '$[0]', error LONGTEXT PATH '$[1]', retry_in_ms BIGINT PATH '$[2]', counted INT PATH '$[3]')) AS f ${byKey(outbox, 'o', 'id')}`
  const history = `JSON_ARRAY_APPEND(IF(JSON_LENGTH(o.errors) >= ${ERROR_HISTORY}, JSON_REMOVE(o.errors, '$[0]'), o.errors), '$', JSON_OBJECT('at', DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%fZ'), 'error', f.error))`
  const statements: SqlStatement[] = []
  if (retried.length > 0) {
    statements.push({
      text: `UPDATE ${rows}
SET o.attempts = ${nextAttemptsSql('o.attempts', 'f.counted = 1')}, o.last_error = f.error, o.available_at = TIMESTAMPADD(MICROSECOND, f.retry_in_ms * 1000, UTC_TIMESTAMP(6)), o.errors = ${history}`,
      values: [Buffer.from(`[${retried.join(',')}]`, 'utf8')],
    })
  }
  if (dead.length > 0) {
    statements.push(
      {
        text: `INSERT INTO ${qualified(table, '_dead_letters')} (message_id, topic, \`key\`, value, headers, ordering_hash, attempts, errors, created_at)
SELECT o.id, o.topic, o.\`key\`, o.value, o.headers, o.ordering_hash, o.attempts % ${HELD_ATTEMPTS} + 1, ${history}, o.created_at
FROM ${rows}
ORDER BY o.id`,
        values: [Buffer.from(`[${dead.join(',')}]`, 'utf8')],
      },
      {
        text: deleteSql(table, deadIds),
        values: [],
      },
    )
  }
  return statements
}

/**
 * A retry delay as the statements take it: whole ms, at least 0. The retry time is the
 * server's `UTC_TIMESTAMP(6)` plus this, the clock the claim compares `available_at` with (see
 * `FailedDelivery.retryInMs`).
 */
function retryDelay(ms: number): number {
  if (!Number.isFinite(ms) || ms < 0) throw internalError(`retry delay ${ms} is not a number of ms >= 0`)
  return Math.trunc(ms)
}

/** A DATETIME(6) literal in UTC, the time zone every timestamp of the outbox is kept in. */
export function utcDateTime(date: Date): string {
  return date.toISOString().replace('T', ' ').replace('Z', '')
}

export function toMessage(row: Record<string, unknown>): StoredMessage {
  return {
    id: String(row.id),
    topic: text(row.topic) as string,
    key: bytes(row.key),
    value: bytes(row.value),
    headers: decodeHeaders(parseJson(row.headers)),
    orderingHash: row.ordering_hash === null ? null : Number(row.ordering_hash),
    attempts: Number(row.attempts),
  }
}

function bytes(value: unknown): Buffer | null {
  if (value === null || value === undefined) return null
  if (Buffer.isBuffer(value)) return value
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  throw internalError(`expected a BLOB column to be read as bytes, got ${typeof value}`)
}

function text(value: unknown): string | null {
  if (value === null || value === undefined) return null
  return Buffer.isBuffer(value) ? value.toString('utf8') : String(value)
}

function parseJson(value: unknown): unknown {
  const json = text(value)
  return json === null ? null : JSON.parse(json)
}
