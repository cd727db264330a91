// The kill -9 run of the exactly-once consumer tests, shared by test/consumer-exactly-once.test.ts
// (the test broker) and test/consumer-broker-restart.test.ts (a broker of its own, restarted
// during the run): a consumer in a child process increments a counter row per message inside its
// inbox transaction and is SIGKILLed again and again while messages flow.
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import BetterSqlite from 'better-sqlite3'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createBetterSqliteOutbox } from '../../src/adapters/better-sqlite3/index.ts'
import { createMysqlOutbox } from '../../src/adapters/mysql2/index.ts'
import { createPgOutbox } from '../../src/adapters/pg/index.ts'
import { defineTopic, MESSAGE_ID_HEADER } from '../../src/core/topic.ts'
import { createTopic, deleteTopic, produceRaw, uniqueName, waitFor } from './kafka.ts'

const PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const MYSQL_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
const FIXTURE = resolve(import.meta.dirname, '../fixtures/inbox-consumer.ts')
export const DISTINCT = 3000
/** Every tenth message is sent a second time with the same message id, as a relay may. */
export const RESENT_EVERY = 10

export interface Counts {
  handled: number
  duplicates: number
  deadLettered: number
}

export interface Database {
  /** What the child consumer (test/fixtures/inbox-consumer.ts) takes as DB. */
  name: 'postgres' | 'mariadb' | 'sqlite' | 'node-sqlite'
  url: (schema: string) => string
  setUp(schema: string): Promise<void>
  tally(schema: string): Promise<{ rows: number; sum: number; max: number }>
  /** Whether the counter of message `id` exists. */
  has(schema: string, id: string): Promise<boolean>
  tearDown(schema: string): Promise<void>
  migrateInbox(schema: string, topic: string): Promise<void>
}

export const postgres: Database = {
  name: 'postgres',
  url: () => PG_URL,
  async setUp(schema) {
    const client = new pg.Client(PG_URL)
    await client.connect()
    await client.query(`CREATE SCHEMA "${schema}"`)
    await client.query(`CREATE TABLE "${schema}".counters (id text PRIMARY KEY, n integer NOT NULL)`)
    await client.end()
  },
  async has(schema, id) {
    const client = new pg.Client(PG_URL)
    await client.connect()
    try {
      const { rows } = await client.query(`SELECT 1 FROM "${schema}".counters WHERE id = $1`, [id])
      return rows.length > 0
    } finally {
      await client.end()
    }
  },
  async tally(schema) {
    const client = new pg.Client(PG_URL)
    await client.connect()
    try {
      const { rows } = await client.query(
        `SELECT count(*)::int AS rows, coalesce(sum(n), 0)::int AS sum, coalesce(max(n), 0)::int AS max FROM "${schema}".counters`,
      )
      return rows[0]
    } finally {
      await client.end()
    }
  },
  async tearDown(schema) {
    const client = new pg.Client(PG_URL)
    await client.connect()
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await client.end()
  },
  async migrateInbox(schema, topic) {
    const outbox = createPgOutbox({ topics: { events: defineTopic({ name: topic }) }, schema })
    await outbox.migrateInbox(PG_URL)
  },
}

export const mariadb: Database = {
  name: 'mariadb',
  url: () => MYSQL_URL,
  async setUp(schema) {
    const connection = await mysql.createConnection(MYSQL_URL)
    await connection.query(`CREATE DATABASE \`${schema}\``)
    await connection.query(
      `CREATE TABLE \`${schema}\`.counters (id VARCHAR(64) PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB`,
    )
    await connection.end()
  },
  async has(schema, id) {
    const connection = await mysql.createConnection(MYSQL_URL)
    try {
      const [rows] = await connection.query(`SELECT 1 FROM \`${schema}\`.counters WHERE id = ?`, [id])
      return (rows as unknown[]).length > 0
    } finally {
      await connection.end()
    }
  },
  async tally(schema) {
    const connection = await mysql.createConnection(MYSQL_URL)
    try {
      const [rows] = await connection.query(
        `SELECT count(*) AS \`rows\`, coalesce(sum(n), 0) AS sum, coalesce(max(n), 0) AS max FROM \`${schema}\`.counters`,
      )
      const row = (rows as Record<string, unknown>[])[0] as Record<string, unknown>
      return { rows: Number(row.rows), sum: Number(row.sum), max: Number(row.max) }
    } finally {
      await connection.end()
    }
  },
  async tearDown(schema) {
    const connection = await mysql.createConnection(MYSQL_URL)
    await connection.query(`DROP DATABASE IF EXISTS \`${schema}\``)
    await connection.end()
  },
  async migrateInbox(schema, topic) {
    const outbox = createMysqlOutbox({ topics: { events: defineTopic({ name: topic }) }, schema })
    await outbox.migrateInbox(MYSQL_URL)
  },
}

/** A database file per run (the schema names it), shared by the consumer lives and the checks. */
const sqliteFile = (schema: string) => join(tmpdir(), `${schema}.db`)

function withSqlite<R>(schema: string, use: (db: BetterSqlite.Database) => R): R {
  const db = new BetterSqlite(sqliteFile(schema))
  try {
    db.pragma('busy_timeout = 5000')
    return use(db)
  } finally {
    db.close()
  }
}

/**
 * SQLite through `driver`: the child consumes with that driver's outbox, and the inbox is
 * migrated with it; the checks read the file through better-sqlite3, the format is the same.
 */
function sqliteDatabase(name: 'sqlite' | 'node-sqlite'): Database {
  return {
    name,
    url: sqliteFile,
    async setUp(schema) {
      withSqlite(schema, (db) => {
        db.pragma('journal_mode = WAL')
        db.exec('CREATE TABLE counters (id TEXT PRIMARY KEY, n INTEGER NOT NULL)')
      })
    },
    async has(schema, id) {
      return withSqlite(
        schema,
        (db) => db.prepare('SELECT 1 FROM counters WHERE id = ?').get(id) !== undefined,
      )
    },
    async tally(schema) {
      return withSqlite(
        schema,
        (db) =>
          db
            .prepare(
              'SELECT count(*) AS rows, coalesce(sum(n), 0) AS sum, coalesce(max(n), 0) AS max FROM counters',
            )
            .get() as { rows: number; sum: number; max: number },
      )
    },
    async tearDown(schema) {
      for (const suffix of ['', '-wal', '-shm']) rmSync(`${sqliteFile(schema)}${suffix}`, { force: true })
    },
    async migrateInbox(schema, topic) {
      const options = { topics: { events: defineTopic({ name: topic }) }, schema }
      if (name === 'sqlite') {
        createBetterSqliteOutbox(options).migrateInbox(sqliteFile(schema))
        return
      }
      // Loaded when used: on Node 22 node:sqlite prints an ExperimentalWarning once loaded.
      const { createNodeSqliteOutbox } = await import('../../src/adapters/node-sqlite/index.ts')
      createNodeSqliteOutbox(options).migrateInbox(sqliteFile(schema))
    },
  }
}

/** SQLite with better-sqlite3. */
export const sqlite = sqliteDatabase('sqlite')
/** SQLite with Node's built-in node:sqlite (Node 22.13+ without a flag; the engines floor is 22.22). */
export const nodeSqlite = sqliteDatabase('node-sqlite')

/** A child consumer and the last counts it printed. */
export class Child {
  readonly process: ChildProcess
  last: Counts = { handled: 0, duplicates: 0, deadLettered: 0 }
  stderr = ''
  readonly exited: Promise<void>

  constructor(env: Record<string, string>) {
    this.process = spawn(process.execPath, [FIXTURE], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let buffered = ''
    this.process.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const lines = buffered.split('\n')
      buffered = lines.pop() ?? ''
      const line = lines.at(-1)
      if (line) this.last = JSON.parse(line) as Counts
    })
    this.process.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString()
    })
    this.exited = new Promise((resolveExit) => this.process.once('exit', () => resolveExit()))
  }

  get progress(): number {
    return this.last.handled + this.last.duplicates
  }
}

export const sleep = (ms: number) => new Promise((resolveSleep) => setTimeout(resolveSleep, ms))

/** A broker the run may stop and start again (same ports and data dir, so records survive). */
export interface RestartableBroker {
  stop(): Promise<void>
  start(): Promise<void>
}

export interface KillRun {
  database: Database
  brokers: string[]
  /**
   * Every life joins under the same `groupInstanceId`, so a restart takes the partitions back at
   * once; otherwise each restart is a new member and the group rebalances once the killed one's
   * session times out.
   */
  staticMember: boolean
  kills: number
  /** Restart the broker while these lives (0-based) run, before they are killed. */
  restart?: { broker: RestartableBroker; lives: number[]; downMs: number }
  /** Distinct messages; DISTINCT unless a longer run (scripts/consumer-long-run.ts) asks for more. */
  distinct?: number
  /** Messages per send and the pause after each: 40 and 500 ms (about 80 a second) by default. */
  sendBatch?: number
  sendPauseMs?: number
  /** How long each life runs after its first message before it is killed: 1-3 s by default. */
  lifeMs?: { min: number; max: number }
  /** Called after each life is killed, so a long run can show where it is. */
  onLife?: (life: number, counts: Counts, elapsedMs: number) => void
}

export interface KillResult {
  kills: number
  restarts: number
  lives: number
  seconds: number
  handled: number
  duplicates: number
  redeliveriesSkipped: number
  failedSends: number
  /** Per restart: ms from the broker being up again until the running consumer handled the first message sent after that. */
  resumedMs: number[]
  counters: { rows: number; sum: number; max: number }
}

export async function killRepeatedly(run: KillRun): Promise<KillResult> {
  const { database, brokers: list, staticMember, kills } = run
  const distinct = run.distinct ?? DISTINCT
  const batch = run.sendBatch ?? 40
  const pauseMs = run.sendPauseMs ?? 500
  const life = run.lifeMs ?? { min: 1000, max: 3000 }
  const schema = uniqueName('ke_eo').replaceAll('-', '_')
  const topic = uniqueName('ke-eo')
  await database.setUp(schema)
  await createTopic(list, topic, 4)
  try {
    await database.migrateInbox(schema, topic)
    const env = {
      DB: database.name,
      DB_URL: database.url(schema),
      SCHEMA: schema,
      TOPIC: topic,
      GROUP: uniqueName('ke-eo-group'),
      KAFKA_BROKERS: list.join(','),
      GROUP_INSTANCE: staticMember ? 'ke-eo-member' : '',
    }
    const sends: { key: string; value: string; headers: Record<string, string> }[] = []
    for (let i = 0; i < distinct; i++) {
      const message = {
        key: `k${i % 97}`,
        value: JSON.stringify({ id: `e${i}` }),
        headers: { [MESSAGE_ID_HEADER]: `m${i}` },
      }
      sends.push(message)
      if (i % RESENT_EVERY === 0) sends.push(message)
    }
    // Messages keep flowing through the kills: about 80 per second, for about 40 s. While the
    // broker is down a send fails and is tried again: a batch half written before the failure is
    // then written twice, which is one more redelivery for the inbox to skip.
    let produced = false
    let producedAt = 0
    let failedSends = 0
    let sending = 0
    const producing = (async () => {
      for (let start = 0; start < sends.length; start += batch) {
        sending = start
        for (;;) {
          try {
            await produceRaw(list, topic, sends.slice(start, start + batch))
            break
          } catch {
            failedSends++
            await sleep(500)
          }
        }
        await sleep(pauseMs)
      }
      produced = true
      producedAt = Date.now()
    })()
    const started = Date.now()
    const lives: Counts[] = []
    const waits: number[] = []
    const resumedMs: number[] = []
    for (let kill = 0; kill < kills; kill++) {
      const child = new Child(env)
      const born = Date.now()
      try {
        // Once everything was produced and handled there is nothing left to show progress on.
        await waitFor(() => child.progress > 0 || produced, 60_000, `progress of consumer life ${kill + 1}`)
        waits.push(Date.now() - born)
        await sleep(life.min + Math.random() * (life.max - life.min))
        if (run.restart?.lives.includes(kill)) {
          // The same consumer process lives through the outage and must go on by itself.
          await run.restart.broker.stop()
          await sleep(run.restart.downMs)
          await run.restart.broker.start()
          const up = Date.now()
          // The first message sent after the broker came back (the batch being sent may have
          // been written before it stopped): its counter can only come from this process, the
          // others are dead, so seeing it proves this consumer fetched again after the restart.
          const after = sends[Math.min(sending + batch, sends.length - 1)] as { value: string }
          const { id } = JSON.parse(after.value) as { id: string }
          const deadline = Date.now() + 90_000
          while (!(await database.has(schema, id))) {
            if (child.process.exitCode !== null)
              throw new Error('the consumer exited during the broker restart')
            if (Date.now() > deadline)
              throw new Error(`consumer life ${kill + 1} did not handle ${id}, sent after the broker restart`)
            await sleep(100)
          }
          resumedMs.push(Date.now() - up)
          await sleep(1000 + Math.random() * 1000)
        }
      } catch (error) {
        child.process.kill('SIGKILL')
        throw new Error(`${(error as Error).message}; stderr: ${child.stderr}`)
      }
      child.process.kill('SIGKILL')
      await child.exited
      lives.push(child.last)
      run.onLife?.(kill + 1, child.last, Date.now() - started)
    }
    const final = new Child(env)
    let tally = await database.tally(schema)
    // 90 s for the last consumer to catch up once everything is sent (a long run may still be
    // sending when its kills are done).
    const caughtUp = () => produced && tally.rows === distinct
    while (!caughtUp() && (!produced || Date.now() < producedAt + 90_000)) {
      await sleep(250)
      tally = await database.tally(schema)
    }
    await producing
    await sleep(1000)
    final.process.kill('SIGTERM')
    await final.exited
    lives.push(final.last)
    tally = await database.tally(schema)
    const duplicates = lives.reduce((sum, life) => sum + life.duplicates, 0)
    const handled = lives.reduce((sum, life) => sum + life.handled, 0)
    const resent = Math.ceil(distinct / RESENT_EVERY)
    const restarts = run.restart?.lives.length ?? 0
    const seconds = Math.round((Date.now() - started) / 1000)
    console.log(
      `${database.name} (${staticMember ? 'static member' : 'new member per life'}): ${distinct} distinct messages (+${resent} sent twice), ${kills} kill -9, ${restarts} broker restarts, ${lives.length} consumer lives, ${seconds} s; ` +
        `handled ${handled} (at least, as printed before each kill), skipped by the inbox ${duplicates} ` +
        `(of them Kafka redeliveries after kills${restarts > 0 ? ' and sends repeated during the outage' : ''}: ${duplicates - resent}); failed sends retried ${failedSends}; ` +
        `ms from start to first message per life: ${waits.join(', ')}; ms from broker up to the first message sent after it handled: ${resumedMs.join(', ') || 'n/a'}; ` +
        `counters: ${tally.rows} rows, sum ${tally.sum}, max ${tally.max}; final stderr: ${final.stderr.trim() || 'none'}`,
    )
    assert.equal(tally.rows, distinct, 'every message has its counter')
    assert.equal(tally.sum, distinct, 'no counter was incremented twice')
    assert.equal(tally.max, 1)
    // Counts printed 50 ms apart are lost with each kill, so only "some" can be asserted here.
    assert.ok(duplicates > 0, 'the inbox skipped messages seen before')
    return {
      kills,
      restarts,
      lives: lives.length,
      seconds,
      handled,
      duplicates,
      redeliveriesSkipped: duplicates - resent,
      failedSends,
      resumedMs,
      counters: tally,
    }
  } finally {
    await database.tearDown(schema)
    await deleteTopic(list, topic)
  }
}
