// The data layers' held writes on PostgreSQL beyond the adapter contract: where writes still go
// at produce() (writeWithCommit: false, a savepoint), and the options' checks. A write that fails at produce() is told by the outbox table being away.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { drizzle as drizzlePostgresJs } from 'drizzle-orm/postgres-js'
import createKnex from 'knex'
import postgres from 'postgres'
import { DataSource } from 'typeorm'
import { createDrizzleOutbox } from '../src/adapters/drizzle/index.ts'
import { createKnexOutbox } from '../src/adapters/knex/index.ts'
import { createTypeOrmOutbox } from '../src/adapters/typeorm/index.ts'
import { ErrorCodes, type TopicProducers } from '../src/index.ts'
import { DATABASE_URL, dropSchema, uniqueName, withoutOutbox } from './support/env.ts'
import { orderTopic, RollbackOnPurpose } from './support/workload.ts'

const schemas: string[] = []

after(async () => {
  for (const schema of schemas) await dropSchema(schema)
})

const event = { orderId: 'order-1', customer: 'ivy', seq: 1 }

function outboxOptions() {
  const schema = uniqueName('ke_held')
  schemas.push(schema)
  return {
    schema,
    topics: { orders: orderTopic(uniqueName('ke-held')) },
    kafka: { brokers: ['127.0.0.1:9'] },
  }
}

const notMigrated = (error: unknown) => {
  assert.equal((error as { code?: unknown }).code, ErrorCodes.NOT_MIGRATED, String(error))
  return true
}

/**
 * With the outbox table away, `transaction` runs a callback whose produce() must reject by
 * itself (the write went at produce(), not held until COMMIT); the callback then rolls back.
 */
async function writesAtProduce(
  schema: string,
  transaction: (
    fn: (tx: unknown, topics: TopicProducers<{ orders: ReturnType<typeof orderTopic> }>) => Promise<never>,
  ) => Promise<unknown>,
): Promise<void> {
  await withoutOutbox(schema, () =>
    assert.rejects(
      transaction(async (_tx, topics) => {
        await assert.rejects(topics.orders.produce(event), notMigrated)
        throw new RollbackOnPurpose()
      }),
      RollbackOnPurpose,
    ),
  )
}

describe('data layers on PostgreSQL: where transaction() still writes at produce()', () => {
  it('Knex with writeWithCommit: false: a failing write rejects produce() itself', async () => {
    const options = outboxOptions()
    const knex = createKnex({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 2 } })
    const outbox = createKnexOutbox({ ...options, writeWithCommit: false })
    try {
      await outbox.migrate(DATABASE_URL)
      await writesAtProduce(options.schema, (fn) => outbox.transaction(knex, fn))
    } finally {
      await knex.destroy()
      await outbox.close()
    }
  })

  it('Drizzle on postgres.js with writeWithCommit: false: a failing write rejects produce() itself', async () => {
    const options = outboxOptions()
    const sql = postgres(DATABASE_URL, { max: 2, onnotice: () => {} })
    const db = drizzlePostgresJs(sql)
    const outbox = createDrizzleOutbox({ ...options, writeWithCommit: false })
    try {
      await outbox.migrate(db)
      await writesAtProduce(options.schema, (fn) => outbox.transaction(db, fn))
    } finally {
      await sql.end()
      await outbox.close()
    }
  })

  it("TypeORM given a transaction's manager (a savepoint): a failing write rejects produce() itself", async () => {
    const options = outboxOptions()
    const dataSource = new DataSource({ type: 'postgres', url: DATABASE_URL, poolSize: 2 })
    await dataSource.initialize()
    const outbox = createTypeOrmOutbox(options)
    try {
      await outbox.migrate(dataSource)
      await writesAtProduce(options.schema, (fn) =>
        dataSource.transaction((manager) => outbox.transaction(manager, fn)),
      )
    } finally {
      await dataSource.destroy()
      await outbox.close()
    }
  })

  it('writeWithCommit and holdWrites are checked', async () => {
    const options = outboxOptions()
    assert.throws(
      () => createKnexOutbox({ ...options, writeWithCommit: 'yes' as never }),
      /'writeWithCommit'/,
    )
    const knex = createKnex({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 1 } })
    const outbox = createKnexOutbox(options)
    const eager = createKnexOutbox({ ...options, writeWithCommit: false })
    try {
      await knex.transaction(async (trx) => {
        assert.throws(
          () => outbox.in(trx, { holdWrites: 'yes' as never }),
          /'holdWrites' must be true or false/,
        )
        assert.throws(() => outbox.in(trx, 'hold' as never), /options must be an object/)
        assert.throws(() => eager.in(trx, { holdWrites: true }), /needs writeWithCommit/)
      })
    } finally {
      await knex.destroy()
      await outbox.close()
      await eager.close()
    }
  })
})
