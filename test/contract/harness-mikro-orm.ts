import { type EntityManager, EntitySchema, MikroORM } from '@mikro-orm/postgresql'
import { createMikroOrmOutbox } from '../../src/adapters/mikro-orm/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'

interface Order {
  id: string
  customer: string
}

const Orders = new EntitySchema<Order>({
  name: 'Order',
  tableName: 'orders',
  properties: { id: { type: 'string', primary: true }, customer: { type: 'string' } },
})

/** MikroORM 7 with @mikro-orm/postgresql (flushes of persisted entities: test/adapters-orm.test.ts). */
export const mikroOrmHarness: ContractHarness<EntityManager> = {
  name: 'mikro-orm',
  dialect: 'postgres',
  async setup({ topics, schema, brokers }) {
    const outbox = createMikroOrmOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
    await outbox.migrate(DATABASE_URL)
    await createOrdersTable(schema)
    const orm = await MikroORM.init({
      clientUrl: DATABASE_URL,
      schema,
      entities: [Orders],
      pool: { max: 10 },
      discovery: { warnWhenNoEntities: false },
    })
    return {
      inbox: { outbox, db: orm.em.fork(), target: DATABASE_URL },
      transaction: (fn) => outbox.transaction(orm.em.fork(), (em) => fn(em)),
      // An INSERT at once, in the transaction (persist() would wait for the flush at commit).
      async insertOrder(em, id, customer) {
        await em.insert(Orders, { id, customer })
      },
      producers: (em) => outbox.in(em),
      produceOutsideTransaction: (event) => outbox.in(orm.em.fork()).orders.produce(event),
      relay: (options) => outbox.relay({ ...options, connection: orm }),
      ...postgresInspection(schema),
      async teardown() {
        await orm.close()
        await outbox.close()
        await dropSchema(schema)
      },
    }
  },
  // MikroORM makes a transaction inside a transaction a savepoint on the same connection.
  nested: (em, fn) => em.transactional((inner) => fn(inner)),
}
