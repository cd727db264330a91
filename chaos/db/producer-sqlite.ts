/**
 * The producer's SQLite half (better-sqlite3 adapter): `outbox.transaction(db, fn)`, and the app's
 * own BEGIN IMMEDIATE/COMMIT with `outbox.in(db)`, on the process's one handle.
 */
import Database from 'better-sqlite3'
import { createBetterSqliteOutbox } from '../../src/adapters/better-sqlite3/index.ts'
import { orderingHash } from '../../src/core/record.ts'
import { encodeHeaders } from '../../src/dialects/shared/stored-columns.ts'
import { type ChaosEvent, INTERNAL_TOPIC, producerTopics, SQLITE_BUSY_TIMEOUT_MS } from '../shared.ts'
import type { ChaosTx, OpenProducerDb } from './producer-db.ts'

export const openProducerDb: OpenProducerDb = (config) => {
  const topicMap = producerTopics(config.topics)
  const outbox = createBetterSqliteOutbox({ topics: topicMap, schema: config.schema })
  const db = new Database(config.databaseUrl, { timeout: SQLITE_BUSY_TIMEOUT_MS })
  // better-sqlite3 waits for a lock synchronously, blocking the event loop: a second handle of
  // this process waiting on the first would wait for the whole timeout. So one handle, and the
  // writers' transactions (either style) one after the other.
  let queue: Promise<unknown> = Promise.resolve()
  const serial = <R>(run: () => Promise<R>): Promise<R> => {
    const result = queue.then(run, run)
    queue = result.catch(() => {})
    return result
  }

  const tx: ChaosTx = {
    async insertBusiness(rows) {
      const insert = db.prepare('INSERT INTO business (id, topic, key) VALUES (?, ?, ?)')
      for (const row of rows) insert.run(...row)
    },
    async insertInternalTopicRow(event: ChaosEvent) {
      const record = topicMap.orders.toRecord(event)
      db.prepare(
        `INSERT INTO "${config.schema}_outbox" (topic, key, value, headers, ordering_hash) VALUES (?, ?, ?, ?, ?)`,
      ).run(
        INTERNAL_TOPIC,
        record.key,
        record.value,
        encodeHeaders(record.headers),
        record.key === null ? null : orderingHash(INTERNAL_TOPIC, record.key),
      )
    },
  }

  return {
    helperTransaction: (fn, stage) =>
      serial(() =>
        outbox.transaction(db, async (_db, topics) => {
          await fn(tx, topics)
          stage.committing = true
        }),
      ),
    ownTransaction: (fn, stage) =>
      serial(async () => {
        db.exec('BEGIN IMMEDIATE')
        try {
          await fn(tx, outbox.in(db))
          stage.committing = true
          db.exec('COMMIT')
        } catch (error) {
          if (db.inTransaction) db.exec('ROLLBACK')
          throw error
        }
      }),
    async end() {
      db.close()
    },
  }
}
