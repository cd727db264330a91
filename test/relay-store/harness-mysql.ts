/**
 * MySQL/MariaDB through mysql2: one database per test. A tagged relay connects with a default
 * database of its own (`<database>_<tag>`, empty: the relay names its tables in full), which is
 * how its session is found in PROCESSLIST on a server shared with other test runs.
 */
import assert from 'node:assert/strict'
import mysql from 'mysql2/promise'
import { createMysqlOutbox } from '../../src/adapters/mysql2/index.ts'
import { lockName } from '../../src/dialects/mysql/index.ts'
import { keyLockSlot } from '../../src/dialects/mysql/names.ts'
import { ErrorCodes, type TopicMap } from '../../src/index.ts'
import {
  countMysqlRows,
  createOrdersTable,
  dropDatabase,
  MYSQL_URL,
  withMysql,
} from '../contract/mysql-support.ts'
import { waitFor } from '../support/env.ts'
import type { OrderWrite, StoreContext, StoreHarness, StoreSetupOptions } from './harness.ts'

function writer<M extends TopicMap>(
  connection: mysql.PoolConnection,
  topics: OrderWrite<M>['topics'],
  database: string,
): OrderWrite<M> {
  return {
    topics,
    async insertOrders(rows) {
      await connection.query(`INSERT INTO \`${database}\`.orders (id, customer) VALUES ?`, [
        rows.map((r) => [r.id, r.customer]),
      ])
    },
  }
}

async function rowsOf<R>(sql: string, values: unknown[] = []): Promise<R[]> {
  return withMysql(async (c) => (await c.query(sql, values))[0] as R[])
}

async function setup<M extends TopicMap>(options: StoreSetupOptions<M>): Promise<StoreContext<M>> {
  const database = options.name
  const kafka = { brokers: options.brokers, autoCreateTopics: true }
  const outbox = createMysqlOutbox({ topics: options.topics, schema: database, kafka })
  const tagDatabase = (tag: string) => `${database}_${tag}`
  if (options.migrate !== false) {
    await outbox.migrate(MYSQL_URL)
    await createOrdersTable(database)
  }
  const tags = options.tags ?? []
  await withMysql(async (c) => {
    for (const tag of tags) await c.query(`CREATE DATABASE \`${tagDatabase(tag)}\``)
  })
  const pool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 12 })
  const tagUrl = (tag: string) => {
    const url = new URL(MYSQL_URL)
    url.pathname = `/${tagDatabase(tag)}`
    return url.toString()
  }
  const leaderLock = lockName({ schema: database, table: 'outbox' }, 'leader')
  return {
    transaction: (fn) =>
      outbox.transaction(pool, (connection, topics) => fn(writer(connection, topics, database))),
    async openTransaction() {
      const connection = await pool.getConnection()
      await connection.beginTransaction()
      return {
        ...writer(connection, outbox.in(connection), database),
        async updateOrder(id, customer) {
          await connection.query(`UPDATE \`${database}\`.orders SET customer = ? WHERE id = ?`, [
            customer,
            id,
          ])
        },
        commit: () => connection.commit(),
        rollback: () => connection.rollback(),
        release: async () => connection.release(),
      }
    },
    async produceOutsideTransaction(accessor, message) {
      const connection = await pool.getConnection()
      try {
        await outbox.in(connection)[accessor].produce(message as never, { key: 'k' })
      } finally {
        connection.release()
      }
    },
    inWith: (handle) => outbox.in(handle as never),
    invalidHandles: [{}, null, pool],
    relay({ tag, onAppHandle: _, ...options } = {}) {
      return outbox.relay({ ...options, connection: tag === undefined ? MYSQL_URL : tagUrl(tag) })
    },
    relayWith: (options) => outbox.relay(options as never),
    invalidRelayOptions: [
      { connection: MYSQL_URL, claimTimeout: 10 },
      { connection: MYSQL_URL, mode: 'leader' },
    ],
    migrate: () => outbox.migrate(MYSQL_URL),
    migrationSql: () => outbox.migrationSql(),
    async runMigrationScript() {
      const statements = outbox
        .migrationSql()
        .split(/;\n/)
        .map((s) => s.trim())
        .filter((s) => s.length > 0 && !s.startsWith('--'))
      await withMysql(async (c) => {
        for (const statement of statements) await c.query(statement.replace(/^--.*\n/, ''))
      })
    },
    migrationVersions: async () =>
      (
        await rowsOf<{ version: number }>(
          `SELECT version FROM \`${database}\`.outbox_migrations ORDER BY version`,
        )
      ).map((r) => Number(r.version)),
    async checkMigratedObjects() {
      const [slots] = await rowsOf<{ n: number }>(
        `SELECT COUNT(*) AS n FROM \`${database}\`.outbox_key_locks`,
      )
      assert.equal(Number(slots?.n), 65_536)
    },
    stats: () => outbox.stats(MYSQL_URL),
    deadLetters: () => outbox.deadLetters(MYSQL_URL),
    countOutbox: () => countMysqlRows(database),
    countOrders: () => countMysqlRows(database, 'orders'),
    outboxValues: async () =>
      (
        await rowsOf<{ v: string }>(`SELECT CAST(value AS CHAR) AS v FROM \`${database}\`.outbox ORDER BY id`)
      ).map((r) => r.v),
    // Producers serialise on one of 65,536 lock rows, chosen by the low bits of the hash.
    keyLock: keyLockSlot,
    async killSession(tag, holding) {
      const ids = (
        await rowsOf<{ id: number }>('SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = ?', [
          tagDatabase(tag),
        ])
      ).map((row) => Number(row.id))
      let id: number
      if (holding === 'leader') {
        // A pipelined relay has a second session (its companion): the one with the lock is killed.
        const [lock] = await rowsOf<{ holder: number | null }>('SELECT IS_USED_LOCK(?) AS holder', [
          leaderLock,
        ])
        id = Number(lock?.holder)
        assert.ok(
          ids.includes(id),
          `relay ${tag} holds the leader lock on its session: ${JSON.stringify(ids)}`,
        )
      } else {
        assert.equal(ids.length, 1, `one session of relay ${tag}: ${JSON.stringify(ids)}`)
        id = ids[0] as number
        // Its claim is open for as long as its send is held; INNODB_TRX may lag ~100 ms behind.
        await waitFor(
          async () =>
            (
              await rowsOf(
                'SELECT 1 FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ? AND trx_rows_locked > 0',
                [id],
              )
            ).length === 1,
          { what: `the open claim of relay ${tag} in INNODB_TRX`, interval: 150, timeout: 10_000 },
        )
      }
      await withMysql((c) => c.query(`KILL ${id}`))
    },
    async leaderTag() {
      const [lock] = await rowsOf<{ holder: number | null }>('SELECT IS_USED_LOCK(?) AS holder', [leaderLock])
      if (lock?.holder === null || lock?.holder === undefined) return undefined
      const [session] = await rowsOf<{ db: string | null }>(
        'SELECT DB AS db FROM information_schema.PROCESSLIST WHERE ID = ?',
        [Number(lock.holder)],
      )
      return session?.db?.startsWith(`${database}_`) ? session.db.slice(database.length + 1) : undefined
    },
    async teardown() {
      await pool.end()
      await outbox.close()
      for (const name of [database, ...tags.map(tagDatabase)]) await dropDatabase(name)
    },
  }
}

export const mysqlHarness: StoreHarness = {
  name: 'MySQL/MariaDB (mysql2)',
  capabilities: {
    modes: ['single', 'exclusive', 'concurrent'],
    refusedModeMessage: /mode/,
    secondRelay: 'stands-by',
    fencing: true,
    parallelTransactions: true,
    listen: false,
    pipeline: true,
    directTopics: 'sent',
    idempotentScript: true,
    syncTransactions: false,
    deadlock: { driverCode: 'ER_LOCK_DEADLOCK', produceFails: ErrorCodes.NO_TRANSACTION },
  },
  load: { atomicityTransactions: 500, orderedMessages: 5000 },
  migrations: [1],
  setup,
}
