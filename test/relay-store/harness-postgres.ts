/** PostgreSQL through node-postgres: one schema per test; relays tagged by their `application_name`. */
import assert from 'node:assert/strict'
import pg from 'pg'
import { createPgOutbox } from '../../src/adapters/pg/index.ts'
import { lockClass } from '../../src/dialects/postgres/names.ts'
import { ErrorCodes, type TopicMap } from '../../src/index.ts'
import { DATABASE_URL, dropSchema, waitFor, withClient } from '../support/env.ts'
import type { OrderWrite, StoreContext, StoreHarness, StoreSetupOptions } from './harness.ts'

async function scalar(sql: string, values: unknown[] = []): Promise<number> {
  return withClient(async (client) => Number((await client.query(sql, values)).rows[0]?.n))
}

/** The app's writes on PostgreSQL (node-postgres or PGlite): `query` is the transaction's. */
export function postgresOrderWrite<M extends TopicMap>(
  transaction: { query(text: string, values: unknown[]): Promise<unknown> },
  topics: OrderWrite<M>['topics'],
  schema: string,
): OrderWrite<M> {
  return {
    topics,
    async insertOrders(rows) {
      await transaction.query(
        `INSERT INTO "${schema}".orders (id, customer) SELECT * FROM unnest($1::text[], $2::text[])`,
        [rows.map((r) => r.id), rows.map((r) => r.customer)],
      )
    },
  }
}

async function setup<M extends TopicMap>(options: StoreSetupOptions<M>): Promise<StoreContext<M>> {
  const schema = options.name
  const kafka = { brokers: options.brokers, autoCreateTopics: true }
  const outbox = createPgOutbox({ topics: options.topics, schema, kafka })
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 })
  if (options.migrate !== false) {
    await outbox.migrate(DATABASE_URL)
    await withClient((c) =>
      c.query(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY, customer text NOT NULL)`),
    )
  }
  // Unique on the shared server, so that only this test's relays are ever found or ended.
  const applicationName = (tag: string) => `${schema}_${tag}`
  const table = { schema, table: 'outbox' }
  const leaderPids = `SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid AND l.objid = 0`
  const leaderClass = lockClass(table, 'leader') >>> 0
  const closers: (() => Promise<void>)[] = []
  return {
    transaction: (fn) =>
      outbox.transaction(pool, (client, topics) => fn(postgresOrderWrite(client, topics, schema))),
    async openTransaction() {
      const client = await pool.connect()
      await client.query('BEGIN')
      return {
        ...postgresOrderWrite(client, outbox.in(client), schema),
        async updateOrder(id, customer) {
          await client.query(`UPDATE "${schema}".orders SET customer = $1 WHERE id = $2`, [customer, id])
        },
        commit: async () => void (await client.query('COMMIT')),
        rollback: async () => void (await client.query('ROLLBACK')),
        release: async () => client.release(),
      }
    },
    async produceOutsideTransaction(accessor, message) {
      const client = await pool.connect()
      try {
        await outbox.in(client)[accessor].produce(message as never, { key: 'k' })
      } finally {
        client.release()
      }
    },
    inWith: (handle) => outbox.in(handle as never),
    invalidHandles: [{}, null],
    relay({ tag, onAppHandle: _, ...options } = {}) {
      return outbox.relay({
        ...options,
        connection:
          tag === undefined
            ? DATABASE_URL
            : { connectionString: DATABASE_URL, application_name: applicationName(tag) },
      })
    },
    relayWith: (options) => outbox.relay(options as never),
    invalidRelayOptions: [
      { connection: DATABASE_URL, claimTimeout: 10 },
      { connection: DATABASE_URL, listen: 'yes' },
      { connection: DATABASE_URL, mode: 'leader' },
    ],
    migrate: () => outbox.migrate(DATABASE_URL),
    migrationSql: () => outbox.migrationSql(),
    runMigrationScript: async () => void (await withClient((c) => c.query(outbox.migrationSql()))),
    migrationVersions: () =>
      withClient(async (c) =>
        (await c.query(`SELECT version FROM "${schema}".outbox_migrations ORDER BY version`)).rows.map((r) =>
          Number(r.version),
        ),
      ),
    stats: () => outbox.stats(DATABASE_URL),
    deadLetters: () => outbox.deadLetters(DATABASE_URL),
    countOutbox: () => scalar(`SELECT count(*)::int AS n FROM "${schema}".outbox`),
    countOrders: () => scalar(`SELECT count(*)::int AS n FROM "${schema}".orders`),
    outboxValues: () =>
      withClient(async (c) =>
        (
          await c.query(`SELECT convert_from(value, 'UTF8') AS v FROM "${schema}".outbox ORDER BY id`)
        ).rows.map((r) => r.v as string),
      ),
    // Producers take a transaction-scoped advisory lock on the whole ordering hash.
    keyLock: (orderingHash) => orderingHash,
    async killSession(tag, holding) {
      const name = applicationName(tag)
      let pids: number[] = []
      await waitFor(
        async () => {
          const rows = await withClient(async (c) =>
            holding === 'leader'
              ? (await c.query(`${leaderPids} AND a.application_name = $2`, [leaderClass, name])).rows
              : // Its claim is open for as long as its send is held.
                (
                  await c.query(
                    `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'`,
                    [name],
                  )
                ).rows,
          )
          pids = rows.map((r) => Number(r.pid))
          return pids.length > 0
        },
        { what: `the session of relay ${tag} holding its ${holding}`, interval: 150, timeout: 10_000 },
      )
      assert.equal(
        pids.length,
        1,
        `one session of relay ${tag} holds its ${holding}: ${JSON.stringify(pids)}`,
      )
      const ended = await withClient((c) => c.query('SELECT pg_terminate_backend($1) AS ended', [pids[0]]))
      assert.equal(ended.rows[0]?.ended, true)
    },
    async leaderTag() {
      const rows = await withClient(async (c) => (await c.query(leaderPids, [leaderClass])).rows)
      const name = rows[0]?.application_name as string | undefined
      return name?.startsWith(`${schema}_`) ? name.slice(schema.length + 1) : name
    },
    async otherWriter() {
      const other = createPgOutbox({ topics: options.topics, schema, kafka })
      const otherPool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
      closers.push(async () => {
        await otherPool.end()
        await other.close()
      })
      return {
        transaction: (fn) =>
          other.transaction(otherPool, (client, topics) => fn(postgresOrderWrite(client, topics, schema))),
        close: async () => {},
      }
    },
    async teardown() {
      for (const close of closers) await close()
      await pool.end()
      await outbox.close()
      await dropSchema(schema)
    },
  }
}

export const postgresHarness: StoreHarness = {
  name: 'PostgreSQL (node-postgres)',
  capabilities: {
    modes: ['single', 'exclusive', 'concurrent'],
    refusedModeMessage: /mode/,
    secondRelay: 'stands-by',
    fencing: true,
    parallelTransactions: true,
    listen: true,
    pipeline: true,
    directTopics: 'sent',
    idempotentScript: false,
    syncTransactions: false,
    deadlock: { driverCode: '40P01', produceFails: ErrorCodes.TRANSACTION_ABORTED },
  },
  load: { atomicityTransactions: 1000, orderedMessages: 10_000 },
  migrations: [1, 2, 3],
  setup,
}
