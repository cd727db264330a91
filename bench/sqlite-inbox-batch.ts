// The inbox's batch transaction on SQLite without Kafka, its phases timed: BEGIN IMMEDIATE, the
// batch's JSON built and its INSERT prepared (the outbox caches the statement by text, so only the
// first batch pays the prepare), the INSERT, COMMIT. Tells what bench/consumer-sqlite.ts's inbox
// variant spends on the database per message, next to what the bare consumer spends on Kafka.
// Usage: node bench/sqlite-inbox-batch.ts [--rows=200] [--batches=500] [--reps=3]
//          [--driver=better-sqlite3|node-sqlite|both] [--synchronous=normal|full]
// One database file in WAL mode per driver, in a temp dir made for the run and deleted after it.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import BetterSqlite from 'better-sqlite3'
import { betterSqliteConnection } from '../src/adapters/better-sqlite3/index.ts'
import type { InboxEntry } from '../src/consumer/inbox-sql.ts'
import type { SqliteConnection } from '../src/dialects/sqlite/connection.ts'
import { sqliteInbox } from '../src/dialects/sqlite/inbox.ts'
import { parseSqliteOptions, type SqliteDriver } from './lib/sqlite-options.ts'
import { midpointMedian } from './lib/stats.ts'

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '200' },
    batches: { type: 'string', default: '500' },
    reps: { type: 'string', default: '3' },
    driver: { type: 'string', default: 'both' },
    synchronous: { type: 'string', default: 'normal' },
  },
})
const rows = Number(values.rows)
const batches = Number(values.batches)
const reps = Number(values.reps)
for (const [name, n] of [
  ['rows', rows],
  ['batches', batches],
  ['reps', reps],
] as const) {
  if (!Number.isInteger(n) || n < 1) {
    console.error(`--${name} must be a positive integer`)
    process.exit(1)
  }
}
const { drivers, synchronous } = parseSqliteOptions(values)
const table = { schema: 'ke_bench', table: 'outbox' }
const topic = 'ke-bench-consumer-sqlite-0123456789'
const PHASES = ['begin', 'build', 'insert', 'commit'] as const
type Phase = (typeof PHASES)[number]

async function open(driver: SqliteDriver, file: string): Promise<SqliteConnection> {
  if (driver === 'better-sqlite3') return betterSqliteConnection(new BetterSqlite(file))
  // Loaded when used: on Node 22 node:sqlite prints an ExperimentalWarning once loaded.
  const { DatabaseSync } = await import('node:sqlite')
  const { nodeSqliteConnection } = await import('../src/adapters/node-sqlite/index.ts')
  return nodeSqliteConnection(new DatabaseSync(file))
}

/** A batch as the consumer makes it: one group, one partition, consecutive offsets. */
function batch(first: number): InboxEntry[] {
  return Array.from({ length: rows }, (_, i) => ({
    group: 'ke-bench-group',
    key: `${topic}/0/${first + i}`,
    topic,
    partition: 0,
    offset: BigInt(first + i),
    retentionMs: 7 * 24 * 3600 * 1000,
  }))
}

/** µs per message in each phase, over `batches` transactions. */
function rep(connection: SqliteConnection, firstOffset: number): Record<Phase, number> {
  const spent: Record<Phase, number> = { begin: 0, build: 0, insert: 0, commit: 0 }
  let offset = firstOffset
  for (let b = 0; b < batches; b++) {
    const entries = batch(offset)
    offset += rows
    let t = performance.now()
    connection.exec('BEGIN IMMEDIATE')
    spent.begin += performance.now() - t
    t = performance.now()
    const statement = sqliteInbox.insertMany(table, entries)
    spent.build += performance.now() - t
    t = performance.now()
    connection.run(statement.text, statement.values)
    spent.insert += performance.now() - t
    t = performance.now()
    connection.exec('COMMIT')
    spent.commit += performance.now() - t
  }
  const perMessage = (ms: number) => (ms * 1000) / (batches * rows)
  return {
    begin: perMessage(spent.begin),
    build: perMessage(spent.build),
    insert: perMessage(spent.insert),
    commit: perMessage(spent.commit),
  }
}

for (const driver of drivers) {
  const dir = mkdtempSync(join(tmpdir(), 'k-entity-bench-sqlite-inbox-'))
  try {
    const connection = await open(driver, join(dir, 'bench.db'))
    connection.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = ${synchronous}`)
    sqliteInbox.migrate(table, () => ({ connection, owned: false }))
    const results: Record<Phase, number>[] = []
    // A first repetition warms the statement cache and the page cache; not counted.
    for (let r = 0; r <= reps; r++) {
      const result = rep(connection, r * batches * rows)
      if (r > 0) results.push(result)
    }
    connection.close()
    const medians = PHASES.map((phase) => [phase, midpointMedian(results.map((r) => r[phase]))] as const)
    const total = medians.reduce((sum, [, us]) => sum + us, 0)
    console.log(
      `${driver}, synchronous ${synchronous}, ${batches} batches of ${rows} rows, ${reps} reps after a warm-up (median µs per message):`,
    )
    for (const [phase, us] of medians) console.log(`  ${phase.padEnd(7)} ${us.toFixed(2).padStart(6)}`)
    console.log(
      `  total   ${total.toFixed(2).padStart(6)}  (a ceiling of ${Math.round(1e6 / total)} msg/s for the database part alone)`,
    )
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
