/**
 * The runner's side of the consumer processes (--consumer, chaos/consumer.ts): the effects table
 * and the inbox, forking a life of each consumer, kill -9 and the next life, waiting for the
 * effects to catch up with the producers, and the graceful stop.
 */
import { fork } from 'node:child_process'
import Database from 'better-sqlite3'
import mysql from 'mysql2/promise'
import pg from 'pg'
import type { ConsumerCommand, ConsumerConfig, ConsumerReport } from './shared.ts'
import { EFFECTS_TABLE, SQLITE_BUSY_TIMEOUT_MS, schemaTable, sleep } from './shared.ts'
import {
  CONSUMER_SCRIPT,
  CONSUMERS,
  type ConsumerProc,
  consumerApp,
  consumerGroup,
  dbKind,
  kafkaBrokers,
  log,
  outbox,
  runtimeRandom,
  schema,
  state,
  topicNames,
} from './state.ts'

/** One effect row: what the consumers' handlers wrote for a message id. */
export interface EffectRow {
  id: string
  topic: string
  key: string
  seq: number
  /** How many times the effect was applied (1 unless the inbox let a repeat through). */
  n: number
  /** The effects table's sequence: the order in which effects were first applied. */
  applied: number
  /** Which consumer and life applied it, from which partition and offset. */
  consumer: number
  life: number
  partition: number
  offset: number
}

/** A short-lived connection of the runner's, on the database under test (as its own superuser). */
async function withDb<T>(fn: (query: (sql: string) => Promise<Record<string, unknown>[]>) => Promise<T>) {
  if (dbKind === 'sqlite') {
    // Its own handle on the run's file; the busy timeout as the producers', for the DDL (reads in
    // WAL mode do not wait for the writers).
    const db = new Database(state.db.runnerConnection() as string, { timeout: SQLITE_BUSY_TIMEOUT_MS })
    try {
      return await fn(async (sql) => {
        const statement = db.prepare(sql)
        if (statement.reader) return statement.all() as Record<string, unknown>[]
        statement.run()
        return []
      })
    } finally {
      db.close()
    }
  }
  if (dbKind === 'mariadb') {
    const connection = await mysql.createConnection({ uri: state.db.runnerConnection() as string })
    try {
      return await fn(async (sql) => (await connection.query(sql))[0] as Record<string, unknown>[])
    } finally {
      await connection.end()
    }
  }
  const client = new pg.Client(state.db.runnerConnection() as pg.ClientConfig)
  client.on('error', () => {})
  await client.connect()
  try {
    return await fn(async (sql) => (await client.query(sql)).rows)
  } finally {
    await client.end()
  }
}

/** The inbox tables and the effects table, before any consumer starts. */
export async function prepareConsumers(): Promise<void> {
  await outbox.migrateInbox(state.db.runnerConnection())
  await withDb((query) =>
    query(
      dbKind === 'mariadb'
        ? `CREATE TABLE ${quoted(EFFECTS_TABLE)} (applied BIGINT AUTO_INCREMENT PRIMARY KEY,
             id VARCHAR(64) NOT NULL UNIQUE, topic VARCHAR(16) NOT NULL, \`key\` VARCHAR(64) NOT NULL,
             seq INT NOT NULL, consumer INT NOT NULL, life INT NOT NULL, kpartition INT NOT NULL,
             koffset BIGINT NOT NULL, n INT NOT NULL) ENGINE=InnoDB`
        : dbKind === 'sqlite'
          ? `CREATE TABLE ${quoted(EFFECTS_TABLE)} (applied INTEGER PRIMARY KEY AUTOINCREMENT,
               id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, "key" TEXT NOT NULL, seq INTEGER NOT NULL,
               consumer INTEGER NOT NULL, life INTEGER NOT NULL, kpartition INTEGER NOT NULL,
               koffset INTEGER NOT NULL, n INTEGER NOT NULL)`
          : `CREATE TABLE ${quoted(EFFECTS_TABLE)} (applied bigserial NOT NULL, id text PRIMARY KEY,
             topic text NOT NULL, key text NOT NULL, seq integer NOT NULL, consumer integer NOT NULL,
             life integer NOT NULL, kpartition integer NOT NULL, koffset bigint NOT NULL, n integer NOT NULL)`,
    ),
  )
}

export async function readEffects(): Promise<EffectRow[]> {
  const rows = await withDb((query) =>
    query(
      `SELECT applied, id, topic, ${dbKind === 'mariadb' ? '`key`' : '"key"'} AS k, seq, n, consumer, life, kpartition, koffset FROM ${quoted(EFFECTS_TABLE)} ORDER BY applied`,
    ),
  )
  return rows.map((row) => ({
    id: String(row.id),
    topic: String(row.topic),
    key: String(row.k),
    seq: Number(row.seq),
    n: Number(row.n),
    applied: Number(row.applied),
    consumer: Number(row.consumer),
    life: Number(row.life),
    partition: Number(row.kpartition),
    offset: Number(row.koffset),
  }))
}

/** Rows in the consumers' dead-letter table (a message the consumers gave up on: must be none). */
export async function consumerDeadLetters(): Promise<number> {
  const rows = await withDb((query) =>
    query(`SELECT count(*) AS n FROM ${quoted('outbox_consumer_dead_letters')}`),
  )
  return Number(rows[0]?.n ?? 0)
}

const quoted = (table: string) => schemaTable(dbKind, schema, table)

async function effectCount(): Promise<number> {
  const rows = await withDb((query) => query(`SELECT count(*) AS n FROM ${quoted(EFFECTS_TABLE)}`))
  return Number(rows[0]?.n ?? 0)
}

function consumerUrl(): string {
  if (dbKind !== 'mariadb') return state.db.producerUrl()
  // Its own user name on the run's own server (which skips grant tables), so neither the relay
  // session faults nor the mid-COMMIT crash (which waits for a producer's COMMIT) pick its sessions.
  const url = new URL(state.db.runnerConnection() as string)
  if (state.db.owned) url.username = 'chaos_consumer'
  return url.toString()
}

export function spawnConsumer(index: number): ConsumerProc {
  const life = state.consumers.filter((c) => c.index === index).length + 1
  const config: ConsumerConfig = {
    db: dbKind,
    index,
    life,
    databaseUrl: consumerUrl(),
    applicationName: consumerApp,
    schema,
    topics: topicNames,
    brokers: kafkaBrokers(),
    group: consumerGroup,
  }
  const child = fork(CONSUMER_SCRIPT, [], {
    env: { ...process.env, CHAOS_CONSUMER: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  let exited: () => void = () => {}
  const proc: ConsumerProc = {
    index,
    life,
    pid: child.pid as number,
    child,
    spawnedAt: Date.now(),
    loaded: false,
    alive: true,
    killedByUs: false,
    stopping: false,
    last: { handled: 0, duplicates: 0, deadLettered: 0, retried: 0, reconnects: 0 },
    exited: new Promise<void>((resolve) => {
      exited = resolve
    }),
  }
  state.consumers.push(proc)
  child.on('message', (r: ConsumerReport) => {
    if (r.type === 'loaded') {
      proc.loaded = true
      if (proc.stopping) command(proc, { type: 'stop' })
    } else if (r.type === 'counts') {
      const before = proc.last.handled + proc.last.duplicates
      proc.last = {
        handled: r.handled,
        duplicates: r.duplicates,
        deadLettered: r.deadLettered,
        retried: r.retried,
        reconnects: r.reconnects,
      }
      if (r.handled + r.duplicates > before) state.consumerProgress.push({ at: Date.now(), pid: proc.pid })
    } else if (r.type === 'failed') {
      log(`!! consumer #${index} life ${life}: ${r.message.slice(0, 300)}`)
    }
  })
  child.on('exit', (code, signal) => {
    proc.alive = false
    exited()
    if (proc.killedByUs || (proc.stopping && code === 0)) return
    state.consumerUnexpectedExits++
    log(
      `!! consumer #${index} life ${life} exited on its own (${signal ?? `code ${code}`}); starting the next life`,
    )
    // A second's pause: a life that cannot join while Kafka is away would otherwise fork in a loop.
    setTimeout(() => {
      if (!state.consumersStopping) spawnConsumer(index)
    }, 1000)
  })
  return proc
}

function command(proc: ConsumerProc, message: ConsumerCommand): void {
  if (proc.alive && proc.child.connected) proc.child.send(message)
}

export const livingConsumers = () => state.consumers.filter((c) => c.alive && !c.stopping)

export function startConsumers(): void {
  for (let i = 0; i < CONSUMERS; i++) spawnConsumer(i)
  log(`${CONSUMERS} consumer processes (outbox.consume() with the inbox, group ${consumerGroup}-*) started`)
}

/** kill -9 of one life; the next life of the same consumer starts 0.5-3 s later (a supervisor's restart). */
export function killConsumer(proc: ConsumerProc): void {
  proc.killedByUs = true
  proc.child.kill('SIGKILL')
  const delay = 500 + Math.round(runtimeRandom() * 2500)
  setTimeout(() => {
    if (!state.consumersStopping) spawnConsumer(proc.index)
  }, delay)
}

/**
 * Once the outbox is drained: waits until the effects table holds `expected` rows (every committed
 * message's effect), or nothing changed for `idleMs`, or `timeoutMs` passed. Returns the wait in ms,
 * or null if the effects never caught up (the check then reports what is missing).
 */
export async function waitForEffects(
  expected: number,
  idleMs: number,
  timeoutMs: number,
): Promise<number | null> {
  const start = Date.now()
  let count = -1
  let changedAt = start
  while (Date.now() - start < timeoutMs) {
    const now = await effectCount().catch(() => count)
    if (now !== count) {
      count = now
      changedAt = Date.now()
    }
    if (count >= expected) return Date.now() - start
    if (Date.now() - changedAt > idleMs) break
    await sleep(500)
  }
  log(`!! effects: ${count} rows for ${expected} committed messages after ${Date.now() - start} ms`)
  return null
}

/** Graceful close of every living consumer (SIGKILL after 30 s); no more lives after this. */
export async function stopConsumers(): Promise<void> {
  state.consumersStopping = true
  const living = state.consumers.filter((c) => c.alive)
  for (const proc of living) {
    proc.stopping = true
    if (proc.loaded) command(proc, { type: 'stop' })
  }
  const timeout = setTimeout(() => {
    for (const proc of living) {
      if (!proc.alive) continue
      log(`!! consumer #${proc.index} life ${proc.life} did not close within 30 s: SIGKILL`)
      proc.child.kill('SIGKILL')
    }
  }, 30_000)
  await Promise.all(living.map((proc) => proc.exited))
  clearTimeout(timeout)
}
