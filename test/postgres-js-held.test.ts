// postgres.js `transaction()` (and Drizzle's on postgres.js) holds its messages until the app's next statement or the COMMIT:
// what is sent, in which order, and that savepoints (postgres.js's own and the app's SQL) keep
// their messages in or out as a write at produce() would. Delivery through Kafka is covered by the
// adapter contract (the "topics of transaction()" harness).
import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, it } from 'node:test'
import { sql as drizzleSql } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/postgres-js'
import postgres from 'postgres'
import { createDrizzleOutbox } from '../src/adapters/drizzle/index.ts'
import { createPostgresJsOutbox } from '../src/adapters/postgres-js/index.ts'
import { defineTopic, ErrorCodes } from '../src/index.ts'
import { countRows, DATABASE_URL, dropSchema, uniqueName } from './support/env.ts'

const schema = uniqueName('kentity_pjs_held')
const topics = { orders: defineTopic<{ id: string }>({ name: 'orders', key: (m) => m.id }) }
const kafka = { brokers: ['127.0.0.1:9'] }
const outbox = createPostgresJsOutbox({ topics, schema, kafka })
/** The statements postgres.js sends, first words only, in the order it queues them. */
let sent: string[] = []
let sql: postgres.Sql

before(async () => {
  sql = postgres(DATABASE_URL, {
    max: 1,
    onnotice: () => {},
    debug: (_connection, query) => sent.push(firstWords(query)),
  })
  await outbox.migrate(sql)
  await sql.unsafe(`CREATE TABLE ${schema}.orders (id text PRIMARY KEY)`)
})

beforeEach(async () => {
  await sql.unsafe(`TRUNCATE ${schema}.orders, ${schema}.outbox`)
  sent = []
})

after(async () => {
  await sql.end()
  await outbox.close()
  await dropSchema(schema)
})

function firstWords(query: string): string {
  const words = query.trim().split(/\s+/)
  const two = `${words[0]} ${words[1] ?? ''}`.trim().toUpperCase()
  return two.startsWith('INSERT INTO') ? `INSERT ${words[2]?.includes('outbox') ? 'outbox' : 'orders'}` : two
}

const order = (tx: postgres.TransactionSql, id: string) => tx`INSERT INTO ${tx(schema)}.orders ${tx({ id })}`

describe('postgres.js transaction(): writes held until the next statement or the COMMIT', () => {
  it('sends the message just ahead of the COMMIT, with no probe of the transaction', async () => {
    await outbox.transaction(sql, async (tx, t) => {
      await order(tx, 'a')
      await t.orders.produce({ id: 'a' })
    })
    assert.deepEqual(sent, ['BEGIN', 'INSERT orders', 'INSERT outbox', 'COMMIT'])
    assert.equal(await countRows(schema), 1)
  })

  it("sends held messages ahead of the app's next statement, through tx``, tx.unsafe() and a savepoint", async () => {
    await outbox.transaction(sql, async (tx, t) => {
      await t.orders.produce({ id: 'a' })
      await order(tx, 'a')
      await t.orders.produce({ id: 'b' })
      await tx.unsafe(`INSERT INTO ${schema}.orders VALUES ('b')`)
      await t.orders.produce({ id: 'c' })
      await tx.savepoint(async (inner) => {
        await order(inner, 'c')
      })
    })
    assert.deepEqual(sent, [
      'BEGIN',
      'INSERT outbox',
      'INSERT orders',
      'INSERT outbox',
      'INSERT orders',
      'INSERT outbox',
      'SAVEPOINT "S0"',
      'INSERT orders',
      'COMMIT',
    ])
    assert.equal(await countRows(schema), 3)
  })

  it('a message produced inside tx.savepoint() is rolled back with it, and kept when it is released', async () => {
    await outbox.transaction(sql, async (tx, t) => {
      await assert.rejects(
        tx.savepoint(async (inner) => {
          await order(inner, 'dropped')
          await t.orders.produce({ id: 'dropped' })
          throw new Error('rolled back on purpose')
        }),
        /on purpose/,
      )
      await tx.savepoint(async () => {
        await t.orders.produce({ id: 'kept' })
      })
      await t.orders.produce({ id: 'last' })
    })
    const ids = await sql.unsafe(`SELECT convert_from(key, 'UTF8') AS id FROM ${schema}.outbox ORDER BY id`)
    assert.deepEqual(
      ids.map((row) => row.id),
      ['kept', 'last'],
    )
    assert.equal(await countRows(schema, 'orders'), 0)
  })

  it("a message produced after the app's own SAVEPOINT is rolled back by its ROLLBACK TO", async () => {
    await outbox.transaction(sql, async (tx, t) => {
      await tx`SAVEPOINT mine`
      await t.orders.produce({ id: 'dropped' })
      await tx`ROLLBACK TO SAVEPOINT mine`
      await t.orders.produce({ id: 'kept' })
    })
    const ids = await sql.unsafe(`SELECT convert_from(key, 'UTF8') AS id FROM ${schema}.outbox`)
    assert.deepEqual(
      ids.map((row) => row.id),
      ['kept'],
    )
  })

  it('a statement that failed inside tx.savepoint() leaves the transaction usable once postgres.js rolled back to it', async () => {
    await outbox.transaction(sql, async (tx, t) => {
      await order(tx, 'a')
      await assert.rejects(tx.savepoint((inner) => order(inner, 'a')))
      await t.orders.produce({ id: 'a' })
    })
    assert.equal(await countRows(schema), 1)
    assert.equal(await countRows(schema, 'orders'), 1)
  })

  it('a write that fails inside tx.savepoint() fails that savepoint only, as a write through its own sql would', async () => {
    const blocker = postgres(DATABASE_URL, { max: 1, onnotice: () => {} })
    try {
      await outbox.transaction(sql, async (tx, t) => {
        await tx`SET LOCAL lock_timeout = '100ms'`
        await blocker.begin(async (other) => {
          await other.unsafe(`LOCK TABLE ${schema}.outbox IN ACCESS EXCLUSIVE MODE`)
          await assert.rejects(
            tx.savepoint(() => t.orders.produce({ id: 'dropped' })),
            (error: unknown) => (error as { code?: unknown }).code === '55P03',
          )
        })
        await tx`SET LOCAL lock_timeout = 0`
        await t.orders.produce({ id: 'kept' })
      })
    } finally {
      await blocker.end()
    }
    const ids = await sql.unsafe(`SELECT convert_from(key, 'UTF8') AS id FROM ${schema}.outbox`)
    assert.deepEqual(
      ids.map((row) => row.id),
      ['kept'],
    )
  })

  it('a callback that returns an array of queries runs them, as sql.begin() does', async () => {
    // Returned, not resolved: postgres.js runs an array only when the callback returns one.
    const results = await outbox.transaction(sql, ((tx: postgres.TransactionSql) => [
      order(tx, 'x'),
      order(tx, 'y'),
    ]) as never)
    assert.equal((results as unknown[]).length, 2)
    assert.equal(await countRows(schema, 'orders'), 2)
  })

  it('refuses topics used after their transaction ended, storing nothing', async () => {
    let leaked: Parameters<Parameters<typeof outbox.transaction>[1]>[1] | undefined
    await outbox.transaction(sql, async (_tx, t) => {
      leaked = t
    })
    await assert.rejects(leaked?.orders.produce({ id: 'late' }) ?? Promise.resolve(), (error: unknown) => {
      assert.equal((error as { code?: unknown }).code, ErrorCodes.NO_TRANSACTION)
      return true
    })
    assert.equal(await countRows(schema), 0)
  })

  it('rolls back when the callback throws, the held message with it', async () => {
    await assert.rejects(
      outbox.transaction(sql, async (tx, t) => {
        await order(tx, 'a')
        await t.orders.produce({ id: 'a' })
        throw new Error('failed on purpose')
      }),
      /on purpose/,
    )
    assert.equal(await countRows(schema), 0)
    assert.equal(await countRows(schema, 'orders'), 0)
  })

  it('writeWithCommit: false writes at produce(), after checking the transaction', async () => {
    const eager = createPostgresJsOutbox({ topics, schema, kafka, writeWithCommit: false })
    try {
      await eager.transaction(sql, async (tx, t) => {
        await t.orders.produce({ id: 'a' })
        await order(tx, 'a')
      })
    } finally {
      await eager.close()
    }
    assert.deepEqual(sent, ['BEGIN', 'LOCK TABLE', 'INSERT outbox', 'INSERT orders', 'COMMIT'])
  })

  it('refuses a writeWithCommit that is not a boolean', () => {
    assert.throws(
      () => createPostgresJsOutbox({ topics, schema, kafka, writeWithCommit: 'yes' as never }),
      (error: unknown) => {
        assert.equal((error as { code?: unknown }).code, ErrorCodes.INVALID_ARGUMENT)
        assert.match(String(error), /writeWithCommit/)
        return true
      },
    )
  })
})

describe('Drizzle on postgres.js: transaction() holds its writes the same way', () => {
  const drizzleOutbox = createDrizzleOutbox({ topics, schema, kafka })
  after(() => drizzleOutbox.close())

  it('sends the message with the COMMIT, and one produced in a rolled-back nested transaction is gone with it', async () => {
    const db = drizzle(sql)
    await drizzleOutbox.transaction(db, async (tx, t) => {
      await tx.execute(drizzleSql`INSERT INTO ${drizzleSql.raw(schema)}.orders VALUES ('a')`)
      await t.orders.produce({ id: 'a' })
      await assert.rejects(
        tx.transaction(async (inner) => {
          await inner.execute(drizzleSql`INSERT INTO ${drizzleSql.raw(schema)}.orders VALUES ('dropped')`)
          await t.orders.produce({ id: 'dropped' })
          throw new Error('rolled back on purpose')
        }),
        /on purpose/,
      )
      await t.orders.produce({ id: 'b' })
    })
    assert.deepEqual(sent, [
      'BEGIN',
      'INSERT orders',
      'INSERT outbox',
      'SAVEPOINT "S0"',
      'INSERT orders',
      'INSERT outbox',
      'ROLLBACK TO',
      'INSERT outbox',
      'COMMIT',
    ])
    const ids = await sql.unsafe(`SELECT convert_from(key, 'UTF8') AS id FROM ${schema}.outbox ORDER BY id`)
    assert.deepEqual(
      ids.map((row) => row.id),
      ['a', 'b'],
    )
    assert.equal(await countRows(schema, 'orders'), 1)
  })
})
