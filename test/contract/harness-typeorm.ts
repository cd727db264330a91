import { DataSource, type EntityManager, EntitySchema } from 'typeorm'
import { createTypeOrmOutbox } from '../../src/adapters/typeorm/index.ts'
import type { TopicProducers } from '../../src/index.ts'
import type { ContractHarness, ContractTopics } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'

interface Order {
  id: string
  customer: string
}

function typeormContract(helperTopics: boolean): ContractHarness<EntityManager> {
  return {
    name: helperTopics
      ? 'typeorm (topics of transaction(), written with the next query or COMMIT)'
      : 'typeorm',
    dialect: 'postgres',
    async setup({ topics, schema, brokers }) {
      const Orders = new EntitySchema<Order>({
        name: 'Order',
        tableName: 'orders',
        schema,
        columns: { id: { type: 'text', primary: true }, customer: { type: 'text' } },
      })
      const dataSource = new DataSource({
        type: 'postgres',
        url: DATABASE_URL,
        entities: [Orders],
        poolSize: 10,
      })
      await dataSource.initialize()
      const outbox = createTypeOrmOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
      // Through the DataSource: the migration session is opened from its connection options.
      await outbox.migrate(dataSource)
      await createOrdersTable(schema)
      const fromHelper = new WeakMap<EntityManager, TopicProducers<ContractTopics>>()
      return {
        inbox: { outbox, db: dataSource, target: dataSource },
        transaction: (fn) =>
          outbox.transaction(dataSource, (manager, helper) => {
            if (helperTopics) fromHelper.set(manager, helper)
            return fn(manager)
          }),
        async insertOrder(manager, id, customer) {
          await manager.insert(Orders, { id, customer })
        },
        producers: (manager) => fromHelper.get(manager) ?? outbox.in(manager),
        // dataSource.manager has no query runner of its own: every query runs in autocommit.
        produceOutsideTransaction: (event) => outbox.in(dataSource.manager).orders.produce(event),
        relay: (options) => outbox.relay({ ...options, connection: dataSource }),
        ...postgresInspection(schema),
        async teardown() {
          await dataSource.destroy()
          await outbox.close()
          await dropSchema(schema)
        },
      }
    },
    // TypeORM turns a transaction inside a transaction into SAVEPOINT typeorm_<depth>.
    nested: (manager, fn) => manager.transaction((inner) => fn(inner)),
    holdsWrites: helperTopics,
  }
}

/** TypeORM 1.x on its postgres driver; entities defined with EntitySchema (no decorators). */
export const typeormHarness = typeormContract(false)

/** TypeORM through `outbox.transaction(dataSource, fn)` with the topics it hands to `fn`. */
export const typeormHelperTopicsHarness = typeormContract(true)
