/** PGlite (PostgreSQL in WebAssembly, in this process): one database per test file, one schema per test. */
import type { Transaction } from '@electric-sql/pglite'
import { createPgliteOutbox } from '../../src/adapters/pglite/index.ts'
import type { TopicMap } from '../../src/index.ts'
import { sharedPgliteDatabase } from '../contract/harness-pglite.ts'
import type { StoreContext, StoreHarness, StoreSetupOptions } from './harness.ts'
import { postgresOrderWrite } from './harness-postgres.ts'

async function setup<M extends TopicMap>(options: StoreSetupOptions<M>): Promise<StoreContext<M>> {
  const schema = options.name
  const db = await sharedPgliteDatabase()
  const kafka = { brokers: options.brokers, autoCreateTopics: true }
  const outbox = createPgliteOutbox({ db, topics: options.topics, schema, kafka })
  if (options.migrate !== false) {
    await outbox.migrate()
    await db.exec(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY, customer text NOT NULL)`)
  }
  const scalar = async (sql: string) => Number((await db.query<{ n: number }>(sql)).rows[0]?.n)
  const closers: (() => Promise<void>)[] = []
  return {
    transaction: (fn) => outbox.transaction((tx, topics) => fn(postgresOrderWrite(tx, topics, schema))),
    // The types keep the database itself out; this is the runtime check for untyped callers.
    produceOutsideTransaction: (accessor, message) =>
      outbox.in(db as unknown as Transaction)[accessor].produce(message as never, { key: 'k' }),
    inWith: (handle) => outbox.in(handle as never),
    invalidHandles: [{}, null],
    relay: ({ tag: _, onAppHandle: __, ...rest } = {}) => outbox.relay(rest as never),
    relayWith: (relayOptions) => outbox.relay(relayOptions as never),
    invalidRelayOptions: [
      { connection: 'postgres://elsewhere' },
      { claimTimeout: 60_000 },
      { leaderCheckInterval: 100 },
    ],
    migrate: () => outbox.migrate(),
    migrationSql: () => outbox.migrationSql(),
    runMigrationScript: async () => void (await db.exec(outbox.migrationSql())),
    migrationVersions: async () =>
      (
        await db.query<{ version: number }>(
          `SELECT version FROM "${schema}".outbox_migrations ORDER BY version`,
        )
      ).rows.map((r) => Number(r.version)),
    stats: () => outbox.stats(),
    deadLetters: () => outbox.deadLetters(),
    countOutbox: () => scalar(`SELECT count(*)::int AS n FROM "${schema}".outbox`),
    countOrders: () => scalar(`SELECT count(*)::int AS n FROM "${schema}".orders`),
    outboxValues: async () =>
      (
        await db.query<{ v: string }>(
          `SELECT convert_from(value, 'UTF8') AS v FROM "${schema}".outbox ORDER BY id`,
        )
      ).rows.map((r) => r.v),
    async otherWriter() {
      const other = createPgliteOutbox({ db, topics: options.topics, schema, kafka })
      closers.push(() => other.close())
      return {
        transaction: (fn) => other.transaction((tx, topics) => fn(postgresOrderWrite(tx, topics, schema))),
        close: async () => {},
      }
    },
    async teardown() {
      for (const close of closers) await close()
      await outbox.close()
      await db.exec(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    },
  }
}

export const pgliteHarness: StoreHarness = {
  name: 'PGlite',
  capabilities: {
    modes: ['single'],
    refusedModeMessage: /one relay/,
    secondRelay: 'refused',
    fencing: false,
    parallelTransactions: false,
    listen: true,
    pipeline: false,
    directTopics: 'sent',
    idempotentScript: false,
    syncTransactions: false,
  },
  // One WebAssembly session serialises every commit and claim: a smaller atomicity run.
  load: { atomicityTransactions: 200, orderedMessages: 5000 },
  migrations: [1, 2, 3],
  setup,
}
