// Consumer throughput with the inbox against a bare consumer of the same client (issue 21).
// Usage: [KAFKA_BROKERS=host:port] node bench/consumer.ts [--messages=200000] [--write-messages=30000] [--partitions=4] [--reps=5]
//          [--warmup=1] [--database=postgres|mysql|both] [--batch-size=500] [--max-in-flight=10000]
// Per database, one topic of 256-byte messages read again and again, each run by a new consumer
// group from the start; the four variants of bench/lib/consumer-bench.ts, their order alternating
// between repetitions.
// A run is timed from its first handled message to its last, so the group join is left out (it
// is the broker's, the same for every variant). Ratios are taken per repetition (the variants of
// one repetition ran side by side), then their median and spread are printed, after warm-up
// repetitions that are not counted.
// KAFKA_BROKERS (default: a broker of its own, started and stopped here), DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/test), MYSQL_URL (default mysql://root@127.0.0.1:3306/test).
import { cpus } from 'node:os'
import { parseArgs } from 'node:util'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { defineTopic } from '../src/core/topic.ts'
import { createTopic, deleteTopic, uniqueName } from '../test/consumer/kafka.ts'
import {
  type ConsumerBenchDatabase,
  type Event,
  fillTopic,
  parseSizes,
  repetitions,
  sizeOptions,
  summarize,
} from './lib/consumer-bench.ts'
import { loadAverage } from './lib/env.ts'
import { benchBrokers } from './lib/kafka.ts'

const { values } = parseArgs({
  options: {
    ...sizeOptions({ messages: 200000, reps: 5 }),
    database: { type: 'string', default: 'both' },
  },
})
const { total, writeTotal, partitions, reps, warmup, batchSize, maxInFlight } = parseSizes(values)
const databases = values.database === 'both' ? ['postgres', 'mysql'] : [values.database]
if (!databases.every((d) => d === 'postgres' || d === 'mysql')) {
  console.error('--database must be postgres, mysql or both')
  process.exit(1)
}
const broker = await benchBrokers()
const brokers = broker.brokers
const kafka = { brokers, clientId: 'k-entity-bench-consumer' }
const common = { logger: false as const, maxWaitMs: 100, maxInFlight }

/** What differs between the databases: the pool, the effect's INSERT and the cleanup. */
interface Database extends ConsumerBenchDatabase {
  name: string
  drop(): Promise<void>
}

function postgres(topic: string, schema: string): Database & { setUp(): Promise<void> } {
  const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
  const pool = new pg.Pool({ connectionString: url, max: partitions + 2 })
  const events = defineTopic<Event>({ name: topic, key: (event) => String(event.id) })
  const outbox = createPgOutbox({ topics: { events }, schema, kafka })
  const insert = `INSERT INTO "${schema}".effects (id) VALUES ($1)`
  return {
    name: 'PostgreSQL (pg)',
    async setUp() {
      await pool.query(`CREATE SCHEMA "${schema}"`)
      await pool.query(`CREATE TABLE "${schema}".effects (id integer PRIMARY KEY)`)
      await outbox.migrateInbox(url)
    },
    consumeInbox: (groupId, write, first) =>
      outbox.consume(events, {
        ...common,
        groupId,
        db: pool,
        batchSize,
        handler: async (message, client) => {
          first()
          if (write) await client.query(insert, [(message.value as Event).id])
        },
      }),
    writeAutocommit: (id) => pool.query(insert, [id]),
    async reset() {
      await pool.query(`TRUNCATE "${schema}".effects, "${schema}".outbox_inbox`)
    },
    async drop() {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
      await pool.end()
    },
  }
}

function mariadb(topic: string, schema: string): Database & { setUp(): Promise<void> } {
  const url = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
  const pool = mysql.createPool({ uri: url, connectionLimit: partitions + 2 })
  const events = defineTopic<Event>({ name: topic, key: (event) => String(event.id) })
  const outbox = createMysqlOutbox({ topics: { events }, schema, kafka })
  const insert = `INSERT INTO \`${schema}\`.effects (id) VALUES (?)`
  return {
    name: 'MariaDB/MySQL (mysql2)',
    async setUp() {
      await pool.query(`CREATE DATABASE \`${schema}\``)
      await pool.query(`CREATE TABLE \`${schema}\`.effects (id INT PRIMARY KEY) ENGINE=InnoDB`)
      await outbox.migrateInbox(url)
    },
    consumeInbox: (groupId, write, first) =>
      outbox.consume(events, {
        ...common,
        groupId,
        db: pool,
        batchSize,
        handler: async (message, connection) => {
          first()
          if (write) await connection.query(insert, [(message.value as Event).id])
        },
      }),
    writeAutocommit: (id) => pool.query(insert, [id]),
    async reset() {
      await pool.query(`TRUNCATE TABLE \`${schema}\`.effects`)
      await pool.query(`TRUNCATE TABLE \`${schema}\`.outbox_inbox`)
    },
    async drop() {
      await pool.query(`DROP DATABASE IF EXISTS \`${schema}\``)
      await pool.end()
    },
  }
}

async function bench(kind: string): Promise<void> {
  const topic = uniqueName('ke-bench-consumer')
  const schema = uniqueName('ke_bench_consumer').replaceAll('-', '_')
  const db = kind === 'postgres' ? postgres(topic, schema) : mariadb(topic, schema)
  try {
    await createTopic(brokers, topic, partitions)
    await db.setUp()
    await fillTopic(brokers, topic, total)
    const rates = await repetitions(
      db,
      defineTopic<Event>({ name: topic, key: (event) => String(event.id) }),
      {
        total,
        writeTotal,
        reps,
        warmup,
        kafka,
        common,
      },
    )
    summarize(
      `${db.name}: ${total} messages of 256 bytes (${writeTotal} with a write), ${partitions} partitions, batchSize ${batchSize}, maxInFlight ${maxInFlight}, ${reps} reps after ${warmup} warm-up (median, min-max)`,
      rates,
    )
  } finally {
    await db.drop().catch((error: unknown) => console.error(String(error)))
    await deleteTopic(brokers, topic).catch(() => {})
  }
}

try {
  console.log(`consumer: ${cpus().length} CPUs, load ${loadAverage()}`)
  for (const kind of databases) await bench(kind)
} finally {
  await broker.stop()
}
