import pg from 'pg'
import { createPgOutbox } from '../../src/adapters/pg/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'

let savepoints = 0

/** node-postgres: the app checks a client out of its pool and runs BEGIN on it. */
export const pgHarness: ContractHarness<pg.PoolClient> = {
  name: 'pg',
  dialect: 'postgres',
  async setup({ topics, schema, brokers }) {
    const outbox = createPgOutbox({ topics, schema, kafka: { brokers } })
    await outbox.migrate(DATABASE_URL)
    await createOrdersTable(schema)
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 })
    return {
      transaction: (fn) => outbox.transaction(pool, (client) => fn(client)),
      async insertOrder(client, id, customer) {
        await client.query(`INSERT INTO "${schema}".orders (id, customer) VALUES ($1, $2)`, [id, customer])
      },
      producers: (client) => outbox.in(client),
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
  async nested(client, fn) {
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
  },
}
