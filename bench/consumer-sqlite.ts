// Consumer throughput with the inbox against a bare consumer of the same client, on SQLite
// (issue 21): bench/consumer.ts's method for PostgreSQL and MariaDB, applied to a database file.
// Usage: [KAFKA_BROKERS=host:port] node bench/consumer-sqlite.ts [--messages=200000] [--write-messages=30000] [--partitions=4]
//          [--reps=5] [--warmup=1] [--driver=better-sqlite3|node-sqlite|both] [--batch-size=500]
//          [--max-in-flight=10000] [--synchronous=normal|full]
// Per driver, one database file in WAL mode in a temp dir made for the run (deleted at the end)
// and one topic of 256-byte messages read again and again, each run by a new consumer group from
// the start; the four variants of bench/lib/consumer-bench.ts, their order alternating between
// repetitions. Every variant uses the app's one handle (SQLite has no pool), with one prepared
// INSERT. A run is timed from its first handled message to its last, so the group join is left
// out. Ratios are taken per repetition (the variants of one repetition ran side by side), then
// their median and spread are printed, after warm-up repetitions that are not counted.
// KAFKA_BROKERS: default, a broker of its own, started and stopped here.
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import BetterSqlite from 'better-sqlite3'
import { createBetterSqliteOutbox } from '../src/adapters/better-sqlite3/index.ts'
import type { KafkaConsumer } from '../src/consumer/kafka-consumer.ts'
import { defineTopic, type Topic } from '../src/core/topic.ts'
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
import { parseSqliteOptions, type SqliteDriver } from './lib/sqlite-options.ts'

const { values } = parseArgs({
  options: {
    ...sizeOptions({ messages: 200000, reps: 5 }),
    driver: { type: 'string', default: 'both' },
    synchronous: { type: 'string', default: 'normal' },
  },
})
const { total, writeTotal, partitions, reps, warmup, batchSize, maxInFlight } = parseSizes(values)
const { drivers, synchronous } = parseSqliteOptions(values)
const broker = await benchBrokers()
const brokers = broker.brokers
const kafka = { brokers, clientId: 'k-entity-bench-consumer-sqlite' }
const common = { logger: false as const, maxWaitMs: 100, maxInFlight }
/** PRAGMA synchronous reads back as a number. */
const SYNCHRONOUS_NAMES = ['OFF', 'NORMAL', 'FULL', 'EXTRA']
/** SQLite has no schemas: the outbox's schema is the prefix of its tables' names. */
const SCHEMA = 'ke_bench'
const INBOX_TABLE = `"${SCHEMA}_outbox_inbox"`

/** What differs between the drivers: the handle, its outbox and its prepared INSERT. */
interface SqliteBench extends ConsumerBenchDatabase {
  name: string
  /** The handle's settings as read back, so the output says what was measured. */
  settings(): string
  reset(): void
  close(): void
}

/** Both drivers' inbox consumer: the no-op handler, or the one prepared INSERT per message. */
function inboxVariant(
  consume: (options: {
    logger: false
    maxWaitMs: number
    maxInFlight: number
    groupId: string
    batchSize: number
    handler: (message: { value: unknown }) => void
  }) => KafkaConsumer<Event>,
  insert: { run(id: number): unknown },
): SqliteBench['consumeInbox'] {
  return (groupId, write, first) =>
    consume({
      ...common,
      groupId,
      batchSize,
      handler: (message) => {
        first()
        if (write) insert.run((message.value as Event).id)
      },
    })
}

function betterSqlite(file: string, events: Topic<Event>): SqliteBench {
  const db = new BetterSqlite(file)
  db.pragma('journal_mode = WAL')
  db.pragma(`synchronous = ${synchronous}`)
  db.exec('CREATE TABLE effects (id INTEGER PRIMARY KEY)')
  const outbox = createBetterSqliteOutbox({ topics: { events }, schema: SCHEMA, kafka })
  outbox.migrateInbox(db)
  const insert = db.prepare('INSERT INTO effects (id) VALUES (?)')
  return {
    name: `SQLite (better-sqlite3 ${versionOf('better-sqlite3')}, SQLite ${db.prepare('SELECT sqlite_version() AS v').pluck().get()})`,
    consumeInbox: inboxVariant((options) => outbox.consume(events, { ...options, db }), insert),
    writeAutocommit: (id) => insert.run(id),
    settings: () =>
      `journal_mode ${db.pragma('journal_mode', { simple: true })}, synchronous ${SYNCHRONOUS_NAMES[Number(db.pragma('synchronous', { simple: true }))]}`,
    reset() {
      db.exec(`DELETE FROM effects; DELETE FROM ${INBOX_TABLE}`)
    },
    close: () => db.close(),
  }
}

async function nodeSqlite(file: string, events: Topic<Event>): Promise<SqliteBench> {
  // Loaded when used: on Node 22 node:sqlite prints an ExperimentalWarning once loaded.
  const { DatabaseSync } = await import('node:sqlite')
  const { createNodeSqliteOutbox } = await import('../src/adapters/node-sqlite/index.ts')
  const db = new DatabaseSync(file)
  db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = ${synchronous}`)
  db.exec('CREATE TABLE effects (id INTEGER PRIMARY KEY)')
  const outbox = createNodeSqliteOutbox({ topics: { events }, schema: SCHEMA, kafka })
  outbox.migrateInbox(db)
  const insert = db.prepare('INSERT INTO effects (id) VALUES (?)')
  const pragma = (name: string) => Object.values(db.prepare(`PRAGMA ${name}`).get() ?? {})[0]
  return {
    name: `SQLite (node:sqlite, Node ${process.versions.node}, SQLite ${process.versions.sqlite})`,
    consumeInbox: inboxVariant((options) => outbox.consume(events, { ...options, db }), insert),
    writeAutocommit: (id) => insert.run(id),
    settings: () =>
      `journal_mode ${pragma('journal_mode')}, synchronous ${SYNCHRONOUS_NAMES[Number(pragma('synchronous'))]}`,
    reset() {
      db.exec(`DELETE FROM effects; DELETE FROM ${INBOX_TABLE}`)
    },
    close: () => db.close(),
  }
}

function versionOf(pkg: string): string {
  return (createRequire(import.meta.url)(`${pkg}/package.json`) as { version: string }).version
}

async function bench(driver: SqliteDriver): Promise<void> {
  const topic = uniqueName('ke-bench-consumer-sqlite')
  const dir = mkdtempSync(join(tmpdir(), 'k-entity-bench-consumer-sqlite-'))
  const events = defineTopic<Event>({ name: topic, key: (event) => String(event.id) })
  let db: SqliteBench | undefined
  try {
    const file = join(dir, 'bench.db')
    db = driver === 'better-sqlite3' ? betterSqlite(file, events) : await nodeSqlite(file, events)
    await createTopic(brokers, topic, partitions)
    await fillTopic(brokers, topic, total)
    console.log(`${db.name}: ${db.settings()}; load average at start ${loadAverage()}`)
    const rates = await repetitions(db, events, { total, writeTotal, reps, warmup, kafka, common })
    summarize(
      `${db.name}: ${total} messages of 256 bytes (${writeTotal} with a write), ${partitions} partitions, batchSize ${batchSize}, maxInFlight ${maxInFlight}, ${reps} reps after ${warmup} warm-up (median, min-max); load average at end ${loadAverage()}`,
      rates,
    )
  } finally {
    db?.close()
    rmSync(dir, { recursive: true, force: true })
    await deleteTopic(brokers, topic).catch(() => {})
  }
}

try {
  for (const driver of drivers) await bench(driver)
} finally {
  await broker.stop()
}
