/**
 * The producer's PostgreSQL half: `outbox.transaction(pool, fn)`, and the app's own BEGIN/COMMIT
 * with `outbox.in(client, { holdWrites: true })` (both hold their writes until the COMMIT).
 */
import pg from 'pg'
import { createPgOutbox } from '../../src/adapters/pg/index.ts'
import { withPoolClient } from '../../src/adapters/pg/pool-client.ts'
import { orderingHash } from '../../src/core/record.ts'
import { encodeHeaders } from '../../src/dialects/shared/stored-columns.ts'
import { type ChaosEvent, INTERNAL_TOPIC, producerTopics } from '../shared.ts'
import type { ChaosTx, OpenProducerDb } from './producer-db.ts'

export const openProducerDb: OpenProducerDb = (config) => {
  const topicMap = producerTopics(config.topics)
  const outbox = createPgOutbox({ topics: topicMap, schema: config.schema })
  const pool = new pg.Pool({
    connectionString: config.databaseUrl,
    application_name: config.applicationName,
    max: config.writers + 1,
  })
  pool.on('error', () => {})
  const business = `"${config.schema}".business`

  const txOf = (client: pg.PoolClient): ChaosTx => ({
    async insertBusiness(rows) {
      await client.query(
        `INSERT INTO ${business} (id, topic, key) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])`,
        [rows.map((r) => r[0]), rows.map((r) => r[1]), rows.map((r) => r[2])],
      )
    },
    async insertInternalTopicRow(event: ChaosEvent) {
      const record = topicMap.orders.toRecord(event)
      await client.query(
        `INSERT INTO "${config.schema}".outbox (topic, key, value, headers, ordering_hash)
         VALUES ($1, $2, $3, $4::text::jsonb, $5)`,
        [
          INTERNAL_TOPIC,
          record.key,
          record.value,
          encodeHeaders(record.headers),
          record.key === null ? null : orderingHash(INTERNAL_TOPIC, record.key),
        ],
      )
    },
  })

  return {
    helperTransaction: (fn, stage) =>
      outbox.transaction(pool, async (client, topics) => {
        await fn(txOf(client), topics)
        stage.committing = true
      }),
    ownTransaction: (fn, stage) =>
      withPoolClient(pool, async (client) => {
        await client.query('BEGIN')
        try {
          await fn(txOf(client), outbox.in(client, { holdWrites: true }))
          stage.committing = true
          await client.query('COMMIT')
        } catch (error) {
          await client.query('ROLLBACK').catch(() => {})
          throw error
        }
      }),
    end: () => pool.end(),
  }
}
