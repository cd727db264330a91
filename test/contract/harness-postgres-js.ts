import postgres from 'postgres'
import { createPostgresJsOutbox, type PostgresJsTransaction } from '../../src/adapters/postgres-js/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'
import { holdsWrites, type Producing, producingWays } from './producing.ts'

type PostgresJsProducing = Exclude<Producing, 'held in'>

const NAMES: Record<PostgresJsProducing, string> = {
  in: 'postgres.js',
  'helper topics': 'postgres.js (topics of transaction(), written with the next statement or COMMIT)',
}

function postgresJsContract(producing: PostgresJsProducing): ContractHarness<PostgresJsTransaction> {
  return {
    name: NAMES[producing],
    dialect: 'postgres',
    async setup({ topics, schema, brokers }) {
      const sql = postgres(DATABASE_URL, { max: 10, onnotice: () => {} })
      const outbox = createPostgresJsOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
      await outbox.migrate(sql)
      await createOrdersTable(schema)
      return {
        inbox: { outbox, db: sql, target: sql },
        ...producingWays<PostgresJsTransaction>(
          producing,
          { transaction: (fn) => outbox.transaction(sql, fn), in: (tx) => outbox.in(tx) },
          (fn) => sql.begin((tx) => fn(tx)) as ReturnType<typeof fn>,
        ),
        async insertOrder(tx, id, customer) {
          await tx`INSERT INTO ${tx(schema)}.orders ${tx({ id, customer })}`
        },
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
    holdsWrites: holdsWrites(producing),
  }
}

/** postgres.js: the app produces with `in(tx)`, the `tx` of `sql.begin()`. */
export const postgresJsHarness = postgresJsContract('in')

/** postgres.js through `outbox.transaction(sql, fn)` with the topics it hands to `fn`. */
export const postgresJsHelperTopicsHarness = postgresJsContract('helper topics')
