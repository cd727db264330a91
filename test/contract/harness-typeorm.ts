import { DataSource, type EntityManager, EntitySchema } from 'typeorm'
import { createTypeOrmOutbox } from '../../src/adapters/typeorm/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'
import { holdsWrites, type Producing, producingWays } from './producing.ts'

interface Order {
  id: string
  customer: string
}

const NAMES: Record<Producing, string> = {
  in: 'typeorm',
  'helper topics': 'typeorm (topics of transaction(), written with the next query or COMMIT)',
  'held in':
    "typeorm (dataSource.transaction() and in(manager, { holdWrites: true }), written with the next query or TypeORM's COMMIT)",
}

function typeormContract(producing: Producing): ContractHarness<EntityManager> {
  return {
    name: NAMES[producing],
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
      return {
        inbox: { outbox, db: dataSource, target: dataSource },
        ...producingWays<EntityManager>(
          producing,
          {
            transaction: (fn) => outbox.transaction(dataSource, fn),
            in: (manager, options) => outbox.in(manager, options),
          },
          (fn) => dataSource.transaction((manager) => fn(manager)),
        ),
        async insertOrder(manager, id, customer) {
          await manager.insert(Orders, { id, customer })
        },
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
    holdsWrites: holdsWrites(producing),
  }
}

/** TypeORM 1.x on its postgres driver; entities defined with EntitySchema (no decorators). */
export const typeormHarness = typeormContract('in')

/** TypeORM through `outbox.transaction(dataSource, fn)` with the topics it hands to `fn`. */
export const typeormHelperTopicsHarness = typeormContract('helper topics')

/** TypeORM: the app's own `dataSource.transaction()`, producing with `in(manager, { holdWrites: true })`. */
export const typeormHeldInHarness = typeormContract('held in')
