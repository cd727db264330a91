import createKnex from 'knex'
import { createKnexOutbox, type KnexTransaction } from '../../src/adapters/knex/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'

/** Knex on node-postgres: the app produces with the `trx` of `knex.transaction()`. */
export const knexHarness: ContractHarness<KnexTransaction> = {
  name: 'knex (pg)',
  dialect: 'postgres',
  async setup({ topics, schema, brokers }) {
    const knex = createKnex({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 10 } })
    const outbox = createKnexOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
    await outbox.migrate(DATABASE_URL)
    await createOrdersTable(schema)
    return {
      inbox: { outbox, db: knex, target: DATABASE_URL },
      transaction: (fn) => outbox.transaction(knex, (trx) => fn(trx)),
      async insertOrder(trx, id, customer) {
        await trx.withSchema(schema).insert({ id, customer }).into('orders')
      },
      producers: (trx) => outbox.in(trx),
      async produceOutsideTransaction(event) {
        // @ts-expect-error the knex instance is not a transaction, and the types say so
        await outbox.in(knex).orders.produce(event)
      },
      relay: (options) => outbox.relay({ ...options, connection: DATABASE_URL }),
      ...postgresInspection(schema),
      async teardown() {
        await knex.destroy()
        await outbox.close()
        await dropSchema(schema)
      },
    }
  },
  // Knex runs a nested transaction as a savepoint.
  nested: (trx, fn) => trx.transaction((inner) => fn(inner)),
}
