/**
 * SQLite through better-sqlite3 and node:sqlite: one database file per test (in WAL mode), or an
 * in-memory database when the case asks for one. The relay opens the file itself unless the case
 * puts it on the app's handle, as a relay in a worker or another process would.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { after } from 'node:test'
import { setImmediate as yieldInTransaction } from 'node:timers/promises'
import Database from 'better-sqlite3'
import { createBetterSqliteOutbox } from '../../src/adapters/better-sqlite3/index.ts'
import { createNodeSqliteOutbox } from '../../src/adapters/node-sqlite/index.ts'
import type { SqliteOutbox, SqliteOutboxOptions } from '../../src/dialects/sqlite/sqlite-outbox.ts'
import type { TopicMap } from '../../src/index.ts'
import { asyncProducers } from '../contract/sqlite-support.ts'
import type { StoreContext, StoreHarness, StoreSetupOptions } from './harness.ts'

/** What differs between the two drivers: opening a file and the driver's own way to run a transaction. */
interface SqliteDb {
  exec(sql: string): void
  prepare(sql: string): { run(...values: never[]): unknown; all(...values: never[]): unknown[] }
  close(): void
}

interface Driver<Db extends SqliteDb> {
  name: string
  open(file: string): Db
  create<M extends TopicMap>(options: SqliteOutboxOptions<M>): SqliteOutbox<M, Db>
  /** A synchronous transaction the way an app using this driver writes one. */
  syncTransaction(db: Db, fn: () => void): void
}

const betterSqlite3: Driver<Database.Database> = {
  name: 'better-sqlite3',
  open: (file) => new Database(file),
  create: createBetterSqliteOutbox,
  syncTransaction: (db, fn) => db.transaction(fn)(),
}

const nodeSqlite: Driver<DatabaseSync> = {
  name: 'node:sqlite',
  open: (file) => new DatabaseSync(file),
  create: createNodeSqliteOutbox,
  syncTransaction(db, fn) {
    db.exec('BEGIN')
    try {
      fn()
      db.exec('COMMIT')
    } catch (error) {
      db.exec('ROLLBACK')
      throw error
    }
  },
}

/** This test file's folder of database files; registered on import, so it is removed after the file. */
const directory = mkdtempSync(join(tmpdir(), 'ke-relay-store-'))
after(() => rmSync(directory, { recursive: true, force: true }))

function sqliteHarness<Db extends SqliteDb>(driver: Driver<Db>): StoreHarness {
  async function setup<M extends TopicMap>(options: StoreSetupOptions<M>): Promise<StoreContext<M>> {
    // In memory: names of its own, to cover the schema and table options; on file: the defaults.
    const names = options.inMemory ? { schema: 'edge', table: 'events' } : {}
    const table = options.inMemory ? 'edge_events' : 'k_entity_outbox'
    const outbox = driver.create({
      topics: options.topics,
      kafka: { brokers: options.brokers, autoCreateTopics: true },
      ...names,
    })
    const file = options.inMemory ? ':memory:' : join(directory, `${options.name}.sqlite`)
    const db = driver.open(file)
    if (!options.inMemory) db.exec('PRAGMA journal_mode = WAL')
    if (options.migrate !== false) assert.deepEqual(outbox.migrate(db), { applied: [1], current: 1 })
    db.exec('CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL)')
    const place = options.inMemory ? db : file
    const count = (name: string) =>
      Number((db.prepare(`SELECT COUNT(*) AS n FROM "${name}"`).all()[0] as { n: number }).n)
    const insert = (id: string, customer: string) =>
      db.prepare('INSERT INTO orders (id, customer) VALUES (?, ?)').run(...([id, customer] as never[]))
    return {
      transaction: (fn) =>
        outbox.transaction(db, async (_db, topics) =>
          fn({
            topics: asyncProducers(topics),
            async insertOrders(rows) {
              for (const row of rows) insert(row.id, row.customer)
              // Work that awaits inside the transaction: other writers queue behind it.
              await yieldInTransaction()
            },
          }),
        ),
      syncTransaction(fn) {
        driver.syncTransaction(db, () =>
          fn({
            produce: (accessor, message) => outbox.in(db)[accessor].produce(message as never),
            insertOrder: insert,
          }),
        )
      },
      produceOutsideTransaction: async (accessor, message) =>
        outbox.in(db)[accessor].produce(message as never, { key: 'k' }),
      inWith: (handle) => outbox.in(handle as never),
      invalidHandles: [{}, null],
      relay: ({ tag: _, onAppHandle, ...rest } = {}) =>
        outbox.relay({ ...rest, connection: onAppHandle || options.inMemory ? db : file }),
      relayWith: (relayOptions) => outbox.relay(relayOptions as never),
      invalidRelayOptions: [{ connection: ':memory:' }, { connection: {} }, undefined],
      migrate: async () => outbox.migrate(db),
      migrationSql: () => outbox.migrationSql(),
      runMigrationScript: async () => db.exec(outbox.migrationSql()),
      migrationVersions: async () =>
        (
          db.prepare(`SELECT version FROM "${table}_migrations" ORDER BY version`).all() as {
            version: number
          }[]
        ).map((r) => Number(r.version)),
      async checkMigratedObjects() {
        assert.match(outbox.migrationSql(), /CREATE TABLE "k_entity_outbox"/)
      },
      stats: () => outbox.stats(db),
      deadLetters: () => outbox.deadLetters(place),
      countOutbox: async () => count(table),
      countOrders: async () => count('orders'),
      outboxValues: async () =>
        (
          db.prepare(`SELECT CAST(value AS TEXT) AS v FROM "${table}" ORDER BY id`).all() as { v: string }[]
        ).map((r) => r.v),
      async teardown() {
        db.close()
        if (!options.inMemory)
          for (const suffix of ['', '-wal', '-shm']) rmSync(`${file}${suffix}`, { force: true })
      },
    }
  }
  return {
    name: `SQLite (${driver.name})`,
    capabilities: {
      modes: ['single'],
      refusedModeMessage: /single writer.*one relay/s,
      secondRelay: 'refused',
      fencing: false,
      parallelTransactions: false,
      listen: false,
      pipeline: false,
      directTopics: 'refused',
      idempotentScript: false,
      syncTransactions: true,
    },
    load: { atomicityTransactions: 500, orderedMessages: 5000 },
    migrations: [1],
    setup,
  }
}

export const betterSqliteHarness = sqliteHarness(betterSqlite3)
export const nodeSqliteHarness = sqliteHarness(nodeSqlite as unknown as Driver<SqliteDb>)
