import createKnex from 'knex'
import { createKnexOutbox, type KnexTransaction } from '../../src/adapters/knex/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'
import { holdsWrites, type Producing, producingWays } from './producing.ts'

const NAMES: Record<Producing, string> = {
  in: 'knex (pg)',
  'helper topics': 'knex (pg, topics of transaction(), written with the next query or COMMIT)',
  'held in':
    "knex (pg, knex.transaction() and in(trx, { holdWrites: true }), written with the next query or knex's COMMIT)",
}

function knexContract(producing: Producing): ContractHarness<KnexTransaction> {
  return {
    name: NAMES[producing],
    dialect: 'postgres',
    async setup({ topics, schema, brokers }) {
      const knex = createKnex({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 10 } })
      const outbox = createKnexOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
      await outbox.migrate(DATABASE_URL)
      await createOrdersTable(schema)
      return {
        inbox: { outbox, db: knex, target: DATABASE_URL },
        ...producingWays<KnexTransaction>(
          producing,
          {
            transaction: (fn) => outbox.transaction(knex, fn),
            in: (trx, options) => outbox.in(trx, options),
          },
          (fn) => knex.transaction((trx) => fn(trx)),
        ),
        async insertOrder(trx, id, customer) {
          await trx.withSchema(schema).insert({ id, customer }).into('orders')
        },
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
    holdsWrites: holdsWrites(producing),
  }
}

/** Knex on node-postgres: the app produces with the `trx` of `knex.transaction()`. */
export const knexHarness = knexContract('in')

/** Knex on node-postgres through `outbox.transaction(knex, fn)` with the topics it hands to `fn`. */
export const knexHelperTopicsHarness = knexContract('helper topics')

/** Knex on node-postgres: the app's own `knex.transaction()`, producing with `in(trx, { holdWrites: true })`. */
export const knexHeldInHarness = knexContract('held in')
