import { databaseCodes, type InboxSql, inboxScript, purgeInBatches } from '../../consumer/inbox-sql.ts'
import { errorChain } from '../../core/error-chain.ts'
import { internalError } from '../../core/errors.ts'
import type { OutboxTable } from '../../core/seams.ts'
import { withSession } from '../../outbox/parts.ts'
import { encodeHeaders } from '../shared/stored-columns.ts'
import { qualified } from './names.ts'
import { lastResult, type PgSession } from './session.ts'

const UNIQUE_VIOLATION = '23505'

function statements(table: OutboxTable): string[] {
  const inbox = qualified(table, '_inbox')
  const dead = qualified(table, '_consumer_dead_letters')
  return [
    `CREATE SCHEMA IF NOT EXISTS "${table.schema}"`,
    `CREATE TABLE IF NOT EXISTS ${inbox} (
  consumer_group text NOT NULL,
  message_key text NOT NULL,
  topic text NOT NULL,
  partition integer NOT NULL,
  "offset" bigint NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  CONSTRAINT "${table.table}_inbox_pkey" PRIMARY KEY (consumer_group, message_key)
)`,
    `CREATE INDEX IF NOT EXISTS "${table.table}_inbox_expires_idx" ON ${inbox} (expires_at)`,
    `CREATE TABLE IF NOT EXISTS ${dead} (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  consumer_group text NOT NULL,
  topic text NOT NULL,
  partition integer NOT NULL,
  "offset" bigint NOT NULL,
  key bytea,
  value bytea,
  headers jsonb,
  error text NOT NULL,
  attempts integer NOT NULL,
  dead_at timestamptz NOT NULL DEFAULT now()
)`,
    `CREATE INDEX IF NOT EXISTS "${table.table}_consumer_dead_letters_group_idx" ON ${dead} (consumer_group, id)`,
  ]
}

export const postgresInbox: InboxSql<Promise<PgSession>> = {
  insert: (table, entry) => ({
    text: `INSERT INTO ${qualified(table, '_inbox')} (consumer_group, message_key, topic, partition, "offset", expires_at)
VALUES ($1, $2, $3, $4, $5::bigint, now() + $6::bigint * interval '1 millisecond')`,
    values: [
      entry.group,
      entry.key,
      entry.topic,
      entry.partition,
      String(entry.offset),
      String(entry.retentionMs),
    ],
  }),
  // Parallel arrays through unnest keep the text constant whatever the batch's size, so it is
  // prepared once per connection: a VALUES list of 200 rows (800 parameters) is parsed and planned
  // anew per batch, which took 3-4 times as long as the insertion itself.
  insertMany: (table, entries) => {
    const first = entries[0]
    if (first === undefined) throw internalError('postgresInbox.insertMany() got no entries')
    const keys: string[] = []
    const topics: string[] = []
    const partitions: number[] = []
    const offsets: string[] = []
    for (const entry of entries) {
      keys.push(entry.key)
      topics.push(entry.topic)
      partitions.push(entry.partition)
      offsets.push(String(entry.offset))
    }
    return {
      name: `ke_inbox_insert_${table.schema}_${table.table}`,
      text: `INSERT INTO ${qualified(table, '_inbox')} (consumer_group, message_key, topic, partition, "offset", expires_at)
SELECT $1, m.key, m.topic, m.partition, m."offset", now() + $2::bigint * interval '1 millisecond'
FROM unnest($3::text[], $4::text[], $5::int[], $6::bigint[]) AS m(key, topic, partition, "offset")`,
      // Group and retention are the batch's own: sent once.
      values: [first.group, String(first.retentionMs), keys, topics, partitions, offsets],
    }
  },
  deadLetter: (table, dead) => ({
    text: `INSERT INTO ${qualified(table, '_consumer_dead_letters')} (consumer_group, topic, partition, "offset", key, value, headers, error, attempts)
VALUES ($1, $2, $3, $4::bigint, $5, $6, $7::jsonb, $8, $9)`,
    values: [
      dead.group,
      dead.topic,
      dead.partition,
      String(dead.offset),
      dead.key,
      dead.value,
      encodeHeaders([...dead.headers]),
      dead.error,
      dead.attempts,
    ],
  }),
  purgeBatch: (table, limit) => ({
    text: `DELETE FROM ${qualified(table, '_inbox')} WHERE ctid IN (SELECT ctid FROM ${qualified(table, '_inbox')} WHERE expires_at < now() LIMIT ${Math.trunc(limit)})`,
    values: [],
  }),
  isDuplicate: (error) =>
    errorChain(error).some(
      (link) =>
        databaseCodes(link).includes(UNIQUE_VIOLATION) &&
        // A driver that names the constraint (node-postgres, postgres.js) must name the inbox's;
        // Prisma's adapter gives { fields } or { index } instead, or nothing.
        (typeof link.constraint !== 'string' || link.constraint.endsWith('_inbox_pkey')),
    ),
  migrate: (table, open) =>
    withSession(open, async (session) => {
      // Two instances creating the same table at once can collide on the catalog's own unique
      // index; a transaction-scoped advisory lock on the inbox's name makes the second wait.
      await session.query('BEGIN')
      try {
        await session.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [
          `k-entity inbox ${table.schema}.${table.table}`,
        ])
        for (const statement of statements(table)) await session.query(statement)
        await session.query('COMMIT')
      } catch (error) {
        await session.query('ROLLBACK').catch(() => {})
        throw error
      }
    }),
  script: (table) => inboxScript(statements(table)),
  purge: (table, open, batchSize) =>
    withSession(open, (session) =>
      purgeInBatches(
        batchSize,
        async () =>
          lastResult(await session.query(postgresInbox.purgeBatch(table, batchSize).text)).rowCount ?? 0,
      ),
    ),
}
