import { drizzle as drizzleNodePg } from 'drizzle-orm/node-postgres'
import { pgSchema, text } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePostgresJs } from 'drizzle-orm/postgres-js'
import pg from 'pg'
import postgres from 'postgres'
import { createDrizzleOutbox, type DrizzleTransaction } from '../../src/adapters/drizzle/index.ts'
import type { TopicProducers } from '../../src/index.ts'
import type { ContractContext, ContractHarness, ContractSetup, ContractTopics } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'

type DrizzleDb = ReturnType<typeof drizzleNodePg> | ReturnType<typeof drizzlePostgresJs>

async function setup(
  { topics, schema, brokers }: ContractSetup,
  db: DrizzleDb,
  close: () => Promise<void>,
  producing: 'in' | 'helper topics' | 'held in' = 'in',
): Promise<ContractContext<DrizzleTransaction>> {
  const helperTopics = producing === 'helper topics'
  const orders = pgSchema(schema).table('orders', { id: text().primaryKey(), customer: text().notNull() })
  const outbox = createDrizzleOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
  await outbox.migrate(db)
  await createOrdersTable(schema)
  const fromHelper = new WeakMap<DrizzleTransaction, TopicProducers<ContractTopics>>()
  return {
    inbox: { outbox, db: db, target: db },
    transaction: (fn) =>
      producing === 'held in'
        ? (db as ReturnType<typeof drizzleNodePg>).transaction((tx) => fn(tx)).catch(unwrapCommitError)
        : outbox.transaction(db as ReturnType<typeof drizzleNodePg>, (tx, helper) => {
            if (helperTopics) fromHelper.set(tx, helper)
            return fn(tx)
          }),
    async insertOrder(tx, id, customer) {
      await tx.insert(orders).values({ id, customer })
    },
    producers: (tx) => fromHelper.get(tx) ?? outbox.in(tx, { holdWrites: producing === 'held in' }),
    async produceOutsideTransaction(event) {
      // @ts-expect-error the Drizzle db is not a transaction, and the types say so
      await outbox.in(db).orders.produce(event)
    },
    relay: (options) => outbox.relay({ ...options, connection: db }),
    ...postgresInspection(schema),
    async teardown() {
      await close()
      await outbox.close()
      await dropSchema(schema)
    },
  }
}

/**
 * Drizzle's own transaction wraps an error of its COMMIT ("Failed query: commit", the error as
 * `cause`), held writes failing there included; an app reads the cause, and so does the contract.
 */
function unwrapCommitError(error: unknown): never {
  const { query, cause } = error as { query?: unknown; cause?: unknown }
  throw query === 'commit' && cause !== undefined ? cause : error
}

// Drizzle runs a nested transaction as a savepoint on both drivers.
const nested: ContractHarness<DrizzleTransaction>['nested'] = (tx, fn) => tx.transaction((inner) => fn(inner))

export const drizzleNodePgHarness: ContractHarness<DrizzleTransaction> = {
  name: 'drizzle (node-postgres)',
  dialect: 'postgres',
  async setup(options) {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 })
    return setup(options, drizzleNodePg(pool), () => pool.end())
  },
  nested,
}

export const drizzlePostgresJsHarness: ContractHarness<DrizzleTransaction> = {
  name: 'drizzle (postgres.js)',
  dialect: 'postgres',
  async setup(options) {
    const sql = postgres(DATABASE_URL, { max: 10, onnotice: () => {} })
    return setup(options, drizzlePostgresJs(sql), () => sql.end())
  },
  nested,
}

/** Drizzle on node-postgres through `outbox.transaction(db, fn)` with the topics it hands to `fn`. */
export const drizzleNodePgHelperTopicsHarness: ContractHarness<DrizzleTransaction> = {
  name: 'drizzle (node-postgres, topics of transaction(), written with the next query or COMMIT)',
  dialect: 'postgres',
  async setup(options) {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 })
    return setup(options, drizzleNodePg(pool), () => pool.end(), 'helper topics')
  },
  nested,
  holdsWrites: true,
}

/** Drizzle on node-postgres: the app's own `db.transaction()`, producing with `in(tx, { holdWrites: true })`. */
export const drizzleNodePgHeldInHarness: ContractHarness<DrizzleTransaction> = {
  name: "drizzle (node-postgres, db.transaction() and in(tx, { holdWrites: true }), written with the next query or Drizzle's COMMIT)",
  dialect: 'postgres',
  async setup(options) {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 })
    return setup(options, drizzleNodePg(pool), () => pool.end(), 'held in')
  },
  nested,
  holdsWrites: true,
}
