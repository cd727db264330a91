// A stand-in OutboxAdmin for the dashboard's tests until the real admin (src/admin) lands: the
// outbox's own deadLetters() on a real PostgreSQL outbox, and the figures from one plain GROUP BY
// (one statement, so the totals and the topics come from the same snapshot; stats() on its own
// session beside it could see a commit the GROUP BY did not). Relay nodes are not read (empty
// list). Replace with the real admin at merge.
import type pg from 'pg'
import type { PgOutbox } from '../../src/adapters/pg/index.ts'
import type { OutboxAdmin, OutboxStatus, TopicStatus } from '../../src/admin/types.ts'
import type { TopicMap } from '../../src/index.ts'

export function pgDashboardAdmin<M extends TopicMap>(
  outbox: PgOutbox<M>,
  pool: pg.Pool,
  schema: string,
  connection: string,
): OutboxAdmin {
  const table = `"${schema}"."outbox"`
  const deadTable = `"${schema}"."outbox_dead_letters"`
  return {
    database: 'PostgreSQL',
    async status(): Promise<OutboxStatus> {
      const [topics, clock] = await Promise.all([
        pool.query(`
          SELECT topic, sum(pending)::int AS pending, sum(ready)::int AS ready, sum(retrying)::int AS retrying,
                 sum(dead)::int AS dead, max(oldest)::bigint AS oldest
          FROM (
            SELECT topic, count(*) AS pending, count(*) FILTER (WHERE available_at <= now()) AS ready,
                   count(*) FILTER (WHERE attempts > 0 AND available_at > now()) AS retrying, 0 AS dead,
                   (extract(epoch FROM now() - min(created_at)) * 1000)::bigint AS oldest
            FROM ${table} GROUP BY topic
            UNION ALL
            SELECT topic, 0, 0, 0, count(*), 0 FROM ${deadTable} GROUP BY topic
          ) figures GROUP BY topic ORDER BY topic`),
        pool.query('SELECT now() AS at'),
      ])
      const perTopic: TopicStatus[] = topics.rows.map((row) => ({
        topic: row.topic,
        pending: row.pending,
        ready: row.ready,
        retrying: row.retrying,
        deadLetters: row.dead,
        oldestPendingMs: Number(row.oldest),
      }))
      const total = (field: 'pending' | 'ready' | 'retrying' | 'deadLetters') =>
        perTopic.reduce((sum, topic) => sum + topic[field], 0)
      return {
        at: clock.rows[0].at,
        pending: total('pending'),
        ready: total('ready'),
        retrying: total('retrying'),
        deadLetters: total('deadLetters'),
        oldestPendingMs: Math.max(0, ...perTopic.map((topic) => topic.oldestPendingMs)),
        exact: true,
        topics: perTopic,
        relays: [],
      }
    },
    deadLetters: outbox.deadLetters(connection),
    migrate: () => outbox.migrate(connection),
    migrationSql: () => outbox.migrationSql(),
    close: async () => {},
  }
}
