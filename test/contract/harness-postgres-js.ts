import postgres from 'postgres'
import { createPostgresJsOutbox, type PostgresJsTransaction } from '../../src/adapters/postgres-js/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'

/** postgres.js: the app produces with the `tx` of `sql.begin()`. */
export const postgresJsHarness: ContractHarness<PostgresJsTransaction> = {
  name: 'postgres.js',
  dialect: 'postgres',
  async setup({ topics, schema, brokers }) {
    const sql = postgres(DATABASE_URL, { max: 10, onnotice: () => {} })
    const outbox = createPostgresJsOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
    await outbox.migrate(sql)
    await createOrdersTable(schema)
    return {
      inbox: { outbox, db: sql, target: sql },
      transaction: (fn) => outbox.transaction(sql, (tx) => fn(tx)),
      async insertOrder(tx, id, customer) {
        await tx`INSERT INTO ${tx(schema)}.orders ${tx({ id, customer })}`
      },
      producers: (tx) => outbox.in(tx),
      async produceOutsideTransaction(event) {
        // @ts-expect-error the root sql is not a transaction, and the types say so
        await outbox.in(sql).orders.produce(event)
      },
      relay: (options) => outbox.relay({ ...options, connection: sql }),
      ...postgresInspection(schema),
      async teardown() {
        await sql.end()
        await outbox.close()
        await dropSchema(schema)
      },
    }
  },
  nested: (tx, fn) => tx.savepoint((inner) => fn(inner)) as ReturnType<typeof fn>,
}
