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

/** The app's own BEGIN and COMMIT on a client of `pool`, as an app without `transaction()` runs them. */
async function ownTransaction<R>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<R>): Promise<R> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const result = await fn(client)
    await client.query('COMMIT')
    return result
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    throw error
  } finally {
    client.release()
  }
}

/** Where the contract's messages are produced: `in(client)`, the topics of `transaction()`, or `in(client, { holdWrites: true })`. */
type Producing = 'in' | 'helper topics' | 'held in'

const NAMES: Record<Producing, string> = {
  in: 'pg',
  'helper topics': 'pg (topics of transaction(), written with the next query or COMMIT)',
  'held in':
    "pg (the app's BEGIN/COMMIT and in(client, { holdWrites: true }), written with the next query or the COMMIT)",
}

function pgContract(producing: Producing): ContractHarness<pg.PoolClient> {
  const helperTopics = producing === 'helper topics'
  return {
    name: NAMES[producing],
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
          producing === 'held in'
            ? ownTransaction(pool, fn)
            : outbox.transaction(pool, (client, helper) => {
                if (helperTopics) fromHelper.set(client, helper)
                return fn(client)
              }),
        async insertOrder(client, id, customer) {
          await client.query(`INSERT INTO "${schema}".orders (id, customer) VALUES ($1, $2)`, [id, customer])
        },
        producers: (client) =>
          fromHelper.get(client) ?? outbox.in(client, { holdWrites: producing === 'held in' }),
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
    holdsWrites: producing !== 'in',
  }
}

/** node-postgres: the app checks a client out of its pool and runs BEGIN on it. */
export const pgHarness = pgContract('in')

/**
 * node-postgres through `outbox.transaction(pool, fn)` with the topics it hands to `fn`, whose
 * writes wait for the client's next query or the COMMIT.
 */
export const pgHelperTopicsHarness = pgContract('helper topics')

/** node-postgres: the app's own BEGIN and COMMIT, producing with `in(client, { holdWrites: true })`. */
export const pgHeldInHarness = pgContract('held in')
