// A longer run of the exactly-once consumer check (test/consumer/exactly-once.ts, killRepeatedly):
// a consumer child with outbox.consume() + inbox is SIGKILLed again and again while distinct
// messages flow, on a broker of its own that is also restarted a few times, spread over the run.
// At the end every counter must be exactly 1. Not a test file: npm test does not pick it up.
//
// Usage: scripts/node-env.sh node scripts/consumer-long-run.ts [--messages 30000] [--kills 30]
//   [--restarts 3] [--minutes 10] [--database postgres|mariadb|both|sqlite|node-sqlite|all]
//   [--member default|static|new]
//   [--down-ms 4000]
// `--minutes` paces the producer and the lives so sending and killing both span about that long.
// `--member default` is what the tests use: a new group member per life on PostgreSQL, a static
// one on MariaDB. Env: DATABASE_URL, MYSQL_URL. Exits 1 if a counter is not 1 or a message was
// never handled; the summary line is printed either way.
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { freePorts } from '../src/dev/kafka/ports.ts'
import {
  type Database,
  type KillResult,
  killRepeatedly,
  mariadb,
  nodeSqlite,
  postgres,
  sqlite,
} from '../test/consumer/exactly-once.ts'
import { type KafkaBroker, startKafkaBroker } from './kafka-broker.ts'

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '30000' },
    kills: { type: 'string', default: '30' },
    restarts: { type: 'string', default: '3' },
    minutes: { type: 'string', default: '10' },
    database: { type: 'string', default: 'both' },
    member: { type: 'string', default: 'default' },
    'down-ms': { type: 'string', default: '4000' },
  },
})

function integer(name: string, min: number): number {
  const value = Number(values[name as keyof typeof values])
  if (!Number.isInteger(value) || value < min) {
    console.error(
      `--${name} must be an integer of at least ${min}, got ${values[name as keyof typeof values]}`,
    )
    process.exit(2)
  }
  return value
}

const MESSAGES = integer('messages', 1)
const KILLS = integer('kills', 1)
const RESTARTS = integer('restarts', 0)
const DOWN_MS = integer('down-ms', 0)
const MINUTES = Number(values.minutes)
if (!Number.isFinite(MINUTES) || MINUTES <= 0) {
  console.error(`--minutes must be a positive number, got ${values.minutes}`)
  process.exit(2)
}
if (RESTARTS > KILLS) {
  console.error(
    `--restarts (${RESTARTS}) must not exceed --kills (${KILLS}): each restart happens during one life`,
  )
  process.exit(2)
}
const DATABASES: Record<string, Database[]> = {
  postgres: [postgres],
  mariadb: [mariadb],
  both: [postgres, mariadb],
  // SQLite: the consumer children share one WAL database file (better-sqlite3, or node:sqlite).
  sqlite: [sqlite],
  'node-sqlite': [nodeSqlite],
  all: [postgres, mariadb, sqlite, nodeSqlite],
}
const databases = Object.hasOwn(DATABASES, values.database) ? DATABASES[values.database] : undefined
if (!databases) {
  console.error(
    `--database must be postgres, mariadb, both, sqlite, node-sqlite or all, got ${values.database}`,
  )
  process.exit(2)
}
if (!['default', 'static', 'new'].includes(values.member)) {
  console.error(`--member must be default, static or new, got ${values.member}`)
  process.exit(2)
}

const BATCH = 40
const runMs = MINUTES * 60_000
// Every RESENT_EVERY-th message is sent twice; the time a send takes is not known, so the pause
// alone spreads the batches over the run (the run ends up a little longer).
const batches = Math.ceil((MESSAGES * 1.1) / BATCH)
const pauseMs = Math.max(0, Math.round(runMs / batches))
const lifeMean = runMs / (KILLS + 1)
const lifeMs = { min: Math.round(lifeMean * 0.5), max: Math.round(lifeMean * 1.5) }
// The restarts fall in lives spread evenly over the run.
const restartLives = Array.from({ length: RESTARTS }, (_, i) =>
  Math.floor(((i + 1) * KILLS) / (RESTARTS + 1)),
)

const load = () =>
  loadavg()
    .map((n) => n.toFixed(2))
    .join(' ')

async function runOn(database: Database): Promise<KillResult> {
  const dataDir = mkdtempSync(join(tmpdir(), 'k-entity-consumer-long-run-'))
  const ports = await freePorts(2).then(([port, controllerPort]) => ({
    port: port as number,
    controllerPort: controllerPort as number,
  }))
  let broker: KafkaBroker | undefined = await startKafkaBroker({ dataDir, ...ports, quiet: true })
  const staticMember = values.member === 'default' ? database.name === 'mariadb' : values.member === 'static'
  console.log(
    `${new Date().toISOString()} ${database.name}: ${MESSAGES} messages, ${KILLS} kills, restarts during lives ${restartLives.join(', ') || 'none'} (${DOWN_MS} ms down), ` +
      `${BATCH} per send every ${pauseMs} ms, lives ${lifeMs.min}-${lifeMs.max} ms, ${staticMember ? 'static member' : 'new member per life'}; load ${load()}`,
  )
  try {
    return await killRepeatedly({
      database,
      brokers: [broker.brokers],
      staticMember,
      kills: KILLS,
      distinct: MESSAGES,
      sendBatch: BATCH,
      sendPauseMs: pauseMs,
      lifeMs,
      onLife: (life, counts, elapsedMs) =>
        console.log(
          `  ${Math.round(elapsedMs / 1000)} s: life ${life} killed after handling ${counts.handled}, skipping ${counts.duplicates}; load ${load()}`,
        ),
      restart: {
        lives: restartLives,
        downMs: DOWN_MS,
        broker: {
          stop: async () => {
            console.log(`  ${new Date().toISOString()} broker stopped`)
            await broker?.stop()
            broker = undefined
          },
          start: async () => {
            broker = await startKafkaBroker({ dataDir, ...ports, quiet: true })
            console.log(`  ${new Date().toISOString()} broker up again`)
          },
        },
      },
    })
  } finally {
    await broker?.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

let failed = false
for (const database of databases) {
  const loadBefore = load()
  try {
    const result = await runOn(database)
    console.log(
      `RESULT ${database.name}: ok; ${JSON.stringify(result)}; load average before ${loadBefore}, after ${load()}`,
    )
  } catch (error) {
    failed = true
    console.log(
      `RESULT ${database.name}: FAILED: ${(error as Error).stack ?? error}; load average before ${loadBefore}, after ${load()}`,
    )
  }
}
process.exit(failed ? 1 : 0)
