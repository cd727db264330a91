import { mysqlSchema, varchar } from 'drizzle-orm/mysql-core'
import { drizzle } from 'drizzle-orm/mysql2'
import mysql from 'mysql2/promise'
import { createDrizzleOutbox } from '../../src/adapters/drizzle/index.ts'
import type { DrizzleMysqlTransaction } from '../../src/adapters/drizzle/mysql.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, dropDatabase, MYSQL_URL, mysqlInspection } from './mysql-support.ts'

/**
 * Drizzle on a mysql2 pool: the app produces with the `tx` of `db.transaction()`. The one Drizzle
 * adapter, told the database by `db` (`k-entity/drizzle/mysql` is covered by adapters-mysql-builders).
 */
export const drizzleMysqlHarness: ContractHarness<DrizzleMysqlTransaction> = {
  name: 'drizzle (mysql2, detected from db)',
  dialect: 'mysql',
  async setup({ topics, schema, brokers }) {
    const orders = mysqlSchema(schema).table('orders', {
      id: varchar({ length: 100 }).primaryKey(),
      customer: varchar({ length: 200 }).notNull(),
    })
    const pool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 10 })
    const db = drizzle(pool)
    const outbox = createDrizzleOutbox({ db, topics, schema, kafka: { brokers, autoCreateTopics: true } })
    await outbox.migrate(db)
    await createOrdersTable(schema)
    return {
      inbox: { outbox, db: db, target: db },
      transaction: (fn) => outbox.transaction(db, (tx) => fn(tx)),
      async insertOrder(tx, id, customer) {
        await tx.insert(orders).values({ id, customer })
      },
      producers: (tx) => outbox.in(tx),
      async produceOutsideTransaction(event) {
        // @ts-expect-error the Drizzle db is not a transaction, and the types say so
        await outbox.in(db).orders.produce(event)
      },
      // The db's own pool settings open the relay's connection.
      relay: (options) => outbox.relay({ ...options, connection: db }),
      ...mysqlInspection(schema),
      async teardown() {
        await pool.end()
        await outbox.close()
        await dropDatabase(schema)
      },
    }
  },
  // Drizzle runs a nested transaction as a savepoint.
  nested: (tx, fn) => tx.transaction((inner) => fn(inner)),
}
