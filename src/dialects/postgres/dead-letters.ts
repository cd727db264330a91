import {
  checkDeadLetterFilter,
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetters,
  type OutboxStats,
} from '../../core/dead-letters.ts'
import type { OutboxTable } from '../../core/seams.ts'
import { decodeHeaders } from '../shared/stored-columns.ts'
import { keyLockSlotSql, lockClass, qualified, wakeChannel } from './names.ts'
import { hasParkedTable, parkedTable } from './parking.ts'
import { lastResult, type PgSession } from './session.ts'

type OpenSession = () => Promise<PgSession>

function where(filter: DeadLetterFilter): { sql: string; values: unknown[] } {
  const clauses: string[] = []
  const values: unknown[] = []
  if (filter.topic !== undefined) {
    values.push(filter.topic)
    clauses.push(`topic = $${values.length}`)
  }
  if (filter.ids !== undefined) {
    values.push(filter.ids)
    clauses.push(`id = ANY($${values.length}::bigint[])`)
  }
  if (filter.deadBefore !== undefined) {
    values.push(filter.deadBefore)
    clauses.push(`dead_at < $${values.length}`)
  }
  return { sql: clauses.length > 0 ? `WHERE ${clauses.join(' AND ')}` : '', values }
}

async function withSession<R>(open: OpenSession, fn: (session: PgSession) => Promise<R>): Promise<R> {
  const session = await open()
  try {
    return await fn(session)
  } finally {
    await session.end()
  }
}

export function postgresDeadLetters(table: OutboxTable, open: OpenSession): DeadLetters {
  const dead = qualified(table, '_dead_letters')
  const outbox = qualified(table)
  return {
    list: (input) =>
      withSession(open, async (session) => {
        const filter = checkDeadLetterFilter(input, 'list')
        const { sql, values } = where(filter)
        const result = lastResult(
          await session.query(
            `SELECT * FROM ${dead} ${sql} ORDER BY id LIMIT ${filter.limit ?? 100}`,
            values,
          ),
        )
        return result.rows.map(toDeadLetter)
      }),
    count: (input) =>
      withSession(open, async (session) => {
        const { sql, values } = where(checkDeadLetterFilter(input, 'count'))
        const result = lastResult(
          await session.query(`SELECT count(*)::int AS n FROM ${dead} ${sql}`, values),
        )
        return result.rows[0]?.n as number
      }),
    replay: (input) =>
      withSession(open, async (session) => {
        const { sql, values } = where(checkDeadLetterFilter(input, 'replay'))
        values.push(lockClass(table, 'key'))
        const lockParam = `$${values.length}`
        // Same key locks as a producer, so replayed messages take their place in each key's
        // order exactly like newly produced ones; oldest first among the replayed.
        const result = lastResult(
          await session.query(
            `WITH picked AS (
  DELETE FROM ${dead} ${sql} RETURNING id, message_id, topic, key, value, headers, ordering_hash
), locks AS (
  SELECT count(*) FROM (
    SELECT pg_advisory_xact_lock(${lockParam}::int, s)
    FROM (SELECT DISTINCT ${keyLockSlotSql('ordering_hash')} AS s FROM picked WHERE ordering_hash IS NOT NULL ORDER BY 1) AS slots
  ) AS l
), moved AS (
  INSERT INTO ${outbox} (topic, key, value, headers, ordering_hash)
  SELECT topic, key, value, headers, ordering_hash FROM picked, locks ORDER BY message_id
  RETURNING 1
)
SELECT count(*)::int AS n, pg_notify('${wakeChannel(table)}', '') FROM moved`,
            values,
          ),
        )
        return result.rows[0]?.n as number
      }),
    purge: (input) =>
      withSession(open, async (session) => {
        const { sql, values } = where(checkDeadLetterFilter(input, 'purge'))
        const result = lastResult(await session.query(`DELETE FROM ${dead} ${sql}`, values))
        return result.rowCount ?? 0
      }),
  }
}

export async function postgresStats(table: OutboxTable, open: OpenSession): Promise<OutboxStats> {
  return withSession(open, async (session) => {
    const outbox = qualified(table)
    // Parked rows are pending too (see parking.ts); a schema not yet migrated has none.
    const parked = (await hasParkedTable(session, table))
      ? ` + (SELECT count(*) FROM ${parkedTable(table)})`
      : ''
    const result = lastResult(
      await session.query(`SELECT
  ((SELECT count(*) FROM ${outbox})${parked})::int AS pending,
  (SELECT count(*) FROM ${outbox} WHERE attempts > 0)::int AS retrying,
  (SELECT count(*) FROM ${qualified(table, '_dead_letters')})::int AS dead,
  COALESCE((SELECT (extract(epoch FROM now() - created_at) * 1000)::bigint FROM ${outbox} ORDER BY id LIMIT 1), 0) AS oldest`),
    )
    const row = result.rows[0] ?? {}
    return {
      pending: row.pending as number,
      retrying: row.retrying as number,
      deadLetters: row.dead as number,
      oldestPendingMs: Math.max(0, Number(row.oldest)),
    }
  })
}

/** node-postgres gives bytea as a Buffer; PGlite as a plain Uint8Array, which `DeadLetter` is not. */
function bytes(value: unknown): Buffer | null {
  if (value === null || value === undefined) return null
  if (Buffer.isBuffer(value)) return value
  const view = value as Uint8Array
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength)
}

function toDeadLetter(row: Record<string, unknown>): DeadLetter {
  return {
    id: String(row.id),
    messageId: String(row.message_id),
    topic: row.topic as string,
    key: bytes(row.key),
    value: bytes(row.value),
    headers: decodeHeaders(row.headers),
    attempts: row.attempts as number,
    errors: row.errors as DeadLetter['errors'],
    createdAt: row.created_at as Date,
    deadAt: row.dead_at as Date,
  }
}
