import {
  checkDeadLetterFilter,
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetters,
  type OutboxStats,
} from '../../core/dead-letters.ts'
import { invalidArgument } from '../../core/errors.ts'
import type { OutboxTable } from '../../core/seams.ts'
import { decodeHeaders } from '../shared/stored-columns.ts'
import type { SqliteConnection } from './connection.ts'
import { qualified } from './names.ts'

/** A connection for one admin call, and whether the call must close it. */
type Borrow = () => { connection: SqliteConnection; owned: boolean }

function where(filter: DeadLetterFilter): { sql: string; values: unknown[] } {
  const clauses: string[] = []
  const values: unknown[] = []
  if (filter.topic !== undefined) {
    clauses.push('topic = ?')
    values.push(filter.topic)
  }
  // checkDeadLetterFilter let only decimal ids through.
  if (filter.ids !== undefined) clauses.push(`id IN (${filter.ids.join(',')})`)
  if (filter.deadBefore !== undefined) {
    clauses.push('dead_at < ?')
    values.push(filter.deadBefore.getTime())
  }
  return { sql: clauses.length > 0 ? `WHERE ${clauses.join(' AND ')}` : '', values }
}

async function withConnection<R>(borrow: Borrow, fn: (connection: SqliteConnection) => R): Promise<R> {
  const { connection, owned } = borrow()
  try {
    // On the app's handle, an open transaction would swallow (and could roll back) this call.
    if (connection.inTransaction) {
      throw invalidArgument(
        'a transaction is open on this database handle; call deadLetters() and stats() outside of it',
      )
    }
    return fn(connection)
  } finally {
    if (owned) connection.close()
  }
}

export function sqliteDeadLetters(table: OutboxTable, borrow: Borrow): DeadLetters {
  const dead = qualified(table, '_dead_letters')
  return {
    list: (input) =>
      withConnection(borrow, (connection) => {
        const filter = checkDeadLetterFilter(input, 'list')
        const { sql, values } = where(filter)
        return connection
          .all(`SELECT * FROM ${dead} ${sql} ORDER BY id LIMIT ${filter.limit ?? 100}`, values)
          .map(toDeadLetter)
      }),
    count: (input) =>
      withConnection(borrow, (connection) => {
        const { sql, values } = where(checkDeadLetterFilter(input, 'count'))
        return Number(connection.all(`SELECT COUNT(*) AS n FROM ${dead} ${sql}`, values)[0]?.n)
      }),
    // One write transaction: SQLite's single writer puts the replayed messages behind everything
    // already committed, in their original order, like newly produced ones.
    replay: (input) =>
      withConnection(borrow, (connection) => {
        const { sql, values } = where(checkDeadLetterFilter(input, 'replay'))
        connection.exec('BEGIN IMMEDIATE')
        try {
          const picked = connection.run(
            `INSERT INTO ${qualified(table)} (topic, key, value, headers, ordering_hash)
SELECT topic, key, value, headers, ordering_hash FROM ${dead} ${sql} ORDER BY message_id`,
            values,
          )
          connection.run(`DELETE FROM ${dead} ${sql}`, values)
          connection.exec('COMMIT')
          return picked
        } catch (error) {
          if (connection.inTransaction) connection.exec('ROLLBACK')
          throw error
        }
      }),
    purge: (input) =>
      withConnection(borrow, (connection) => {
        const { sql, values } = where(checkDeadLetterFilter(input, 'purge'))
        return connection.run(`DELETE FROM ${dead} ${sql}`, values)
      }),
  }
}

export function sqliteStats(table: OutboxTable, borrow: Borrow): Promise<OutboxStats> {
  return withConnection(borrow, (connection) => {
    const outbox = qualified(table)
    const row =
      connection.all(`SELECT
  (SELECT COUNT(*) FROM ${outbox}) AS pending,
  (SELECT COUNT(*) FROM ${outbox} WHERE attempts > 0) AS retrying,
  (SELECT COUNT(*) FROM ${qualified(table, '_dead_letters')}) AS dead,
  (SELECT created_at FROM ${outbox} ORDER BY id LIMIT 1) AS oldest`)[0] ?? {}
    return {
      pending: Number(row.pending),
      retrying: Number(row.retrying),
      deadLetters: Number(row.dead),
      oldestPendingMs: row.oldest === null ? 0 : Math.max(0, Date.now() - Number(row.oldest)),
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
    headers: decodeHeaders(row.headers),
    attempts: Number(row.attempts),
    errors: JSON.parse(String(row.errors)) as DeadLetter['errors'],
    createdAt: new Date(Number(row.created_at)),
    deadAt: new Date(Number(row.dead_at)),
  }
}
