import { internalError } from '../../core/errors.ts'
import type { OutboxRecord } from '../../core/record.ts'
import { type FailedDelivery, HELD_ATTEMPTS, type OutboxTable, type SqlStatement } from '../../core/seams.ts'
import { encodeHeaders, nextAttemptsSql } from '../shared/stored-columns.ts'
import { keyLockSlotSql, lockClass, qualified, wakeChannel } from './names.ts'

/**
 * One statement for any number of messages: parallel arrays through unnest keep the text
 * constant (so it is prepared once per connection) and the parameter count at 6.
 * The uncorrelated sub-select runs once, before the first row gets its id: it takes the
 * transaction-scoped lock of every key being produced, in ascending order so that two
 * producers sharing keys cannot deadlock. Holding the key lock until commit makes id order
 * equal commit order for each key, which the relay's oldest-first claim relies on.
 * With `notify`, the same statement queues a NOTIFY that PostgreSQL delivers at commit (and
 * never on rollback); repeated notifications of one transaction are folded into one.
 */
export function insertStatement(
  table: OutboxTable,
  records: readonly OutboxRecord[],
  notify = true,
): SqlStatement {
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
    name: `ke_insert${notify ? '_n' : ''}_${table.schema}_${table.table}`,
    text: `INSERT INTO ${outbox} (topic, key, value, headers, ordering_hash)
SELECT m.topic, m.key, m.value, m.headers, m.ordering_hash
FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[], $5::int[]) AS m(topic, key, value, headers, ordering_hash)
WHERE (SELECT count(*) FROM (
  SELECT pg_advisory_xact_lock($6::int, s)
  FROM (SELECT DISTINCT ${keyLockSlotSql('h')} AS s FROM unnest($5::int[]) AS u(h) WHERE h IS NOT NULL ORDER BY 1) AS slots
) AS locks) >= 0${notify ? `\n  AND (SELECT count(*) FROM (SELECT pg_notify('${wakeChannel(table)}', '')) AS wake) >= 0` : ''}`,
    values: [topics, keys, values, headers, hashes, lockClass(table, 'key')],
  }
}

/**
 * The common case, one message, as a plain single-row INSERT: about 0.1 ms cheaper per
 * transaction than the unnest form (measured on PostgreSQL 15), with the same guarantees. The
 * FROM sub-selects run before the row exists, so the key lock is held before the row gets its
 * id; a null key passes NULL to the strict lock function, which then takes no lock. Headers go
 * as text and are cast on the server: postgres.js would JSON-encode a string bound to jsonb again.
 */
export function insertOneStatement(table: OutboxTable, record: OutboxRecord, notify = true): SqlStatement {
  const shape = insertOneShape(table, notify)
  return {
    name: shape.name,
    text: shape.text,
    values: [
      record.topic,
      record.key,
      record.value,
      encodeHeaders(record.headers),
      record.orderingHash,
      shape.lockClass,
    ],
  }
}

interface InsertOneShape {
  name: string
  text: string
  lockClass: number
}

/**
 * Built once per table: the statement goes out with every message, and one text object lets
 * drivers that key prepared statements by text find it without hashing a new string each time.
 */
const insertOneShapes = new WeakMap<OutboxTable, { notify?: InsertOneShape; quiet?: InsertOneShape }>()

function insertOneShape(table: OutboxTable, notify: boolean): InsertOneShape {
  let shapes = insertOneShapes.get(table)
  if (shapes === undefined) {
    shapes = {}
    insertOneShapes.set(table, shapes)
  }
  const known = notify ? shapes.notify : shapes.quiet
  if (known !== undefined) return known
  const wake = notify ? `, (SELECT pg_notify('${wakeChannel(table)}', '')) AS wake` : ''
  const shape: InsertOneShape = {
    name: `ke_insert1${notify ? '_n' : ''}_${table.schema}_${table.table}`,
    text: `INSERT INTO ${qualified(table)} (topic, key, value, headers, ordering_hash)
SELECT $1::text, $2::bytea, $3::bytea, $4::text::jsonb, $5::int
FROM (SELECT pg_advisory_xact_lock($6::int, ${keyLockSlotSql('$5::int')})) AS key_lock${wake}`,
    lockClass: lockClass(table, 'key'),
  }
  if (notify) shapes.notify = shape
  else shapes.quiet = shape
  return shape
}

/**
 * What a claim returns, in this order: the relay store reads rows as arrays where the driver
 * can return them (see `PostgresRelayStore`), so the position of each column is part of the contract.
 */
export const CLAIM_COLUMNS = ['id', 'topic', 'key', 'value', 'headers', 'ordering_hash', 'attempts'] as const
const CLAIM_SELECT = CLAIM_COLUMNS.map((column) => `o.${column}`).join(', ')

/** The row waits for a retry (the test `RETRY_WAITING` makes of older rows). */
export const WAITING = (alias: string) => `${alias}.attempts > 0 AND ${alias}.available_at > now()`

/**
 * "No older message of this row's key is waiting for a retry". The first test runs once per
 * claim (PostgreSQL makes it an InitPlan) and is true whenever nothing at all is waiting, the
 * usual case: the per-row probe after OR is then never run, which saved about a seventh of a
 * 500-row claim's server CPU. It cannot change the answer: a row that makes the probe fail also
 * makes the first test false.
 *
 * `from`: the start of a scan past a blocked run (see `claimScan`). The first test then
 * looks only for waiting rows from there on, so that rows a retry holds back behind the run do
 * not cost every other row its probe: the rows those hold back are left out by their key's hash.
 */
export const RETRY_WAITING = (outbox: string, from?: string) => `(NOT EXISTS (
    SELECT 1 FROM ${outbox} AS waiting WHERE waiting.attempts > 0 AND waiting.available_at > now()${from === undefined ? '' : ` AND waiting.id >= ${from}`}
  ) OR NOT EXISTS (
    SELECT 1 FROM ${outbox} AS older
    WHERE older.attempts > 0 AND older.ordering_hash = o.ordering_hash AND older.id < o.id
      AND older.available_at > now()
  ))`

/** A claim's byte budget (see `RelayStore.claim`), and the rows its relay's other session holds. */
export interface ClaimBudget {
  maxBytes: number
  /**
   * Ids the relay's other session holds in its open claim (see `PostgresRelayStore.companion`).
   * The budget is summed before rows are locked (below), so rows SKIP LOCKED would pass over must
   * be left out by id, or the claim ahead would count the batch in flight against its budget.
   */
  held?: readonly string[]
}

/**
 * A row's bytes against the budget: key and value as the relay will hold them (octet_length of
 * a bytea reads the length from its header, even when it is TOASTed), and the headers' stored
 * size (pg_column_size: no conversion of the jsonb to text for every row).
 */
const ROW_BYTES = (alias: string) =>
  `coalesce(octet_length(${alias}.key), 0) + coalesce(octet_length(${alias}.value), 0) + coalesce(pg_column_size(${alias}.headers), 0)`

/**
 * A single/exclusive claim that takes no row locks (see `claimSql`): the rows the relay's other
 * session holds are left out by id instead of by SKIP LOCKED.
 */
export interface UnlockedClaim {
  /**
   * Every id the relay's other session holds, from its claim until the statement that ends that
   * claim (its delete and COMMIT) has returned; empty when it holds none. Unlike
   * `ClaimBudget.held`, never a subset: these rows are skipped by nothing else.
   */
  held: readonly string[]
}

/**
 * Oldest first, skipping rows another session holds, and never a message whose key has an
 * older message waiting for a retry (that would overtake it). Rows stay locked by this
 * session's transaction until the batch is acknowledged or released.
 *
 * `unlocked` (single/exclusive mode only): the same rows without `FOR UPDATE SKIP LOCKED`. A row
 * lock is a heap write that PostgreSQL logs (a 54-byte LOCK record per row, as much WAL as the
 * row's DELETE), and in these modes it keeps nothing apart that is not kept apart otherwise:
 * another relay cannot claim while this relay's sessions hold the leader lock and the fence, and
 * they lose both only with the session, which also ends the claim; the relay's own two sessions
 * are kept apart by `unlocked.held`. `slots`: a concurrent claim's try-locks are per claim slot
 * (see `concurrentClaimSql`). Concurrent relays keep the row locks: only they separate
 * keyless rows, and drop rows another relay deleted after the claim's snapshot.
 */
export function claimSql(
  table: OutboxTable,
  limit: number,
  concurrent = false,
  floor?: ClaimStart,
  budget?: ClaimBudget,
  unlocked?: UnlockedClaim,
  slots?: number,
): string {
  if (concurrent) {
    if (unlocked !== undefined) throw internalError('a concurrent claim must lock its rows')
    return concurrentClaimSql(table, limit, claimScan(floor, 'o.id', table), budget, slots)
  }
  const outbox = qualified(table)
  const scan = claimScan(floor, 'o.id', table)
  if (budget !== undefined)
    return budgetedClaimSql(
      table,
      limit,
      scan,
      unlocked === undefined ? budget : { ...budget, held: unlocked.held },
      unlocked,
    )
  return `SELECT ${CLAIM_SELECT}
FROM ${outbox} AS o
WHERE ${scan.condition}o.available_at <= now()${heldCondition(unlocked?.held, 'o.id')}
  AND ${RETRY_WAITING(outbox, scan.from)}
ORDER BY o.id
LIMIT ${Math.trunc(limit)}${rowLocks(unlocked)}`
}

/** Locking clause of a single/exclusive claim. */
function rowLocks(unlocked: UnlockedClaim | undefined): string {
  return unlocked === undefined ? '\nFOR UPDATE OF o SKIP LOCKED' : ''
}

/**
 * The single/exclusive claim under a byte budget. PostgreSQL refuses a window function at the
 * level of FOR UPDATE, so the running sum of the rows' bytes is taken by a plain read first (an
 * InitPlan, run once: the same scan, filters and LIMIT as the claim, O(batch)), which gives the
 * last id within the budget; the claim itself is the claim without a budget, up to that id.
 * Locking first and trimming after would not do: the trimmed rows would stay locked until the
 * claim ends, and the claim ahead, skipping them, could take a younger message of their key.
 * The sum runs over twice the row limit. Rows the claim then skips (locked by the relay's other
 * session, whose claim is at most `limit` rows) are counted too, which can only make the batch
 * smaller than the budget, never larger; summing over `limit` rows only, a claim ahead whose
 * window started with the other session's batch found its cut-off inside that batch and came
 * back nearly empty, which cost the pipelined relay a third of its throughput on 256-B messages.
 * When the other session's batch is large against the budget, its rows are also left out of the
 * sum by id (`ClaimBudget.held`), so that a claim ahead of big messages is not cut short by them. Measured against joining the summed rows back to the table (each claimed row found
 * twice through the primary key, and sorted again): 500 rows of 256 B, client-side median 3.7 ms
 * against 6.5 ms, and 2.8 ms without a budget (one session on a shared 2-core machine).
 */
function budgetedClaimSql(
  table: OutboxTable,
  limit: number,
  scan: ClaimScan,
  budget: ClaimBudget,
  unlocked: UnlockedClaim | undefined,
): string {
  const outbox = qualified(table)
  const sized = `SELECT o.id, ${ROW_BYTES('o')} AS bytes
    FROM ${outbox} AS o
    WHERE ${scan.condition}o.available_at <= now()${heldCondition(budget.held, 'o.id')}
      AND ${RETRY_WAITING(outbox, scan.from)}
    ORDER BY o.id
    LIMIT ${2 * Math.trunc(limit)}`
  return `SELECT ${CLAIM_SELECT}
FROM ${outbox} AS o
WHERE ${scan.condition}${withinBudget(sized, budget)} AND o.available_at <= now()${heldCondition(unlocked?.held, 'o.id')}
  AND ${RETRY_WAITING(outbox, scan.from)}
ORDER BY o.id
LIMIT ${Math.trunc(limit)}${rowLocks(unlocked)}`
}

/**
 * `o.id` is at most the last id of `rows` (id and bytes, in id order) whose running sum of bytes
 * is within the budget; the first row always is. No rows: nothing is (NULL).
 */
function withinBudget(rows: string, budget: ClaimBudget): string {
  return `o.id <= (
  SELECT max(id) FROM (
    SELECT id, sum(bytes) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS running, row_number() OVER (ORDER BY id) AS n
    FROM (${rows}) AS due
  ) AS sized
  WHERE running <= ${maxBytes(budget.maxBytes)} OR n = 1
)`
}

/** A hashed `<> ALL` from 9 ids on (PostgreSQL 15): one probe per row scanned, not one per id. */
function heldCondition(held: readonly string[] | undefined, column: string): string {
  return held === undefined || held.length === 0
    ? ''
    : `\n      AND ${column} <> ALL(${idArrayLiteral(held)})`
}

function maxBytes(value: number): number {
  if (!Number.isSafeInteger(value) || value < 1)
    throw internalError(`byte budget ${value} is not a positive integer`)
  return value
}

/**
 * Where a claim's scan of the primary key starts (see `ClaimFloor`): a bare id is a floor, below
 * which every row is gone for good.
 */
export type ClaimStart = string | { floor: string; blocked?: BlockedRun }

/**
 * Rows that a retry holds back: every row from the floor up to `past` (excluded) waits for its
 * retry or is younger than one of `waiting` of its key, and no other row can appear there (its ids
 * are settled). So while every row of `waiting` still waits, nothing there can be claimed and the
 * scan starts at `past`; once one of them is due or gone, at the floor again.
 */
export interface BlockedRun {
  past: string
  waiting: readonly string[]
  /**
   * The ordering hashes of `waiting`: while they all wait, every row past the run with one of
   * these hashes is younger than a waiting message of its key. The claim leaves such rows out by
   * hash, which lets its retry test skip the probe for every other row (see `RETRY_WAITING`).
   */
  hashes: readonly number[]
}

/**
 * A claim's scan from `start`. `condition`: its lower bound on `column`, then `AND`. With a
 * blocked run, a one-row InitPlan picks the bound, so the index scan still starts at it (a
 * runtime key): a claim behind a key waiting for a retry does not walk that key's younger rows,
 * however many there are. Its cost is one primary-key probe per waiting row, which `ClaimFloor`
 * keeps few. `from`: the same bound for `RETRY_WAITING`, only past a blocked run.
 */
export interface ClaimScan {
  condition: string
  from?: string
}

export function claimScan(start: ClaimStart | undefined, column: string, table?: OutboxTable): ClaimScan {
  if (start === undefined) return { condition: '' }
  const floor = bigintText(typeof start === 'string' ? start : start.floor, 'claim floor')
  const blocked = typeof start === 'string' ? undefined : start.blocked
  if (blocked === undefined || blocked.waiting.length === 0 || table === undefined)
    return { condition: `${column} >= ${floor} AND ` }
  const holds = runHolds(table, blocked)
  const from = `(SELECT CASE WHEN ${holds} THEN ${bigintText(blocked.past, 'blocked run end')} ELSE ${floor} END::bigint)`
  const bound = `${column} >= ${from} AND `
  if (blocked.hashes.length === 0) return { condition: bound, from }
  const hash = column.replace(/\bid$/, 'ordering_hash')
  const hashes = `'{${blocked.hashes.map(int32).join(',')}}'::int[]`
  return { condition: `${bound}(${hash} IS NULL OR ${hash} <> ALL(${hashes}) OR NOT ${holds}) AND `, from }
}

/** The lowest id a scan from `start` must read, as an SQL expression (see `claimScan`). */
export function scanStart(start: ClaimStart, table: OutboxTable): string {
  return (
    claimScan(start, 'id', table).from ??
    bigintText(typeof start === 'string' ? start : start.floor, 'claim floor')
  )
}

/** Every message that holds the run back still waits (see `BlockedRun`). */
function runHolds(table: OutboxTable, blocked: BlockedRun): string {
  return `(SELECT count(*) = ${blocked.waiting.length} FROM ${qualified(table)} AS w WHERE w.id = ANY(${idArrayLiteral(blocked.waiting)}) AND ${WAITING('w')})`
}

function int32(value: number): number {
  if (!Number.isInteger(value) || value < -2147483648 || value > 2147483647)
    throw internalError(`ordering hash ${value} is not a 32-bit integer`)
  return value
}

/**
 * The claim for several relays at once. A key's messages must only ever be held by one relay,
 * or a relay could send a younger message of a key while another still holds an older one.
 * So the claim takes a transaction-scoped try-lock per key, once per key, and then claims only
 * rows of keys it won, plus keyless rows. Deciding per row instead would be wrong: a lock
 * released by another relay in the middle of the scan would let this relay skip a key's older
 * rows and take its younger ones. Rows another relay deleted after this statement's snapshot
 * are dropped by FOR UPDATE; rows committed after it have higher ids than every visible row of
 * their key (producers serialise per key), so what this relay takes is always the oldest unsent
 * part of each key.
 *
 * Sharing: the keys among the oldest candidates are tried oldest first, one at a time (a
 * recursive CTE runs strictly in order), and trying stops once the keys won hold a batch. So a
 * relay locks only the keys it will send, and the next relay, finding those taken, wins the
 * following ones from the same window instead of finding every key of the window locked.
 *
 * With a byte budget, "a batch" is also counted in bytes, so trying stops once the keys won hold
 * the budget, and the rows of won keys (and keyless ones) are summed in id order before any is
 * locked, as in `budgetedClaimSql`: only the prefix within the budget is locked. The keys won
 * beyond that prefix stay locked until the claim ends, as keys won beyond the row limit do.
 *
 * The window leaves out the rows that wait behind a retry of their key, as the single claim's
 * scan does: counted in, the younger rows of a key waiting for a retry filled the window (2,000
 * of them behind one failed message were enough), the claim came back empty, and every other key
 * waited for that key's retry. Their keys are then not tried either, and `n` counts only rows
 * the claim can take.
 *
 * Cost: the recursive step must find the next key in O(1), or the claim is quadratic in the
 * keys of the window. The keys are therefore one row of arrays in rank order, indexed by the
 * step's rank (a subscript into an array of a fixed-width type without nulls is an offset).
 * Joining a table of ranked keys on `rank = t.rank + 1` instead scanned all of them at every
 * step (PostgreSQL 15 hashes the one-row work table, not the keys); a LATERAL ... LIMIT 1 stops
 * at the key found, which still walks half of them on average. 500-row claims over a window of
 * 2,000 distinct keys, client-side median: join 73 ms, LATERAL 12 ms, arrays 8 ms; 64 keys: all
 * about 6 ms (bench/key-sweep.ts --only shapes, loaded 2-core machine). Each array_agg sorts on
 * its own: ordering the input in a sub-select is not guaranteed to reach the aggregate.
 *
 * With `slots` (relay option `claimSlots`), the try-locks are per claim slot, the ordering hash
 * modulo `slots`, not per key: a relay holding a slot holds every key in it. Everything above
 * holds with "slot" for "key", and a claim tries at most `slots` locks whatever the number of
 * distinct keys, where per-key locks cost one try-lock per key of the batch (500 when every row
 * has a key of its own). The lock ids differ from the per-key ones, so relays of the two kinds
 * must never run together: `PostgresRelayStore` keeps them apart when they join.
 */
function concurrentClaimSql(
  table: OutboxTable,
  limit: number,
  scan: ClaimScan,
  budget?: ClaimBudget,
  slots?: number,
): string {
  const outbox = qualified(table)
  const group = (hash: string) => (slots === undefined ? hash : `(${hash} & ${claimSlotMask(slots)})`)
  const lockClassOf = lockClass(table, slots === undefined ? 'claim' : 'claim-slot')
  const batch = Math.trunc(limit)
  const window = batch * 4
  const sizeColumn = budget === undefined ? '' : `, ${ROW_BYTES('o')} AS bytes`
  const keyBytes = budget === undefined ? '' : ', sum(bytes) AS b'
  const startBytes =
    budget === undefined
      ? ''
      : ', (SELECT coalesce(sum(bytes), 0) FROM candidates WHERE ordering_hash IS NULL) AS bytes'
  const keyArrays = budget === undefined ? '' : ', array_agg(b ORDER BY first) AS b'
  const nextBytes = budget === undefined ? '' : ', t.bytes + CASE WHEN l.won THEN k.b[t.rank + 1] ELSE 0 END'
  const moreBytes = budget === undefined ? '' : ` AND t.bytes < ${maxBytes(budget.maxBytes)}`
  const candidates = `WITH RECURSIVE candidates AS MATERIALIZED (
  SELECT o.id, o.ordering_hash${sizeColumn} FROM ${outbox} AS o
  WHERE ${scan.condition}o.available_at <= now()${heldCondition(budget?.held, 'o.id')}
    AND ${RETRY_WAITING(outbox, scan.from)}
  ORDER BY o.id
  LIMIT ${window}
), keys AS MATERIALIZED (
  SELECT array_agg(h ORDER BY first) AS h, array_agg(n ORDER BY first) AS n${keyArrays}, count(*)::int AS size FROM (
    SELECT ${group('ordering_hash')} AS h, count(*) AS n${keyBytes}, min(id) AS first FROM candidates
    WHERE ordering_hash IS NOT NULL GROUP BY 1
  ) AS per_key
), tried AS (
  SELECT 0 AS rank, NULL::int AS h, false AS won, (SELECT count(*) FROM candidates WHERE ordering_hash IS NULL) AS total${startBytes}
  UNION ALL
  SELECT t.rank + 1, k.h[t.rank + 1], l.won, t.total + CASE WHEN l.won THEN k.n[t.rank + 1] ELSE 0 END${nextBytes}
  FROM tried AS t
  CROSS JOIN keys AS k
  CROSS JOIN LATERAL (SELECT pg_try_advisory_xact_lock(${lockClassOf}, k.h[t.rank + 1]) AS won) AS l
  WHERE t.rank < k.size AND t.total < ${batch}${moreBytes}
), won AS MATERIALIZED (
  SELECT h FROM tried WHERE won
)`
  // The candidates as `o`: they carry what the retry test reads, so no row is looked up again.
  const mine = `SELECT o.id, o.bytes FROM candidates AS o
    WHERE (o.ordering_hash IS NULL OR ${group('o.ordering_hash')} IN (SELECT h FROM won))
      AND ${RETRY_WAITING(outbox, scan.from)}
    ORDER BY o.id
    LIMIT ${batch}`
  return `${candidates}
SELECT ${CLAIM_SELECT}
FROM ${outbox} AS o
JOIN candidates AS c ON c.id = o.id
WHERE (c.ordering_hash IS NULL OR ${group('c.ordering_hash')} IN (SELECT h FROM won))${budget === undefined ? '' : `\n  AND ${withinBudget(mine, budget)}`}
  AND ${RETRY_WAITING(outbox, scan.from)}
ORDER BY o.id
LIMIT ${batch}
FOR UPDATE OF o SKIP LOCKED`
}

/** A claim slot count: a power of two from 2 to `MAX_CLAIM_SLOTS` (relay option `claimSlots`). */
export function isClaimSlotCount(slots: unknown): slots is number {
  return (
    typeof slots === 'number' &&
    Number.isInteger(slots) &&
    slots >= 2 &&
    slots <= MAX_CLAIM_SLOTS &&
    (slots & (slots - 1)) === 0
  )
}

/** The mask of a claim slot count (see `isClaimSlotCount`). */
function claimSlotMask(slots: number): number {
  if (!isClaimSlotCount(slots))
    throw internalError(`claim slot count ${slots} is not a power of two from 2 to ${MAX_CLAIM_SLOTS}`)
  return slots - 1
}

/** The most claim slots a concurrent relay may use (relay option `claimSlots`). */
export const MAX_CLAIM_SLOTS = 1024

/** Ids come from the database as decimal strings; anything else is a bug, not input. */
function bigintText(id: string, what: string): string {
  if (!/^\d{1,19}$/.test(id)) throw internalError(`${what} ${JSON.stringify(id)} is not a bigint`)
  return id
}

export function idArrayLiteral(ids: readonly string[]): string {
  for (const id of ids) bigintText(id, 'outbox id')
  return `'{${ids.join(',')}}'::bigint[]`
}

export function deleteSql(table: OutboxTable, ids: readonly string[]): string {
  return `DELETE FROM ${qualified(table)} WHERE id = ANY(${idArrayLiteral(ids)})`
}

/** Error history kept per message (the oldest entries are dropped first). */
const ERROR_HISTORY = 20

/**
 * Records every failure of a claim in one statement: retried messages get attempts+1, their
 * error appended to the history and a retry time; dead ones move, with their history, to the
 * dead-letter table in the same transaction (never both deleted and lost).
 */
export function failuresStatement(table: OutboxTable, failures: readonly FailedDelivery[]): SqlStatement {
  const ids: string[] = []
  const errors: string[] = []
  const delays: number[] = []
  const dead: boolean[] = []
  const counted: boolean[] = []
  for (const failure of failures) {
    for (const id of failure.ids) {
      ids.push(id)
      errors.push(failure.error)
      delays.push(retryDelay(failure.retryInMs))
      dead.push(failure.deadLetter === true)
      counted.push(failure.countAttempt !== false)
    }
  }
  const outbox = qualified(table)
  const entry = `jsonb_build_array(jsonb_build_object('at', now(), 'error', f.error))`
  const history = `(CASE WHEN jsonb_array_length(o.errors) >= ${ERROR_HISTORY} THEN o.errors - 0 ELSE o.errors END) || ${entry}`
  return {
    text: `WITH f AS (
  SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bool[], $5::bool[]) AS f(id, error, retry_in_ms, dead, counted)
), retried AS (
  UPDATE ${outbox} AS o
  SET attempts = ${nextAttemptsSql('o.attempts', 'f.counted')}, last_error = f.error, available_at = clock_timestamp() + f.retry_in_ms * interval '1 millisecond', errors = ${history}
  FROM f WHERE o.id = f.id AND NOT f.dead
), buried AS (
  DELETE FROM ${outbox} AS o USING f WHERE o.id = f.id AND f.dead
  RETURNING o.id, o.topic, o.key, o.value, o.headers, o.ordering_hash, o.attempts % ${HELD_ATTEMPTS} + 1 AS attempts,
    ${history} AS errors, o.created_at
)
INSERT INTO ${qualified(table, '_dead_letters')} (message_id, topic, key, value, headers, ordering_hash, attempts, errors, created_at)
SELECT id, topic, key, value, headers, ordering_hash, attempts, errors, created_at FROM buried`,
    values: [ids, errors, delays, dead, counted],
  }
}

/**
 * A retry delay as the statements take it: whole ms, at least 0. The retry time itself is the
 * database's clock plus this, the clock the claim compares `available_at` with (see
 * `FailedDelivery.retryInMs`); `clock_timestamp()` rather than `now()`, which is the claim's start.
 */
export function retryDelay(ms: number): number {
  if (!Number.isFinite(ms) || ms < 0) throw internalError(`retry delay ${ms} is not a number of ms >= 0`)
  return Math.trunc(ms)
}
