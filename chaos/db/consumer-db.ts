/**
 * A consumer process's database half: `outbox.consume()` with the inbox on the run's database,
 * one consumer per delivered topic, whose handler applies the message's effect in the inbox
 * transaction: a row per message id (a second application of the same id increments its `n`,
 * which the runner counts as a duplicated effect). The row's `applied` number comes from a
 * sequence, so the runner can tell the order in which effects of a key were applied.
 * Loaded by name, so a consumer process never loads another database's driver.
 */
import type { KafkaConsumer } from '../../src/consumer/kafka-consumer.ts'
import type { Logger } from '../../src/core/logger.ts'
import {
  type ChaosEvent,
  type ConsumerConfig,
  chaosTopics,
  EFFECTS_TABLE,
  SQLITE_BUSY_TIMEOUT_MS,
  schemaTable,
} from '../shared.ts'

export interface ChaosConsumers {
  consumers: KafkaConsumer<ChaosEvent>[]
  end(): Promise<void>
}

const ACCESSORS = ['orders', 'payments'] as const

/** One line per distinct message per this many ms: a database restart makes every try warn. */
const LOG_QUIET_MS = 5000

/** Warnings and errors on stderr, each distinct message at most once per LOG_QUIET_MS. */
function chaosLogger(config: ConsumerConfig): Logger {
  const last = new Map<string, number>()
  const write = (level: string) => (context: object | string, message?: string) => {
    const text = message ?? (typeof context === 'string' ? context : '')
    const detail = typeof context === 'string' ? '' : JSON.stringify(context)
    const now = Date.now()
    if (now - (last.get(text) ?? 0) < LOG_QUIET_MS) return
    last.set(text, now)
    process.stderr.write(
      `consumer #${config.index} life ${config.life} ${level}: ${text} ${detail.slice(0, 300)}\n`,
    )
  }
  return { error: write('error'), warn: write('warn'), info: () => {} }
}

/** Consumer options shared by every database: quick rebalances after a kill -9, some redeliveries. */
function groupOptions(config: ConsumerConfig, accessor: (typeof ACCESSORS)[number], logger: Logger) {
  return {
    groupId: `${config.group}-${accessor}`,
    logger,
    maxWaitMs: 100,
    // A killed non-static member's partitions move after 6 s, not the default 30 s.
    sessionTimeoutMs: 6000,
    // Offsets committed a second apart: every kill leaves handled messages to be delivered again,
    // which the inbox must skip.
    commitIntervalMs: 1000,
    // Consumer 0 comes back under the same name (gets its partitions back at once); consumer 1
    // joins as a new member each life (the group waits for the dead one's session to expire).
    ...(config.index === 0 ? { groupInstanceId: `chaos-consumer-${config.index}` } : {}),
  }
}

export async function openConsumers(config: ConsumerConfig): Promise<ChaosConsumers> {
  const logger = chaosLogger(config)
  const topics = chaosTopics(config.topics)
  const kafka = { brokers: config.brokers, clientId: `k-entity-chaos-consumer-${config.index}` }
  const effectsTable = schemaTable(config.db, config.schema, EFFECTS_TABLE)
  // Where the applied copy was read (partition, offset) and by whom: an out-of-order report can
  // then tell a first copy from a relay's resend, and which consumer life applied it.
  const effects = (
    accessor: string,
    message: { value: ChaosEvent | null; partition: number; offset: bigint },
  ) => {
    const event = message.value as ChaosEvent
    return [
      event.id,
      accessor,
      event.key,
      event.seq,
      config.index,
      config.life,
      message.partition,
      String(message.offset),
    ]
  }
  if (config.db === 'mariadb') {
    const mysql = (await import('mysql2/promise')).default
    const { createMysqlOutbox } = await import('../../src/adapters/mysql2/index.ts')
    const pool = mysql.createPool({ uri: config.databaseUrl, connectionLimit: 6 })
    const outbox = createMysqlOutbox({ topics, schema: config.schema, kafka })
    const consumers = ACCESSORS.map((accessor) =>
      outbox.consume(topics[accessor], {
        ...groupOptions(config, accessor, logger),
        db: pool,
        handler: async (message, connection) => {
          await connection.query(
            `INSERT INTO ${effectsTable} (id, topic, \`key\`, seq, consumer, life, kpartition, koffset, n)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) ON DUPLICATE KEY UPDATE n = n + 1`,
            effects(accessor, message),
          )
        },
      }),
    )
    return { consumers, end: () => pool.end() }
  }
  if (config.db === 'sqlite') {
    const Database = (await import('better-sqlite3')).default
    const { createBetterSqliteOutbox } = await import('../../src/adapters/better-sqlite3/index.ts')
    // One handle for both consumers, as the producers have: better-sqlite3 waits for the write
    // lock synchronously, so a second handle of this process would wait on the first for the
    // whole timeout. The outbox runs the consumers' transactions on it one after the other.
    const db = new Database(config.databaseUrl, { timeout: SQLITE_BUSY_TIMEOUT_MS })
    const outbox = createBetterSqliteOutbox({ topics, schema: config.schema, kafka })
    // The effects table exists before any consumer starts (the runner creates it).
    const insert = db.prepare(
      `INSERT INTO ${effectsTable} (id, topic, "key", seq, consumer, life, kpartition, koffset, n)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1`,
    )
    const consumers = ACCESSORS.map((accessor) =>
      outbox.consume(topics[accessor], {
        ...groupOptions(config, accessor, logger),
        db,
        // Synchronous, in the inbox transaction on `db` (the handle the statement was prepared on).
        handler: (message) => {
          insert.run(...effects(accessor, message))
        },
      }),
    )
    return {
      consumers,
      end: async () => {
        db.close()
      },
    }
  }
  const pg = (await import('pg')).default
  const { createPgOutbox } = await import('../../src/adapters/pg/index.ts')
  const pool = new pg.Pool({
    connectionString: config.databaseUrl,
    application_name: config.applicationName,
    max: 6,
  })
  // A database restart ends idle pooled sessions; the next checkout reconnects.
  pool.on('error', () => {})
  const outbox = createPgOutbox({ topics, schema: config.schema, kafka })
  const consumers = ACCESSORS.map((accessor) =>
    outbox.consume(topics[accessor], {
      ...groupOptions(config, accessor, logger),
      db: pool,
      handler: async (message, client) => {
        await client.query(
          `INSERT INTO ${effectsTable} (id, topic, key, seq, consumer, life, kpartition, koffset, n)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1) ON CONFLICT (id) DO UPDATE SET n = ${EFFECTS_TABLE}.n + 1`,
          effects(accessor, message),
        )
      },
    }),
  )
  return { consumers, end: () => pool.end() }
}
