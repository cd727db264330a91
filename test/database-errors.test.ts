/**
 * Issue 22 on real databases: a deadlock and a lock timeout that hit `produce()` (or the COMMIT
 * carrying node-postgres's held writes) reject with the driver's own error, which the app's retry
 * logic knows, and `outbox.isRetryable()` reads as retryable with the dialect's table. A relay session an administrator ended mid-claim: the
 * server's 57P01 is classified retryable, and the batch it had claimed fails to complete as a
 * retryable KE_STORE_FAILED, not KE_INTERNAL. SQLite: a write while another connection holds the
 * database lock (SQLITE_BUSY). Every lock is on this test's own schema / database / file.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { after, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createBetterSqliteOutbox } from '../src/adapters/better-sqlite3/index.ts'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createNodeSqliteOutbox } from '../src/adapters/node-sqlite/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { internalCause } from '../src/core/errors.ts'
import { classifyFailure } from '../src/dialects/postgres/errors.ts'
import { PostgresRelayStore } from '../src/dialects/postgres/relay-store.ts'
import { defineTopic, ErrorCodes, KEntityError } from '../src/index.ts'
import { explainDatabaseError } from '../src/outbox/not-migrated.ts'
import { dropDatabase, MYSQL_URL } from './contract/mysql-support.ts'
import { DATABASE_URL, dropSchema, uniqueName, waitFor } from './support/env.ts'

const topics = { events: defineTopic<string>({ name: 'ke-database-errors' }) }

/** The error a classified database condition becomes: `code`, `retryable`, and the driver's code on `cause`. */
function classified(
  code: string,
  retryable: boolean,
  driver: { code?: string; errno?: number; errcode?: number },
) {
  return (error: unknown) => {
    assert.ok(error instanceof KEntityError, `not a KEntityError: ${String(error)}`)
    assert.equal(error.code, code, error.message)
    assert.equal(error.retryable, retryable, error.message)
    const cause = error.cause as { code?: string; errno?: number; errcode?: number }
    if (driver.code !== undefined) assert.equal(cause?.code, driver.code, error.message)
    if (driver.errno !== undefined) assert.equal(cause?.errno, driver.errno, error.message)
    if (driver.errcode !== undefined) assert.equal(cause?.errcode, driver.errcode, error.message)
    return true
  }
}

/**
 * A driver error from the app's own transaction: it stays the driver's (the app's retry logic
 * recognises it), and the outbox's `isRetryable()` reads it as retryable with the dialect's table.
 */
function passedThrough(
  outbox: { isRetryable(error: unknown): boolean },
  driver: { code?: string; errno?: number; errcode?: number },
) {
  return (error: unknown) => {
    assert.ok(!(error instanceof KEntityError), `wrapped: ${String(error)}`)
    const own = error as { code?: string; errno?: number; errcode?: number }
    if (driver.code !== undefined) assert.equal(own.code, driver.code, String(error))
    if (driver.errno !== undefined) assert.equal(own.errno, driver.errno, String(error))
    if (driver.errcode !== undefined) assert.equal(own.errcode, driver.errcode, String(error))
    assert.equal(outbox.isRetryable(error), true, String(error))
    return true
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('PostgreSQL (node-postgres)', () => {
  const schema = uniqueName('ke_dberr')
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 3 })
  after(async () => {
    await pool.end()
    await dropSchema(schema)
  })

  /** A second session holding a SHARE lock on the outbox table: inserts wait, reads do not. */
  async function holdOutbox(): Promise<pg.PoolClient> {
    const holder = await pool.connect()
    await holder.query('BEGIN')
    await holder.query(`LOCK TABLE "${schema}".outbox IN SHARE MODE`)
    return holder
  }

  it("a lock timeout (55P03) at produce() and at the COMMIT of held writes: the driver's own error, isRetryable() true", async () => {
    const eager = createPgOutbox({ topics, schema, writeWithCommit: false })
    const held = createPgOutbox({ topics, schema })
    await eager.migrate(DATABASE_URL)
    const holder = await holdOutbox()
    try {
      for (const outbox of [eager, held]) {
        await assert.rejects(
          outbox.transaction(pool, async (client, producers) => {
            await client.query(`SET LOCAL lock_timeout = '200ms'`)
            await producers.events.produce('x')
          }),
          passedThrough(outbox, { code: '55P03' }),
        )
      }
    } finally {
      await holder.query('ROLLBACK')
      holder.release()
    }
  })

  it("a deadlock (40P01) at produce(): the driver's own error, isRetryable() true, and nothing stored", async () => {
    const outbox = createPgOutbox({ topics, schema, writeWithCommit: false })
    await outbox.migrate(DATABASE_URL)
    await pool.query(
      `CREATE TABLE "${schema}".mine (id int PRIMARY KEY, v int); INSERT INTO "${schema}".mine VALUES (1, 0)`,
    )
    const other = await pool.connect()
    let otherUpdate: Promise<unknown> | undefined
    try {
      await assert.rejects(
        outbox.transaction(pool, async (client, producers) => {
          await client.query(`UPDATE "${schema}".mine SET v = v + 1 WHERE id = 1`)
          // This session checks for the deadlock first, so it is the one PostgreSQL aborts.
          await client.query(`SET LOCAL deadlock_timeout = '50ms'`)
          await other.query(
            `BEGIN; SET LOCAL deadlock_timeout = '10s'; LOCK TABLE "${schema}".outbox IN SHARE MODE`,
          )
          const { rows } = await other.query('SELECT pg_backend_pid() AS pid')
          otherUpdate = other.query(`UPDATE "${schema}".mine SET v = v + 1 WHERE id = 1`)
          await waitFor(
            async () =>
              (
                await pool.query(
                  `SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'`,
                  [rows[0].pid],
                )
              ).rowCount === 1,
            { timeout: 5000, what: 'the other session to wait for this one' },
          )
          await producers.events.produce('x')
        }),
        passedThrough(outbox, { code: '40P01' }),
      )
      await otherUpdate
    } finally {
      await otherUpdate?.catch(() => {})
      await other.query('ROLLBACK')
      other.release()
    }
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${schema}".outbox`)
    assert.equal(rows[0].n, 0)
  })

  it('a relay session an administrator ended mid-claim (57P01): KE_STORE_FAILED, retryable, never KE_INTERNAL', async () => {
    const outbox = createPgOutbox({ topics, schema })
    await outbox.migrate(DATABASE_URL)
    await outbox.transaction(pool, async (_client, producers) => {
      await producers.events.produce('x')
    })
    const applicationName = uniqueName('ke_dberr_relay')
    const sessionErrors: unknown[] = []
    const store = new PostgresRelayStore({
      table: { schema, table: 'outbox' },
      connect: async () => {
        const client = new pg.Client({ connectionString: DATABASE_URL, application_name: applicationName })
        client.on('error', (error) => sessionErrors.push(error))
        await client.connect()
        return client
      },
      claimTimeout: 30_000,
      sessionIdleTimeout: 0,
      concurrent: false,
      listen: false,
      exclusive: false,
    })
    try {
      await store.connect()
      const claimed = await store.claim(10)
      assert.equal(claimed.length, 1)
      await pool.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [
        applicationName,
      ])
      await waitFor(() => sessionErrors.length > 0 && !store.healthy, {
        timeout: 5000,
        what: 'the relay session to hear it was terminated',
      })
      // What the server said, through PostgreSQL's table.
      const said = explainDatabaseError(sessionErrors[0], classifyFailure, undefined)
      assert.ok(classified(ErrorCodes.STORE_FAILED, true, { code: '57P01' })(said))
      // The batch that was in Kafka's hands cannot be acknowledged: its claim ended with the
      // session, a condition the relay retries (the row stays and is sent again), not a bug.
      await assert.rejects(store.complete(claimed.map((message) => message.id)), (error: unknown) => {
        assert.ok(error instanceof KEntityError, String(error))
        assert.equal(error.code, ErrorCodes.STORE_FAILED, error.message)
        assert.equal(error.retryable, true, error.message)
        assert.equal(internalCause(error), undefined)
        return true
      })
    } finally {
      await store.close()
    }
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${schema}".outbox`)
    assert.equal(rows[0].n, 1)
  })
})

describe('MariaDB / MySQL (mysql2)', () => {
  const database = uniqueName('ke_dberr')
  const pool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 3, multipleStatements: false })
  after(async () => {
    await pool.end()
    await dropDatabase(database)
  })

  /** A second connection holding every key-lock slot, which a keyed produce() locks first. */
  async function holdKeyLocks(): Promise<mysql.PoolConnection> {
    const holder = await pool.getConnection()
    await holder.query('BEGIN')
    await holder.query(`SELECT slot FROM \`${database}\`.outbox_key_locks FOR UPDATE`)
    return holder
  }

  it("a lock wait timeout (1205) at produce(): the driver's own error, isRetryable() true", async () => {
    const outbox = createMysqlOutbox({ topics, schema: database })
    await outbox.migrate(MYSQL_URL)
    const holder = await holdKeyLocks()
    try {
      await assert.rejects(
        outbox.transaction(pool, async (connection, producers) => {
          await connection.query('SET SESSION innodb_lock_wait_timeout = 1')
          await producers.events.produce('x', { key: 'k' })
        }),
        passedThrough(outbox, { errno: 1205 }),
      )
    } finally {
      await holder.query('ROLLBACK')
      holder.release()
    }
  })

  it("a deadlock (1213) at produce(): the driver's own error, isRetryable() true, and nothing stored", async () => {
    const outbox = createMysqlOutbox({ topics, schema: database })
    await outbox.migrate(MYSQL_URL)
    await pool.query(`CREATE TABLE \`${database}\`.mine (id INT PRIMARY KEY, v INT)`)
    await pool.query(`INSERT INTO \`${database}\`.mine VALUES (1, 0)`)
    await pool.query(`CREATE TABLE \`${database}\`.heavy (id INT PRIMARY KEY, v INT)`)
    await pool.query(
      `INSERT INTO \`${database}\`.heavy SELECT seq, 0 FROM (SELECT a.n * 10 + b.n AS seq FROM (SELECT 0 n UNION SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4 UNION SELECT 5 UNION SELECT 6 UNION SELECT 7 UNION SELECT 8 UNION SELECT 9) a, (SELECT 0 n UNION SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4 UNION SELECT 5 UNION SELECT 6 UNION SELECT 7 UNION SELECT 8 UNION SELECT 9) b) s`,
    )
    const other = await pool.getConnection()
    let otherUpdate: Promise<unknown> | undefined
    try {
      await assert.rejects(
        outbox.transaction(pool, async (connection, producers) => {
          await connection.query(`UPDATE \`${database}\`.mine SET v = v + 1 WHERE id = 1`)
          await other.query('BEGIN')
          // InnoDB rolls back the transaction that changed least: the other one changes 100 rows.
          await other.query(`UPDATE \`${database}\`.heavy SET v = v + 1`)
          await other.query(`SELECT slot FROM \`${database}\`.outbox_key_locks FOR UPDATE`)
          const [[{ id }]] = (await other.query('SELECT CONNECTION_ID() AS id')) as unknown as [
            [{ id: number }],
          ]
          otherUpdate = other.query(`UPDATE \`${database}\`.mine SET v = v + 1 WHERE id = 1`)
          await waitFor(
            async () => {
              const [rows] = await pool.query(
                `SELECT 1 FROM information_schema.processlist WHERE id = ? AND info LIKE 'UPDATE%mine%'`,
                [id],
              )
              return (rows as unknown[]).length === 1
            },
            { timeout: 5000, what: 'the other connection to wait for this one' },
          )
          await sleep(100)
          await producers.events.produce('x', { key: 'k' })
        }),
        passedThrough(outbox, { errno: 1213 }),
      )
      await otherUpdate
    } finally {
      await otherUpdate?.catch(() => {})
      await other.query('ROLLBACK')
      other.release()
    }
    const [rows] = await pool.query(`SELECT COUNT(*) AS n FROM \`${database}\`.outbox`)
    assert.equal(Number((rows as { n: number }[])[0]?.n), 0)
  })
})

describe('SQLite (better-sqlite3, node:sqlite)', () => {
  const directory = mkdtempSync(join(tmpdir(), 'ke-dberr-'))
  after(() => rmSync(directory, { recursive: true, force: true }))

  it("a database another connection is writing (SQLITE_BUSY) at produce(): the driver's own error, isRetryable() true", async () => {
    const file = join(directory, 'busy.db')
    const outbox = createBetterSqliteOutbox({ topics })
    const setup = new Database(file)
    await outbox.migrate(setup)
    setup.close()
    // Each library has its own SQLite, and POSIX locks do not conflict within one process: each
    // is locked out by a connection of its own library.
    const holder = new Database(file)
    const app = new Database(file, { timeout: 0 })
    const nodeHolder = new DatabaseSync(file)
    const nodeApp = new DatabaseSync(file, { timeout: 0 })
    const nodeOutbox = createNodeSqliteOutbox({ topics })
    try {
      holder.exec('BEGIN IMMEDIATE')
      assert.throws(
        () => app.transaction(() => outbox.in(app).events.produce('x'))(),
        passedThrough(outbox, { code: 'SQLITE_BUSY' }),
      )
      holder.exec('ROLLBACK')
      nodeHolder.exec('BEGIN IMMEDIATE')
      nodeApp.exec('BEGIN')
      assert.throws(
        () => nodeOutbox.in(nodeApp).events.produce('x'),
        passedThrough(nodeOutbox, { errcode: 5 }),
      )
      nodeApp.exec('ROLLBACK')
      nodeHolder.exec('ROLLBACK')
      assert.equal((app.prepare('SELECT count(*) AS n FROM k_entity_outbox').get() as { n: number }).n, 0)
    } finally {
      if (holder.inTransaction) holder.exec('ROLLBACK')
      if (nodeHolder.isTransaction) nodeHolder.exec('ROLLBACK')
      if (nodeApp.isTransaction) nodeApp.exec('ROLLBACK')
      for (const db of [holder, app, nodeHolder, nodeApp]) db.close()
    }
  })
})
