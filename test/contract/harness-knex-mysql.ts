import createKnex from 'knex'
import { createKnexOutbox } from '../../src/adapters/knex/index.ts'
import type { KnexMysqlTransaction } from '../../src/adapters/knex/mysql.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, dropDatabase, MYSQL_URL, mysqlInspection } from './mysql-support.ts'

/**
 * Knex on mysql2: the app produces with the `trx` of `knex.transaction()`. The one Knex adapter,
 * told the database by `db` (`k-entity/knex/mysql` is covered by adapters-mysql-builders).
 */
export const knexMysqlHarness: ContractHarness<KnexMysqlTransaction> = {
  name: 'knex (mysql2, detected from db)',
  dialect: 'mysql',
  async setup({ topics, schema, brokers }) {
    const knex = createKnex({ client: 'mysql2', connection: MYSQL_URL, pool: { min: 0, max: 10 } })
    const outbox = createKnexOutbox({ db: knex, topics, schema, kafka: { brokers, autoCreateTopics: true } })
    // The knex instance's own settings open the outbox's connections.
    await outbox.migrate(knex)
    await createOrdersTable(schema)
    return {
      inbox: { outbox, db: knex, target: knex },
      transaction: (fn) => outbox.transaction(knex, (trx) => fn(trx)),
      async insertOrder(trx, id, customer) {
        await trx.withSchema(schema).insert({ id, customer }).into('orders')
      },
      producers: (trx) => outbox.in(trx),
      async produceOutsideTransaction(event) {
        // @ts-expect-error the knex instance is not a transaction, and the types say so
        await outbox.in(knex).orders.produce(event)
      },
      relay: (options) => outbox.relay({ ...options, connection: knex }),
      ...mysqlInspection(schema),
      async teardown() {
        await knex.destroy()
        await outbox.close()
        await dropDatabase(schema)
      },
    }
  },
  // Knex runs a nested transaction as a savepoint.
  nested: (trx, fn) => trx.transaction((inner) => fn(inner)),
}
