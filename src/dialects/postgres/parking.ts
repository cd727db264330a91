import type { OutboxTable } from '../../core/seams.ts'
import { qualified } from './names.ts'
import { lastResult, type PgSession } from './session.ts'

/**
 * Parking: the rows of a key that wait behind a retry are moved out of the claim's way.
 *
 * Why: a claim scans the outbox in id order and passes over every row of a key whose older
 * message waits for a retry, one probe per row, at every claim. With 100,000 rows of such a key
 * ahead of the healthy ones, each claim took about 250 ms instead of 6-14 ms, for as long as the
 * retry waited, and the other keys drained at a sixth of their rate. Moving the key's rows to
 * `<outbox>_parked` once (about 1 s of database work for 100,000 rows, once per park and once per
 * unpark) takes them out of every later claim's scan.
 *
 * Order: parked rows keep their outbox ids, and a claim never takes a row of a key that has a
 * parked row with a lower id (`PARKED_OLDER`). A row produced while its key is parked therefore
 * stays behind the parked ones, and rows come back (unpark) with their ids, so id order is still
 * each key's order. Rows come back only once no row of their key that failed (attempts > 0) is
 * older than them: the waiting message was acknowledged, dead-lettered or removed, whoever did it.
 *
 * Safety: both moves run in the relay's claim transaction, as one statement each (delete and
 * insert together): a relay that dies mid-way rolls them back. Rows another session holds are
 * skipped (SKIP LOCKED), never waited for: the relay's other session may hold younger rows of the
 * key in a batch claimed ahead. A row left in the outbox behind a parked one is held back by the
 * same test, so skipping changes no order. Both moves are bounded, so no statement comes near the
 * relay's query timeout; what is left is moved by the next steps.
 */

/** Rows the park test looks at, from the claim floor: the rows the next claims would walk. */
export const PARK_FRONT_ROWS = 1000
/** A waiting key is parked when at least this many of those rows are its rows behind its retry. */
export const PARK_MIN_ROWS = 100
/** Rows walked by one park from the key's waiting message on (its rows among them are moved). */
export const PARK_REACH_ROWS = 100_000
/**
 * A retry due sooner than this (ms) is not worth a park: a park and an unpark of 100,000 rows
 * cost about 2 s of database work together (loaded 2-core machine), a claim behind them 250 ms.
 */
export const PARK_MIN_WAIT_MS = 2000
/** Rows one step brings back; the rest come back at the next steps. */
export const UNPARK_ROWS = 50_000

/** The columns a move carries, id apart (the outbox's id is an identity, set explicitly on unpark). */
const COLUMNS =
  'topic, key, value, headers, ordering_hash, attempts, available_at, created_at, last_error, errors'

export function parkedTable(table: OutboxTable): string {
  return qualified(table, '_parked')
}

/** SQL: whether the parked table exists (schema version 3 applied). */
export function parkedTableExistsSql(table: OutboxTable): string {
  return `to_regclass('${parkedTable(table).replaceAll("'", "''")}') IS NOT NULL`
}

/** Whether the parked table exists: statements that read it must not run on an older schema. */
export async function hasParkedTable(session: PgSession, table: OutboxTable): Promise<boolean> {
  const result = lastResult(await session.query(`SELECT ${parkedTableExistsSql(table)} AS parked`))
  return result.rows[0]?.parked === true
}

/**
 * The keys with parked rows, as an int[] (empty when none): one probe of the primary key per key
 * (a loose index scan), so it costs one probe of an empty index while nothing is parked.
 */
export function parkedKeysSql(table: OutboxTable): string {
  const parked = parkedTable(table)
  return `(WITH RECURSIVE k AS (
    (SELECT ordering_hash AS h FROM ${parked} ORDER BY ordering_hash LIMIT 1)
    UNION ALL
    SELECT (SELECT p.ordering_hash FROM ${parked} AS p WHERE p.ordering_hash > k.h ORDER BY p.ordering_hash LIMIT 1)
    FROM k WHERE k.h IS NOT NULL
  ) SELECT coalesce(array_agg(h), '{}') FROM k WHERE h IS NOT NULL)`
}

/**
 * "No parked row of this row's key is older": part of the claim's retry test. The key list is
 * computed once per claim (an InitPlan); only rows of a parked key probe the parked table.
 */
export function parkedOlderSql(table: OutboxTable, alias: string): string {
  return `(${alias}.ordering_hash <> ALL(${parkedKeysSql(table)}::int[]) OR NOT EXISTS (
    SELECT 1 FROM ${parkedTable(table)} AS parked
    WHERE parked.ordering_hash = ${alias}.ordering_hash AND parked.id < ${alias}.id
  ))`
}

/**
 * The lowest parked id (NULL when none): the claim floor must stay at or below it, or rows
 * coming back with their ids would be below the scan's start and never claimed.
 */
export function lowestParkedSql(table: OutboxTable): string {
  return `(SELECT min(p.id) FROM unnest(${parkedKeysSql(table)}) AS k(h)
    CROSS JOIN LATERAL (SELECT min(id) AS id FROM ${parkedTable(table)} WHERE ordering_hash = k.h) AS p)`
}

/**
 * Parks the keys whose waiting message (attempts > 0, due at least `PARK_MIN_WAIT_MS` from now)
 * has at least `PARK_MIN_ROWS` of its key's rows among the first `PARK_FRONT_ROWS` rows a claim
 * walks: their rows younger than the waiting one, within `PARK_REACH_ROWS` rows of it, move to
 * the parked table. The waiting rows come from the partial retry index (normally empty); the
 * front is `PARK_FRONT_ROWS` entries of the primary key: cheap enough to run once a second.
 */
/** `from`: the claim floor's condition (`floorCondition(floor, 'id')`), or ''. */
export function parkSql(table: OutboxTable, from: string): string {
  const outbox = qualified(table)
  return `WITH waiting AS MATERIALIZED (
  SELECT ordering_hash AS h, min(id) AS f FROM ${outbox}
  WHERE attempts > 0 AND ordering_hash IS NOT NULL AND available_at > now() + ${PARK_MIN_WAIT_MS} * interval '1 millisecond'
  GROUP BY ordering_hash
), front AS MATERIALIZED (
  SELECT id, ordering_hash FROM ${outbox} WHERE ${from}true ORDER BY id LIMIT ${PARK_FRONT_ROWS}
), dense AS MATERIALIZED (
  SELECT w.h, w.f FROM waiting AS w JOIN front ON front.ordering_hash = w.h AND front.id > w.f
  GROUP BY w.h, w.f HAVING count(*) >= ${PARK_MIN_ROWS}
), reach AS MATERIALIZED (
  SELECT coalesce((SELECT id FROM ${outbox} WHERE id > (SELECT min(f) FROM dense) ORDER BY id OFFSET ${PARK_REACH_ROWS - 1} LIMIT 1), 9223372036854775807) AS last
), picked AS MATERIALIZED (
  SELECT o.id FROM ${outbox} AS o JOIN dense AS d ON d.h = o.ordering_hash AND o.id > d.f
  WHERE o.id > (SELECT min(f) FROM dense) AND o.id <= (SELECT last FROM reach)
  FOR UPDATE OF o SKIP LOCKED
), moved AS (
  DELETE FROM ${outbox} AS o USING picked WHERE o.id = picked.id
  RETURNING o.id, ${COLUMNS.split(', ')
    .map((column) => `o.${column}`)
    .join(', ')}
)
INSERT INTO ${parkedTable(table)} (id, ${COLUMNS}) SELECT id, ${COLUMNS} FROM moved`
}

/**
 * Brings back, oldest first per key, up to `UNPARK_ROWS` parked rows of the keys that no failed
 * row (attempts > 0) of the outbox is older than, with their ids. Answers one row: how many came
 * back (`counted`; without it, no row: the relay runs it ahead of its claim in one query). Rows
 * left parked (the bound, or rows another session is moving) stay behind the parked test, so a
 * partial move keeps the order.
 */
export function unparkSql(table: OutboxTable, counted = true): string {
  const outbox = qualified(table)
  const parked = parkedTable(table)
  return `WITH free AS MATERIALIZED (
  SELECT k.h FROM unnest(${parkedKeysSql(table)}) AS k(h)
  WHERE NOT EXISTS (
    SELECT 1 FROM ${outbox} AS w
    WHERE w.attempts > 0 AND w.ordering_hash = k.h
      AND w.id < (SELECT min(p.id) FROM ${parked} AS p WHERE p.ordering_hash = k.h)
  )
), picked AS MATERIALIZED (
  SELECT p.ordering_hash, p.id FROM ${parked} AS p WHERE p.ordering_hash IN (SELECT h FROM free)
  ORDER BY p.ordering_hash, p.id LIMIT ${UNPARK_ROWS}
  FOR UPDATE OF p SKIP LOCKED
), moved AS (
  DELETE FROM ${parked} AS p USING picked WHERE p.ordering_hash = picked.ordering_hash AND p.id = picked.id
  RETURNING p.id, ${COLUMNS.split(', ')
    .map((column) => `p.${column}`)
    .join(', ')}
)
${
  counted
    ? `, back AS (
  INSERT INTO ${outbox} (id, ${COLUMNS}) OVERRIDING SYSTEM VALUE SELECT id, ${COLUMNS} FROM moved
  RETURNING 1
)
SELECT count(*)::int AS unparked FROM back`
    : `INSERT INTO ${outbox} (id, ${COLUMNS}) OVERRIDING SYSTEM VALUE SELECT id, ${COLUMNS} FROM moved`
}`
}
