// What the Knex, Kysely and Drizzle MySQL adapters do beyond the shared adapter contract
// (test/contract/harness-*-mysql.ts): instances of another database are refused naming the right
// adapter, the root instance and server-ended transactions are refused, bad arguments get clear
// errors. Real MariaDB/MySQL throughout; nothing here reaches Kafka.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { drizzle } from 'drizzle-orm/mysql2'
import { drizzle as drizzleNodePg } from 'drizzle-orm/node-postgres'
import createKnex from 'knex'
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely'
import { createPool } from 'mysql2'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createDrizzleMysqlOutbox } from '../src/adapters/drizzle/mysql.ts'
import { createKnexMysqlOutbox } from '../src/adapters/knex/mysql.ts'
import { createKyselyMysqlOutbox } from '../src/adapters/kysely/mysql.ts'
import { defineTopic, ErrorCodes, type TopicProducers } from '../src/index.ts'
import { countMysqlRows, dropDatabase, MYSQL_URL, withMysql } from './contract/mysql-support.ts'
import { uniqueName } from './support/env.ts'

const topics = { orders: defineTopic<{ id: string }>({ name: 'ke-orm-mysql', key: (m) => m.id }) }
type Topics = TopicProducers<typeof topics>
const schema = uniqueName('ke_orm_mysql')
const options = { topics, schema }

const code = (expected: string, message?: RegExp) => (error: unknown) => {
  assert.equal((error as { code?: unknown }).code, expected, String(error))
  if (message) assert.match(String((error as Error).message), message)
  return true
}
const noTransaction = (message?: RegExp) => code(ErrorCodes.NO_TRANSACTION, message)
const invalid = (message: RegExp) => code(ErrorCodes.INVALID_ARGUMENT, message)

const knex = createKnex({ client: 'mysql2', connection: MYSQL_URL, pool: { min: 0, max: 4 } })
const kysely = new Kysely<Record<string, never>>({
  dialect: new MysqlDialect({ pool: createPool({ uri: MYSQL_URL, connectionLimit: 4 }) }),
})
const drizzlePool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 4 })
const db = drizzle(drizzlePool)
const knexOutbox = createKnexMysqlOutbox(options)
const kyselyOutbox = createKyselyMysqlOutbox(options)
const drizzleOutbox = createDrizzleMysqlOutbox(options)

// Instances of PostgreSQL data layers; none of them connects.
const pgKnex = createKnex({ client: 'pg', connection: 'postgres://nobody@127.0.0.1:1/none' })
const pgPool = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none' })
const pgKysely = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool: pgPool }) })
const pgDrizzle = drizzleNodePg(pgPool)

/** Each layer's own transaction, the root handle, and a statement that commits implicitly. */
const layers = [
  {
    name: 'knex',
    transaction: (fn: (topics: () => Topics, ddl: () => Promise<unknown>) => Promise<void>) =>
      knexOutbox.transaction(knex, (trx) =>
        fn(
          () => knexOutbox.in(trx),
          () => trx.raw(`CREATE TABLE \`${schema}\`.ddl_${uniqueName('t')} (id INT)`),
        ),
      ),
    // @ts-expect-error the knex instance is not a transaction
    root: () => knexOutbox.in(knex),
  },
  {
    name: 'kysely',
    transaction: (fn: (topics: () => Topics, ddl: () => Promise<unknown>) => Promise<void>) =>
      kyselyOutbox.transaction(kysely, (trx) =>
        fn(
          () => kyselyOutbox.in(trx),
          () =>
            trx.schema
              .createTable(`${schema}.ddl_${uniqueName('t')}`)
              .addColumn('id', 'integer')
              .execute(),
        ),
      ),
    // @ts-expect-error a Kysely instance is not a transaction
    root: () => kyselyOutbox.in(kysely),
  },
  {
    name: 'drizzle',
    transaction: (fn: (topics: () => Topics, ddl: () => Promise<unknown>) => Promise<void>) =>
      drizzleOutbox.transaction(db, (tx) =>
        fn(
          () => drizzleOutbox.in(tx),
          () => tx.execute(`CREATE TABLE \`${schema}\`.ddl_${uniqueName('t')} (id INT)`),
        ),
      ),
    // @ts-expect-error the Drizzle db is not a transaction
    root: () => drizzleOutbox.in(db),
  },
]

describe('Knex, Kysely and Drizzle on MySQL: what the contract does not cover', () => {
  before(async () => {
    await knexOutbox.migrate(knex)
  })
  after(async () => {
    await knex.destroy()
    await kysely.destroy()
    await drizzlePool.end()
    await pgKnex.destroy()
    await pgPool.end()
    await dropDatabase(schema)
  })

  for (const layer of layers) {
    describe(layer.name, () => {
      it('refuses the root instance with KE_NO_TRANSACTION and writes nothing', async () => {
        await assert.rejects(layer.root().orders.produce({ id: 'root' }), noTransaction(/not a transaction/))
        assert.equal(await countMysqlRows(schema), 0)
      })

      it('refuses a transaction MySQL ended on its own (DDL commits implicitly) and writes nothing', async () => {
        await assert.rejects(
          layer.transaction(async (producers, ddl) => {
            await ddl()
            await producers().orders.produce({ id: 'after-ddl' })
          }),
          noTransaction(/ended/),
        )
        assert.equal(await countMysqlRows(schema), 0)
      })

      it('stores concurrent produce() calls on one transaction', async () => {
        await layer.transaction(async (producers) => {
          const bound = producers()
          await Promise.all(Array.from({ length: 8 }, (_, i) => bound.orders.produce({ id: `c${i}` })))
        })
        assert.equal(await countMysqlRows(schema), 8)
        await withMysql((c) => c.query(`DELETE FROM \`${schema}\`.outbox`))
      })
    })
  }

  it('refuses data layers configured for PostgreSQL, naming the adapter to use', async () => {
    // The types refuse them already: a root instance is no transaction, a PostgreSQL db no MySQL db.
    // @ts-expect-error a PostgreSQL knex instance
    const knexIn = () => knexOutbox.in(pgKnex)
    // @ts-expect-error a PostgreSQL Kysely instance
    const kyselyIn = () => kyselyOutbox.in(pgKysely)
    // @ts-expect-error a PostgreSQL Drizzle db
    const drizzleIn = () => drizzleOutbox.in(pgDrizzle)
    // @ts-expect-error a PostgreSQL Drizzle db
    const drizzleTransaction = () => drizzleOutbox.transaction(pgDrizzle, async () => {})
    const knexAdvice = /uses the postgresql client; use createKnexOutbox from 'k-entity\/knex'/
    assert.throws(knexIn, invalid(knexAdvice))
    await assert.rejects(
      knexOutbox.transaction(pgKnex, async () => {}),
      invalid(knexAdvice),
    )
    await assert.rejects(knexOutbox.migrate(pgKnex), invalid(knexAdvice))
    const kyselyAdvice = /PostgresAdapter; use createKyselyOutbox from 'k-entity\/kysely'/
    assert.throws(kyselyIn, invalid(kyselyAdvice))
    await assert.rejects(
      kyselyOutbox.transaction(pgKysely, async () => {}),
      invalid(kyselyAdvice),
    )
    const drizzleAdvice = /PostgreSQL: use createDrizzleOutbox from 'k-entity\/drizzle'/
    assert.throws(drizzleIn, invalid(drizzleAdvice))
    await assert.rejects(drizzleTransaction(), invalid(drizzleAdvice))
    await assert.rejects(drizzleOutbox.migrate(pgDrizzle), invalid(drizzleAdvice))
    assert.equal(await countMysqlRows(schema), 0)
  })

  it('refuses arguments that are no handle of the data layer', async () => {
    for (const bad of [undefined, null, {}, 'mysql://x', drizzlePool]) {
      // @ts-expect-error not a Knex transaction
      assert.throws(() => knexOutbox.in(bad), invalid(/expected the Knex transaction/))
      // @ts-expect-error not a Kysely transaction
      assert.throws(() => kyselyOutbox.in(bad), invalid(/expected the Kysely transaction/))
      // @ts-expect-error not a Drizzle transaction
      assert.throws(() => drizzleOutbox.in(bad), invalid(/expected the Drizzle transaction/))
    }
    await knex.transaction(async (trx) => {
      await assert.rejects(
        knexOutbox.transaction(trx, async () => {}),
        invalid(/not a transaction/),
      )
    })
    // @ts-expect-error the callback is missing
    await assert.rejects(knexOutbox.transaction(knex), invalid(/needs a callback/))
    // @ts-expect-error the callback is missing
    await assert.rejects(kyselyOutbox.transaction(kysely), invalid(/needs a callback/))
    // @ts-expect-error the callback is missing
    await assert.rejects(drizzleOutbox.transaction(db), invalid(/needs a callback/))
    // @ts-expect-error Kysely keeps its pool settings private: a URL or options are needed
    await assert.rejects(kyselyOutbox.stats(kysely), invalid(/pass a mysql:\/\/ URL/))
    assert.equal(await countMysqlRows(schema), 0)
  })

  it('knex: a savepoint handle is refused once its nested transaction ended', async () => {
    await knex.transaction(async (trx) => {
      let inner: typeof trx | undefined
      await trx.transaction(async (savepoint) => {
        inner = savepoint
      })
      await assert.rejects(
        knexOutbox.in(inner as typeof trx).orders.produce({ id: 'late' }),
        noTransaction(/already committed or rolled back/),
      )
    })
    assert.equal(await countMysqlRows(schema), 0)
  })

  it('knex and drizzle: relays, migrations and stats connect with the settings of the instance', async () => {
    const lazy = createKnex({ client: 'mysql2', connection: async () => ({ uri: MYSQL_URL }) })
    try {
      assert.deepEqual((await knexOutbox.migrate(lazy)).applied, [])
      assert.equal((await knexOutbox.stats(lazy)).pending, 0)
    } finally {
      await lazy.destroy()
    }
    assert.equal((await drizzleOutbox.stats(db)).pending, 0)
    assert.equal((await drizzleOutbox.stats(drizzlePool)).pending, 0)
  })
})
