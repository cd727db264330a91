// Relay throughput per database (issue 19): the PostgreSQL (node-postgres), MySQL/MariaDB (mysql2)
// and SQLite (better-sqlite3) relays, each against the raw producer of the same Kafka client
// sending the same messages in batches of the same size, side by side in one run.
//
// Usage: node bench/dialects.ts [--count=50000] [--reps=3] [--only=postgres,mariadb,sqlite]
// Env: KAFKA_BROKERS (use that broker instead of starting one), DATABASE_URL, MYSQL_URL.
//
// Per database and repetition, raw and relay alternate which goes first. The outbox is filled
// first through the database's own adapter (not timed): the benchmark's 256-byte messages over 64
// keys with the delivery checker's headers. A relay with default options drains it in a process
// of its own. Its rate is counted from its first acknowledged batch to its last, so connecting
// and the first metadata round trips are left out, as the raw producer's warm-up leaves them out.
// The last repetition of each database is read back from Kafka and checked (lost, duplicates,
// per-key order).
import { fork } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import Database from 'better-sqlite3'
import mysql from 'mysql2/promise'
import { createBetterSqliteOutbox } from '../src/adapters/better-sqlite3/index.ts'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { RELAY_DEFAULTS } from '../src/index.ts'
import { checkDelivery, formatReport, observedFromConsumed, readTopic } from '../src/testing/index.ts'
import {
  createTopic,
  DATABASE_URL,
  deleteTopics,
  dropSchema,
  machineInfo,
  topicName,
  uniqueName,
} from './lib/env.ts'
import { benchBrokers } from './lib/kafka.ts'
import { metrics } from './lib/relay-metrics.ts'
import { median } from './lib/stats.ts'
import { runWorker } from './lib/workers.ts'
import {
  type BenchMessage,
  benchMessage,
  benchOutbox,
  benchTopic,
  PREFILL_CHUNK,
  prefill,
  trackedRange,
} from './lib/workload.ts'

const MYSQL_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
const DATABASES = ['postgres', 'mariadb', 'sqlite'] as const
type Db = (typeof DATABASES)[number]

interface RelaySpec {
  db: Db
  /** PostgreSQL schema, MySQL database or SQLite file. */
  where: string
  topic: string
  count: number
  brokers: string[]
}

interface RelayReport {
  delivered: number
  /** Messages/s from the first acknowledged batch to the last. */
  rate: number
  errors: string[]
}

function log(message: string): void {
  process.stderr.write(`${message}\n`)
}

if (process.argv[2] === '--relay') await relayProcess(JSON.parse(process.argv[3] as string) as RelaySpec)
else await main()

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      count: { type: 'string', default: '50000' },
      reps: { type: 'string', default: '3' },
      only: { type: 'string', default: DATABASES.join(',') },
    },
  })
  const count = Number(values.count)
  const reps = Number(values.reps)
  const only = (values.only as string).split(',') as Db[]
  if (!Number.isInteger(count) || count < 1000) throw new Error(`--count must be an integer >= 1000`)
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps must be a positive integer`)
  for (const db of only) if (!DATABASES.includes(db)) throw new Error(`--only: unknown database ${db}`)

  const kafka = await benchBrokers()
  const brokers = kafka.brokers
  const machine = await machineInfo()
  log(
    `dialects: ${machine.nproc} CPUs, PostgreSQL ${machine.postgres}, Kafka ${machine.kafka}, Node ${machine.node}, load ${machine.loadAverage}; ${count} messages per run, ${reps} repetitions`,
  )
  const warmupTopic = topicName('dialects-warmup')
  await createTopic(brokers, warmupTopic)
  const topics: string[] = [warmupTopic]
  const rows: string[] = []
  try {
    for (const db of only) {
      const ratios: number[] = []
      for (let rep = 0; rep < reps; rep++) {
        const verify = rep === reps - 1
        const order = rep % 2 === 0 ? ['raw', 'relay'] : ['relay', 'raw']
        let raw = 0
        let relay: RelayReport | undefined
        let verdict = 'not checked'
        for (const which of order) {
          const topic = topicName(`dialects-${db}-${which}`)
          topics.push(topic)
          await createTopic(brokers, topic)
          if (which === 'raw') {
            const result = await runWorker({
              kind: 'raw',
              brokers,
              topic,
              warmupTopic,
              prefix: `r${rep}`,
              count,
              batchSize: RELAY_DEFAULTS.maxMessagesPerPoll,
            })
            raw = metrics(result).rate
          } else {
            const prefix = `t${rep}`
            relay = await relayRun(db, brokers, topic, prefix, count)
            if (verify) verdict = await check(brokers, topic, prefix, count)
          }
        }
        if (relay === undefined) throw new Error('unreachable')
        const ratio = relay.rate / raw
        ratios.push(ratio)
        const row = `| ${db} | ${rep + 1} (${order[0]} first) | ${fmt(raw)} | ${fmt(relay.rate)} | ${ratio.toFixed(3)}x | ${verdict} |`
        rows.push(row)
        log(row)
        if (relay.errors.length > 0) log(`  relay errors: ${relay.errors.slice(0, 3).join(' | ')}`)
      }
      const sorted = [...ratios].sort((a, b) => a - b)
      const summary = `| ${db} | median of ${reps} | | | **${median(ratios).toFixed(3)}x** (${(sorted[0] as number).toFixed(3)}-${(sorted.at(-1) as number).toFixed(3)}) | |`
      rows.push(summary)
      log(summary)
    }
  } finally {
    await deleteTopics(brokers, topics).catch(() => {})
    await kafka.stop()
  }
  console.log('| database | repetition | raw msg/s | relay msg/s | relay / raw | read back |')
  console.log('|---|---|---|---|---|---|')
  for (const row of rows) console.log(row)
}

function fmt(value: number): string {
  return Math.round(value).toLocaleString('en-US')
}

async function check(brokers: string[], topic: string, prefix: string, count: number): Promise<string> {
  const consumed = await readTopic({
    brokers,
    topic,
    expectedCount: count,
    timeoutMs: Math.max(60_000, count),
    idleTimeoutMs: 10_000,
  })
  const report = checkDelivery({
    expected: trackedRange(prefix, 0, count),
    observed: observedFromConsumed(consumed, { untracked: 'ignore' }),
  })
  if (!report.ok) log(formatReport(report))
  return `${report.ok ? 'ok' : 'FAILED'}: lost ${report.lost}, dup ${report.duplicates}, order ${report.outOfOrder}`
}

/** Fills an outbox of `db` with messages 0..count of `prefix` and drains it with a relay in a child process. */
async function relayRun(
  db: Db,
  brokers: string[],
  topic: string,
  prefix: string,
  count: number,
): Promise<RelayReport> {
  let where: string
  let cleanup: () => Promise<void>
  if (db === 'postgres') {
    where = uniqueName('bench_dialects')
    const outbox = benchOutbox(where, topic, brokers)
    await outbox.migrate(DATABASE_URL)
    await prefill(outbox, prefix, 0, count)
    cleanup = () => dropSchema(where)
  } else if (db === 'mariadb') {
    where = uniqueName('bench_dialects')
    const admin = await mysql.createConnection({ uri: MYSQL_URL })
    await admin.query(`CREATE DATABASE \`${where}\``)
    await admin.end()
    const outbox = createMysqlOutbox({ topics: { bench: benchTopic(topic) }, schema: where })
    await outbox.migrate(MYSQL_URL)
    const pool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 1 })
    try {
      for (let from = 0; from < count; from += PREFILL_CHUNK) {
        const messages: BenchMessage[] = []
        for (let i = from; i < Math.min(count, from + PREFILL_CHUNK); i++)
          messages.push(benchMessage(prefix, i))
        await outbox.transaction(pool, (_connection, topics) => topics.bench.produceMany(messages))
      }
    } finally {
      await pool.end()
    }
    cleanup = async () => {
      const connection = await mysql.createConnection({ uri: MYSQL_URL })
      await connection.query(`DROP DATABASE IF EXISTS \`${where}\``)
      await connection.end()
    }
  } else {
    const directory = mkdtempSync(join(tmpdir(), 'ke-bench-dialects-'))
    where = join(directory, 'outbox.db')
    const database = new Database(where)
    database.pragma('journal_mode = WAL')
    const outbox = createBetterSqliteOutbox({ topics: { bench: benchTopic(topic) } })
    outbox.migrate(database)
    for (let from = 0; from < count; from += PREFILL_CHUNK) {
      database.transaction(() => {
        const producers = outbox.in(database)
        for (let i = from; i < Math.min(count, from + PREFILL_CHUNK); i++)
          producers.bench.produce(benchMessage(prefix, i))
      })()
    }
    database.close()
    cleanup = async () => rmSync(directory, { recursive: true, force: true })
  }
  try {
    const spec: RelaySpec = { db, where, topic, count, brokers }
    return await new Promise<RelayReport>((resolve, reject) => {
      const child = fork(import.meta.filename, ['--relay', JSON.stringify(spec)])
      child.on('message', (message) => resolve(message as RelayReport))
      child.on('error', reject)
      child.on('exit', (code) => {
        if (code !== 0) reject(new Error(`${db} relay process exited with ${code}`))
      })
    })
  } finally {
    await cleanup()
  }
}

async function relayProcess(spec: RelaySpec): Promise<void> {
  const topics = { bench: benchTopic(spec.topic) }
  const kafka = { brokers: spec.brokers }
  const outbox =
    spec.db === 'postgres'
      ? benchOutbox(spec.where, spec.topic, spec.brokers)
      : spec.db === 'mariadb'
        ? createMysqlOutbox({ topics, schema: spec.where, kafka })
        : createBetterSqliteOutbox({ topics, kafka })
  const connection = spec.db === 'postgres' ? DATABASE_URL : spec.db === 'mariadb' ? MYSQL_URL : spec.where
  let delivered = 0
  let first: { at: number; count: number } | undefined
  let last = 0
  const errors: string[] = []
  let done: () => void = () => {}
  const finished = new Promise<void>((resolve) => {
    done = resolve
  })
  const relay = (
    outbox as { relay(options: Record<string, unknown>): ReturnType<typeof outbox.relay> }
  ).relay({
    connection,
    logger: false,
    onEvent: (event: { type: string; count?: number; stage?: string; error?: unknown }) => {
      if (event.type === 'delivered') {
        const now = performance.now()
        delivered += event.count ?? 0
        if (first === undefined) first = { at: now, count: event.count ?? 0 }
        last = now
        if (delivered >= spec.count) done()
      } else if (event.type === 'error' && errors.length < 10) {
        errors.push(`${event.stage}: ${String(event.error)}`)
      }
    },
  })
  await relay.start()
  await finished
  await relay.stop()
  await (outbox as { close(): Promise<void> }).close()
  const timed = first === undefined ? 0 : delivered - first.count
  const seconds = first === undefined ? 0 : (last - first.at) / 1000
  const report: RelayReport = { delivered, rate: seconds > 0 ? timed / seconds : 0, errors }
  process.send?.(report, () => process.exit(0))
}
