import { EntitySchema, MikroORM, type SqlEntityManager } from '@mikro-orm/mysql'
import { createMikroOrmMysqlOutbox } from '../../src/adapters/mikro-orm/mysql.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, dropDatabase, MYSQL_URL, mysqlInspection } from './mysql-support.ts'

interface Order {
  id: string
  customer: string
}

const Orders = new EntitySchema<Order>({
  name: 'Order',
  tableName: 'orders',
  properties: { id: { type: 'string', primary: true }, customer: { type: 'string' } },
})

/** MikroORM 7 with @mikro-orm/mysql (flushes of persisted entities: test/adapters-mysql-orm2.test.ts). */
export const mikroOrmMysqlHarness: ContractHarness<SqlEntityManager> = {
  name: 'mikro-orm (mysql)',
  dialect: 'mysql',
  async setup({ topics, schema, brokers }) {
    const outbox = createMikroOrmMysqlOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
    await outbox.migrate(MYSQL_URL)
    await createOrdersTable(schema)
    const orm = await MikroORM.init({
      clientUrl: MYSQL_URL,
      dbName: schema,
      entities: [Orders],
      pool: { max: 10 },
      discovery: { warnWhenNoEntities: false },
    })
    return {
      inbox: { outbox, db: orm.em.fork(), target: MYSQL_URL },
      transaction: (fn) => outbox.transaction(orm.em.fork(), (em) => fn(em)),
      // An INSERT at once, in the transaction (persist() would wait for the flush at commit).
      async insertOrder(em, id, customer) {
        await em.insert(Orders, { id, customer })
      },
      producers: (em) => outbox.in(em),
      produceOutsideTransaction: (event) => outbox.in(orm.em.fork()).orders.produce(event),
      // Through the MikroORM instance: the relay's connection is opened from its settings.
      relay: (options) => outbox.relay({ ...options, connection: orm }),
      ...mysqlInspection(schema),
      async teardown() {
        await orm.close()
        await outbox.close()
        await dropDatabase(schema)
      },
    }
  },
  // MikroORM makes a transaction inside a transaction a savepoint on the same connection.
  nested: (em, fn) => em.transactional((inner) => fn(inner)),
}
