import { boundedEstimate, buildStatus, type CappedSample, type SampledTopic } from '../../admin/figures.ts'
import type { OutboxStatus } from '../../admin/types.ts'
import { invalidArgument } from '../../core/errors.ts'
import type { OutboxTable } from '../../core/seams.ts'
import type { SqliteConnection } from './connection.ts'
import { qualified } from './names.ts'
import { NOW_MS } from './sql.ts'

type Borrow = () => { connection: SqliteConnection; owned: boolean }

/**
 * `status()` on SQLite, every statement bounded by the cap: the oldest `cap + 1` rows by rowid,
 * the retrying rows through the partial retry index, and, when the sample overflows, the id range
 * (SQLite keeps no row-count statistics; two rowid look-ups). No relays: SQLite has no sessions.
 */
export async function sqliteStatus(table: OutboxTable, borrow: Borrow, cap: number): Promise<OutboxStatus> {
  const { connection, owned } = borrow()
  try {
    if (connection.inTransaction) {
      throw invalidArgument('a transaction is open on this database handle; call status() outside of it')
    }
    const outbox = qualified(table)
    const dead = qualified(table, '_dead_letters')
    const limit = Math.trunc(cap) + 1
    const head =
      connection.all(`SELECT ${NOW_MS} AS at,
  COALESCE(${NOW_MS} - (SELECT created_at FROM ${outbox} ORDER BY id LIMIT 1), 0) AS oldest`)[0] ?? {}
    const now = Number(head.at)
    const pendingRows = connection.all(`SELECT topic, COUNT(*) AS n, ${NOW_MS} - MIN(created_at) AS oldest
FROM (SELECT topic, created_at FROM ${outbox} ORDER BY id LIMIT ${limit}) GROUP BY topic`)
    const retryingRows = connection.all(`SELECT topic, COUNT(*) AS n
FROM (SELECT topic FROM ${outbox} WHERE attempts > 0 AND available_at > ${NOW_MS} LIMIT ${limit}) GROUP BY topic`)
    const deadRows = connection.all(`SELECT topic, COUNT(*) AS n
FROM (SELECT topic FROM ${dead} ORDER BY id LIMIT ${limit}) GROUP BY topic`)
    return buildStatus({
      at: new Date(now),
      cap,
      oldestPendingMs: Number(head.oldest ?? 0),
      pending: overflowing(connection, topics(pendingRows), cap, outbox),
      retrying: topics(retryingRows),
      dead: overflowing(connection, topics(deadRows), cap, dead),
      relays: [],
    })
  } finally {
    if (owned) connection.close()
  }
}

function topics(rows: Record<string, unknown>[]): SampledTopic[] {
  return rows.map((row) => ({
    topic: String(row.topic),
    count: Number(row.n),
    ...(row.oldest === undefined ? {} : { oldestMs: Number(row.oldest) }),
  }))
}

function overflowing(
  connection: SqliteConnection,
  sampled: SampledTopic[],
  cap: number,
  relation: string,
): CappedSample {
  const count = sampled.reduce((sum, topic) => sum + topic.count, 0)
  if (count <= cap) return { topics: sampled }
  const row = connection.all(
    `SELECT (SELECT MAX(id) FROM ${relation}) - (SELECT MIN(id) FROM ${relation}) + 1 AS id_range`,
  )[0]
  const idRange = row?.id_range === null || row?.id_range === undefined ? undefined : Number(row.id_range)
  return { topics: sampled, estimate: boundedEstimate(undefined, count, idRange) }
}
