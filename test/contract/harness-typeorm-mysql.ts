import { DataSource, type EntityManager, EntitySchema } from 'typeorm'
import { createTypeOrmOutbox } from '../../src/adapters/typeorm/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, dropDatabase, MYSQL_URL, mysqlInspection } from './mysql-support.ts'

interface Order {
  id: string
  customer: string
}

/**
 * TypeORM 1.x, DataSource of type 'mysql' (mysql2); entities defined with EntitySchema (no
 * decorators). The one TypeORM adapter, told the database by `db` (`k-entity/typeorm/mysql` is
 * covered by adapters-mysql-orm).
 */
export const typeormMysqlHarness: ContractHarness<EntityManager> = {
  name: 'typeorm (mysql2, detected from db)',
  dialect: 'mysql',
  async setup({ topics, schema, brokers }) {
    const Orders = new EntitySchema<Order>({
      name: 'Order',
      tableName: 'orders',
      columns: {
        id: { type: 'varchar', length: 100, primary: true },
        customer: { type: 'varchar', length: 200 },
      },
    })
    const url = new URL(MYSQL_URL)
    url.pathname = `/${schema}`
    const dataSource = new DataSource({
      type: 'mysql',
      url: url.toString(),
      entities: [Orders],
      poolSize: 10,
    })
    // Its type is known before initialize(), which must wait for the database migrate() creates.
    const outbox = createTypeOrmOutbox({
      db: dataSource,
      topics,
      schema,
      kafka: { brokers, autoCreateTopics: true },
    })
    // migrate() creates the database the DataSource connects to, so it cannot go through it.
    await outbox.migrate(MYSQL_URL)
    await createOrdersTable(schema)
    await dataSource.initialize()
    return {
      inbox: { outbox, db: dataSource, target: MYSQL_URL },
      transaction: (fn) => outbox.transaction(dataSource, (manager) => fn(manager)),
      async insertOrder(manager, id, customer) {
        await manager.insert(Orders, { id, customer })
      },
      producers: (manager) => outbox.in(manager),
      // dataSource.manager has no query runner of its own: every query runs in autocommit.
      produceOutsideTransaction: (event) => outbox.in(dataSource.manager).orders.produce(event),
      // Through the DataSource: the relay's connection is opened from its connection options.
      relay: (options) => outbox.relay({ ...options, connection: dataSource }),
      ...mysqlInspection(schema),
      async teardown() {
        await dataSource.destroy()
        await outbox.close()
        await dropDatabase(schema)
      },
    }
  },
  // TypeORM turns a transaction inside a transaction into SAVEPOINT typeorm_<depth>.
  nested: (manager, fn) => manager.transaction((inner) => fn(inner)),
}
