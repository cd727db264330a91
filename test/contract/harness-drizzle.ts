import { drizzle as drizzleNodePg } from 'drizzle-orm/node-postgres'
import { pgSchema, text } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePostgresJs } from 'drizzle-orm/postgres-js'
import pg from 'pg'
import postgres from 'postgres'
import { createDrizzleOutbox, type DrizzleTransaction } from '../../src/adapters/drizzle/index.ts'
import type { ContractContext, ContractHarness, ContractSetup } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'
import { holdsWrites, type Producing, producingWays } from './producing.ts'

type DrizzleDb = ReturnType<typeof drizzleNodePg> | ReturnType<typeof drizzlePostgresJs>

async function setup(
  { topics, schema, brokers }: ContractSetup,
  db: DrizzleDb,
  close: () => Promise<void>,
  producing: Producing = 'in',
): Promise<ContractContext<DrizzleTransaction>> {
  const orders = pgSchema(schema).table('orders', { id: text().primaryKey(), customer: text().notNull() })
  const outbox = createDrizzleOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
  await outbox.migrate(db)
  await createOrdersTable(schema)
  const nodePg = db as ReturnType<typeof drizzleNodePg>
  return {
    inbox: { outbox, db: db, target: db },
    ...producingWays<DrizzleTransaction>(
      producing,
      { transaction: (fn) => outbox.transaction(nodePg, fn), in: (tx, options) => outbox.in(tx, options) },
      (fn) => nodePg.transaction((tx) => fn(tx)).catch(unwrapCommitError),
    ),
    async insertOrder(tx, id, customer) {
      await tx.insert(orders).values({ id, customer })
    },
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

/** Drizzle on node-postgres, producing `producing`'s way. */
function drizzleNodePgContract(producing: Producing, name: string): ContractHarness<DrizzleTransaction> {
  return {
    name,
    dialect: 'postgres',
    async setup(options) {
      const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 })
      return setup(options, drizzleNodePg(pool), () => pool.end(), producing)
    },
    nested,
    holdsWrites: holdsWrites(producing),
  }
}

export const drizzleNodePgHarness = drizzleNodePgContract('in', 'drizzle (node-postgres)')

/** Drizzle on postgres.js, producing `producing`'s way (`in(tx, { holdWrites })` holds nothing there). */
function drizzlePostgresJsContract(
  producing: Exclude<Producing, 'held in'>,
  name: string,
): ContractHarness<DrizzleTransaction> {
  return {
    name,
    dialect: 'postgres',
    async setup(options) {
      const sql = postgres(DATABASE_URL, { max: 10, onnotice: () => {} })
      return setup(options, drizzlePostgresJs(sql), () => sql.end(), producing)
    },
    nested,
    holdsWrites: holdsWrites(producing),
  }
}

export const drizzlePostgresJsHarness = drizzlePostgresJsContract('in', 'drizzle (postgres.js)')

/** Drizzle on postgres.js through `outbox.transaction(db, fn)` with the topics it hands to `fn`. */
export const drizzlePostgresJsHelperTopicsHarness = drizzlePostgresJsContract(
  'helper topics',
  'drizzle (postgres.js, topics of transaction(), written with the next statement or COMMIT)',
)

/** Drizzle on node-postgres through `outbox.transaction(db, fn)` with the topics it hands to `fn`. */
export const drizzleNodePgHelperTopicsHarness = drizzleNodePgContract(
  'helper topics',
  'drizzle (node-postgres, topics of transaction(), written with the next query or COMMIT)',
)

/** Drizzle on node-postgres: the app's own `db.transaction()`, producing with `in(tx, { holdWrites: true })`. */
export const drizzleNodePgHeldInHarness = drizzleNodePgContract(
  'held in',
  "drizzle (node-postgres, db.transaction() and in(tx, { holdWrites: true }), written with the next query or Drizzle's COMMIT)",
)
