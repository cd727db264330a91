import {
  checkDeadLetterFilter,
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetters,
  type OutboxStats,
} from '../../core/dead-letters.ts'
import type { OutboxTable } from '../../core/seams.ts'
import { decodeHeaders } from '../shared/stored-columns.ts'
import { keyLockSlot, qualified } from './names.ts'
import type { MysqlSession } from './session.ts'
import { deadLettersByIdSql, keyLocksSql, utcDateTime } from './sql.ts'

type OpenSession = () => Promise<MysqlSession>

const ISO = (column: string) => `DATE_FORMAT(${column}, '%Y-%m-%dT%H:%i:%s.%fZ')`

/** The filter as SQL; the topic travels as bytes, like every string the dialect sends. */
function where(filter: DeadLetterFilter): { sql: string; values: unknown[] } {
  const clauses: string[] = []
  const values: unknown[] = []
  if (filter.topic !== undefined) {
    clauses.push('d.topic = CONVERT(? USING utf8mb4)')
    values.push(Buffer.from(filter.topic, 'utf8'))
  }
  // checkDeadLetterFilter let only decimal ids through.
  if (filter.ids !== undefined)
    clauses.push(filter.ids.length > 0 ? `d.id IN (${filter.ids.join(',')})` : 'FALSE')
  if (filter.deadBefore !== undefined) {
    clauses.push('d.dead_at < ?')
    values.push(utcDateTime(filter.deadBefore))
  }
  return { sql: clauses.length > 0 ? `WHERE ${clauses.join(' AND ')}` : '', values }
}

/**
 * Admin work runs on a session of its own in READ COMMITTED, so that its reads take no gap
 * locks that would hold up a relay moving messages to the dead letters meanwhile.
 */
async function withSession<R>(open: OpenSession, fn: (session: MysqlSession) => Promise<R>): Promise<R> {
  const session = await open()
  try {
    await session.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED')
    return await fn(session)
  } finally {
    await session.end()
  }
}

export function mysqlDeadLetters(table: OutboxTable, open: OpenSession): DeadLetters {
  const dead = `${qualified(table, '_dead_letters')} AS d`
  return {
    list: (input) =>
      withSession(open, async (session) => {
        const filter = checkDeadLetterFilter(input, 'list')
        const { sql, values } = where(filter)
        const result = await session.query(
          `SELECT CAST(d.id AS CHAR) AS id, CAST(d.message_id AS CHAR) AS message_id, d.topic, d.\`key\`, d.value,
  CAST(d.headers AS CHAR) AS headers, d.attempts, CAST(d.errors AS CHAR) AS errors,
  ${ISO('d.created_at')} AS created_at, ${ISO('d.dead_at')} AS dead_at
FROM ${dead} ${sql} ORDER BY d.id LIMIT ${filter.limit ?? 100}`,
          values,
        )
        return result.rows.map(toDeadLetter)
      }),
    count: (input) =>
      withSession(open, async (session) => {
        const { sql, values } = where(checkDeadLetterFilter(input, 'count'))
        const result = await session.query(`SELECT COUNT(*) AS n FROM ${dead} ${sql}`, values)
        return Number(result.rows[0]?.n)
      }),
    replay: (input) =>
      withSession(open, async (session) => {
        const { sql, values } = where(checkDeadLetterFilter(input, 'replay'))
        await session.query('START TRANSACTION')
        try {
          const picked = await session.query(
            `SELECT CAST(d.id AS CHAR) AS id, d.ordering_hash FROM ${dead} ${sql} ORDER BY d.id FOR UPDATE`,
            values,
          )
          const ids = picked.rows.map((row) => String(row.id))
          if (ids.length > 0) {
            // The producers' key locks, so replayed messages take their place in each key's order
            // exactly like newly produced ones; oldest first among the replayed.
            const slots = new Set<number>()
            for (const row of picked.rows) {
              if (row.ordering_hash !== null) slots.add(keyLockSlot(Number(row.ordering_hash)))
            }
            if (slots.size > 0) await session.query(keyLocksSql(table, [...slots]))
            await session.query(
              `INSERT INTO ${qualified(table)} (topic, \`key\`, value, headers, ordering_hash)
SELECT d.topic, d.\`key\`, d.value, d.headers, d.ordering_hash FROM ${deadLettersByIdSql(table, ids)} ORDER BY d.message_id`,
            )
            await session.query(`DELETE d FROM ${deadLettersByIdSql(table, ids)}`)
          }
          await session.query('COMMIT')
          return ids.length
        } catch (error) {
          await session.query('ROLLBACK').catch(() => {})
          throw error
        }
      }),
    purge: (input) =>
      withSession(open, async (session) => {
        const { sql, values } = where(checkDeadLetterFilter(input, 'purge'))
        const result = await session.query(`DELETE d FROM ${dead} ${sql}`, values)
        return result.affectedRows
      }),
  }
}

export async function mysqlStats(table: OutboxTable, open: OpenSession): Promise<OutboxStats> {
  return withSession(open, async (session) => {
    const outbox = qualified(table)
    const result = await session.query(`SELECT
  (SELECT COUNT(*) FROM ${outbox}) AS pending,
  (SELECT COUNT(*) FROM ${outbox} WHERE attempts > 0) AS retrying,
  (SELECT COUNT(*) FROM ${qualified(table, '_dead_letters')}) AS dead,
  COALESCE((SELECT TIMESTAMPDIFF(MICROSECOND, created_at, UTC_TIMESTAMP(6)) DIV 1000 FROM ${outbox} ORDER BY id LIMIT 1), 0) AS oldest`)
    const row = result.rows[0] ?? {}
    return {
      pending: Number(row.pending),
      retrying: Number(row.retrying),
      deadLetters: Number(row.dead),
      oldestPendingMs: Math.max(0, Number(row.oldest)),
    }
  })
}

function toDeadLetter(row: Record<string, unknown>): DeadLetter {
  return {
    id: String(row.id),
    messageId: String(row.message_id),
    topic: String(row.topic),
    key: (row.key as Buffer | null) ?? null,
    value: (row.value as Buffer | null) ?? null,
    headers: decodeHeaders(row.headers === null ? null : JSON.parse(String(row.headers))),
    attempts: Number(row.attempts),
    errors: JSON.parse(String(row.errors)) as DeadLetter['errors'],
    createdAt: new Date(String(row.created_at)),
    deadAt: new Date(String(row.dead_at)),
  }
}
