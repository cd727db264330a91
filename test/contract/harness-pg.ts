import pg from 'pg'
import { createPgOutbox } from '../../src/adapters/pg/index.ts'
import type { TopicProducers } from '../../src/index.ts'
import type { ContractHarness, ContractTopics } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'

let savepoints = 0

async function nested<R>(client: pg.PoolClient, fn: (inner: pg.PoolClient) => Promise<R>): Promise<R> {
  const name = `ke_contract_${++savepoints}`
  await client.query(`SAVEPOINT ${name}`)
  try {
    const result = await fn(client)
    await client.query(`RELEASE SAVEPOINT ${name}`)
    return result
  } catch (error) {
    await client.query(`ROLLBACK TO SAVEPOINT ${name}`)
    throw error
  }
}

function pgContract(helperTopics: boolean): ContractHarness<pg.PoolClient> {
  return {
    name: helperTopics ? 'pg (topics of transaction(), written with the next query or COMMIT)' : 'pg',
    dialect: 'postgres',
    async setup({ topics, schema, brokers }) {
      const outbox = createPgOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
      await outbox.migrate(DATABASE_URL)
      await createOrdersTable(schema)
      const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 })
      const fromHelper = new WeakMap<pg.PoolClient, TopicProducers<ContractTopics>>()
      return {
        inbox: { outbox, db: pool, target: DATABASE_URL },
        transaction: (fn) =>
          outbox.transaction(pool, (client, helper) => {
            if (helperTopics) fromHelper.set(client, helper)
            return fn(client)
          }),
        async insertOrder(client, id, customer) {
          await client.query(`INSERT INTO "${schema}".orders (id, customer) VALUES ($1, $2)`, [id, customer])
        },
        producers: (client) => fromHelper.get(client) ?? outbox.in(client),
        async produceOutsideTransaction(event) {
          const client = await pool.connect()
          try {
            await outbox.in(client).orders.produce(event)
          } finally {
            client.release()
          }
        },
        relay: (options) => outbox.relay({ ...options, connection: DATABASE_URL }),
        ...postgresInspection(schema),
        async teardown() {
          await pool.end()
          await outbox.close()
          await dropSchema(schema)
        },
      }
    },
    nested,
  }
}

/** node-postgres: the app checks a client out of its pool and runs BEGIN on it. */
export const pgHarness = pgContract(false)

/**
 * node-postgres through `outbox.transaction(pool, fn)` with the topics it hands to `fn`, whose
 * writes wait for the client's next query or the COMMIT.
 */
export const pgHelperTopicsHarness = pgContract(true)
