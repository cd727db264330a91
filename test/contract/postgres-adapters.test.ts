// What the postgres.js, Kysely, Knex and Drizzle adapters do beyond the shared contract: every
// wrong handle is refused with a KEntityError before anything touches the database, statements
// are translated faithfully, and the postgres.js relay session behaves like a pg client.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { drizzle as drizzleMysql } from 'drizzle-orm/mysql2'
import { drizzle as drizzleNodePg } from 'drizzle-orm/node-postgres'
import createKnex from 'knex'
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely'
import mysql from 'mysql2'
import pg from 'pg'
import postgres from 'postgres'
import { createDrizzleOutbox } from '../../src/adapters/drizzle/index.ts'
import { createKnexOutbox, toKnexBindings } from '../../src/adapters/knex/index.ts'
import { createKyselyOutbox } from '../../src/adapters/kysely/index.ts'
import { createPostgresJsOutbox } from '../../src/adapters/postgres-js/index.ts'
import { openPostgresJsSession } from '../../src/adapters/postgres-js/session.ts'
import { withArrayLiterals } from '../../src/dialects/postgres/parameters.ts'
import type { PgQueryResult } from '../../src/dialects/postgres/session.ts'
import { defineTopic, ErrorCodes } from '../../src/index.ts'
import { DATABASE_URL, waitFor, withClient } from '../support/env.ts'

const topics = { orders: defineTopic<{ id: string }>({ name: 'orders', key: (m) => m.id }) }
const invalid = (error: unknown) => {
  assert.equal((error as { code?: unknown }).code, ErrorCodes.INVALID_ARGUMENT, String(error))
  return true
}
// biome-ignore lint/suspicious/noExplicitAny: deliberately wrong input, as from untyped code
const wrong = (value: unknown): any => value

describe('postgres.js, Kysely, Knex and Drizzle adapters refuse wrong handles', () => {
  it('postgres.js: in(), transaction(), migrate() and relay() need postgres.js handles', async () => {
    const outbox = createPostgresJsOutbox({ topics })
    assert.throws(() => outbox.in(wrong({ query() {} })), invalid)
    assert.throws(() => outbox.in(wrong(null)), invalid)
    await assert.rejects(
      outbox.transaction(wrong(new pg.Pool()), async () => {}),
      invalid,
    )
    const sql = postgres(DATABASE_URL, { max: 1 })
    await assert.rejects(outbox.transaction(sql, wrong('not a function')), invalid)
    await sql.end()
    await assert.rejects(outbox.migrate(wrong(42)), invalid)
    const relay = outbox.relay({ connection: wrong(42), kafka: { brokers: ['127.0.0.1:1'] } })
    await assert.rejects(relay.runOnce(), invalid)
    await relay.stop()
  })

  it('Kysely: in() needs a PostgreSQL Kysely transaction, transaction() the Kysely instance', async () => {
    const outbox = createKyselyOutbox({ topics })
    assert.throws(() => outbox.in(wrong({})), invalid)
    const mysqlDb = new Kysely({ dialect: new MysqlDialect({ pool: wrong(async () => ({})) }) })
    assert.throws(() => outbox.in(wrong(mysqlDb)), /PostgreSQL/)
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
    const db = new Kysely({ dialect: new PostgresDialect({ pool }) })
    await db.transaction().execute(async (trx) => {
      await assert.rejects(
        outbox.transaction(wrong(trx), async () => {}),
        invalid,
      )
    })
    await db.destroy()
    await assert.rejects(outbox.migrate(wrong(new pg.Client())), invalid)
  })

  it('Knex: in() needs a transaction of the pg client', async () => {
    const outbox = createKnexOutbox({ topics })
    assert.throws(() => outbox.in(wrong(() => {})), invalid)
    const mysqlKnex = createKnex({ client: 'mysql2', connection: {} })
    assert.throws(() => outbox.in(wrong(mysqlKnex)), /PostgreSQL/)
    await assert.rejects(
      outbox.transaction(wrong(mysqlKnex.client), async () => {}),
      invalid,
    )
    await mysqlKnex.destroy()
  })

  it('Drizzle: in() needs a PostgreSQL Drizzle transaction, transaction() the db', async () => {
    const outbox = createDrizzleOutbox({ topics })
    assert.throws(() => outbox.in(wrong({ execute() {} })), invalid)
    const mysqlPool = mysql.createPool({ host: '127.0.0.1' })
    assert.throws(() => outbox.in(wrong(drizzleMysql(mysqlPool))), /PostgreSQL/)
    await new Promise((resolve) => mysqlPool.end(resolve))
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
    const db = drizzleNodePg(pool)
    await db.transaction(async (tx) => {
      await assert.rejects(
        outbox.transaction(wrong(tx), async () => {}),
        invalid,
      )
    })
    await pool.end()
    await assert.rejects(outbox.migrate(wrong(42)), invalid)
  })
})

describe('statement translation', () => {
  it('Knex bindings: $n in order of use, repeated values repeated, literal ? escaped', () => {
    const { sql, bindings } = toKnexBindings({
      text: `SELECT $2, $1, $2, '{"a":1}'::jsonb ? 'a'`,
      values: ['one', 'two'],
    })
    assert.equal(sql, `SELECT ?, ?, ?, '{"a":1}'::jsonb \\? 'a'`)
    assert.deepEqual(bindings, ['two', 'one', 'two'])
  })

  it('array parameters become literals that PostgreSQL reads back exactly', async () => {
    const bytes = [Buffer.from([0, 0x5c, 0x22, 0x2c, 0x7b, 0x7d, 0xff]), null, Buffer.alloc(0)]
    const texts = ['plain', 'with "quotes" and \\ backslash', '{braces, comma}', 'NULL', '', null, 'ключ 🔑']
    const ints = [0, -2147483648, 2147483647, null]
    const times = [new Date('2024-02-29T23:59:59.123Z'), null]
    const flags = [true, false, null]
    const [b, t, i, d, f] = withArrayLiterals([bytes, texts, ints, times, flags])
    const client = new pg.Client(DATABASE_URL)
    await client.connect()
    try {
      const { rows } = await client.query(
        'SELECT $1::bytea[] AS b, $2::text[] AS t, $3::int[] AS i, $4::timestamptz[] AS d, $5::bool[] AS f',
        [b, t, i, d, f],
      )
      assert.deepEqual(rows[0], { b: bytes, t: texts, i: ints, d: times, f: flags })
    } finally {
      await client.end()
    }
  })
})

describe('postgres.js relay session', () => {
  it('returns multi-statement results, delivers notifications and reports its own death', async () => {
    const sql = postgres(DATABASE_URL, { max: 1 })
    const session = await openPostgresJsSession(sql, 'k-entity-test')
    await sql.end()
    const notified: { channel: string; payload?: string }[] = []
    const errors: Error[] = []
    session.on('notification', (message) => notified.push(message))
    session.on('error', (error) => errors.push(error))
    try {
      const results = await session.query(`BEGIN; SELECT 1 AS one, 'x'::bytea AS b; COMMIT`)
      assert.ok(Array.isArray(results))
      const select = results.find((result) => result.rows.length > 0)
      assert.deepEqual(select?.rows, [{ one: 1, b: Buffer.from('x') }])
      const named = await session.query({
        text: 'SELECT $1::bigint[] AS ids',
        values: [['1', '9007199254740993']],
        name: 'ids',
      })
      assert.deepEqual(named.rows, [{ ids: ['1', '9007199254740993'] }])
      const pid = lastRow(await session.query('LISTEN ke_test_wake; SELECT pg_backend_pid() AS pid')).pid
      await withClient(async (client) => {
        await client.query(`NOTIFY ke_test_wake, 'hello'`)
        await waitFor(() => notified.length > 0, { timeout: 5000, what: 'the notification' })
        assert.deepEqual(notified, [{ channel: 'ke_test_wake', payload: 'hello' }])
        await client.query('SELECT pg_terminate_backend($1)', [pid])
      })
      await waitFor(() => errors.length > 0, { timeout: 5000, what: 'the error event' })
      // postgres.js would reconnect; a relay must never continue a claim on a new connection.
      await assert.rejects(session.query('SELECT 1'), /closed/)
    } finally {
      await session.end()
    }
  })
})

function lastRow(result: PgQueryResult | PgQueryResult[]): Record<string, unknown> {
  const last = Array.isArray(result) ? result.at(-1) : result
  return last?.rows[0] ?? {}
}
