/**
 * The producer's MariaDB half (mysql2 adapter): `outbox.transaction(pool, fn)`, and the app's own
 * beginTransaction()/commit() on a pooled connection with `outbox.in(connection)`. MySQL writes
 * the outbox rows at produce(), so only the COMMIT is left once `stage.committing` is set.
 */
import mysql from 'mysql2/promise'
import { createMysqlOutbox } from '../../src/adapters/mysql2/index.ts'
import { orderingHash } from '../../src/core/record.ts'
import { encodeHeaders } from '../../src/dialects/shared/stored-columns.ts'
import { type ChaosEvent, INTERNAL_TOPIC, producerTopics } from '../shared.ts'
import type { ChaosTx, OpenProducerDb } from './producer-db.ts'

export const openProducerDb: OpenProducerDb = (config) => {
  const topicMap = producerTopics(config.topics)
  const outbox = createMysqlOutbox({ topics: topicMap, schema: config.schema })
  const pool = mysql.createPool({ uri: config.databaseUrl, connectionLimit: config.writers + 1 })

  const txOf = (connection: mysql.PoolConnection): ChaosTx => ({
    async insertBusiness(rows) {
      await connection.query(`INSERT INTO \`${config.schema}\`.business (id, topic, \`key\`) VALUES ?`, [
        rows,
      ])
    },
    async insertInternalTopicRow(event: ChaosEvent) {
      const record = topicMap.orders.toRecord(event)
      const headers = encodeHeaders(record.headers)
      await connection.query(
        `INSERT INTO \`${config.schema}\`.outbox (topic, \`key\`, value, headers, ordering_hash)
         VALUES (?, ?, ?, CONVERT(? USING utf8mb4), ?)`,
        [
          INTERNAL_TOPIC,
          record.key,
          record.value,
          headers === null ? null : Buffer.from(headers),
          record.key === null ? null : orderingHash(INTERNAL_TOPIC, record.key),
        ],
      )
    },
  })

  return {
    helperTransaction: (fn, stage) =>
      outbox.transaction(pool, async (connection, topics) => {
        await fn(txOf(connection), topics)
        stage.committing = true
      }),
    async ownTransaction(fn, stage) {
      const connection = await pool.getConnection()
      let healthy = true
      try {
        await connection.beginTransaction()
        await fn(txOf(connection), outbox.in(connection))
        stage.committing = true
        await connection.commit()
      } catch (error) {
        await connection.rollback().catch(() => {
          healthy = false
        })
        throw error
      } finally {
        // A connection whose ROLLBACK failed may still hold the transaction: never hand it back.
        if (healthy) connection.release()
        else connection.destroy()
      }
    },
    end: () => pool.end(),
  }
}
