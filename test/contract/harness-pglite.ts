import { after } from 'node:test'
import { PGlite, type Transaction } from '@electric-sql/pglite'
import { createPgliteOutbox } from '../../src/adapters/pglite/index.ts'
import { invalidArgument } from '../../src/core/errors.ts'
import type { ContractHarness } from './adapter-contract.ts'

/** One embedded database for all tests of a file (starting PGlite takes seconds); each test has its own schema. */
let database: Promise<PGlite> | undefined

// Registered on import, so it belongs to the test file and runs after its last test.
after(async () => {
  await (await database)?.close()
})

/** The database of this test file's PGlite tests (created on first use, closed after the file). */
export function sharedPgliteDatabase(): Promise<PGlite> {
  database ??= PGlite.create()
  return database
}

let savepoints = 0

/** PGlite (PostgreSQL in WebAssembly) in this process, with the relay on the same database. */
export const pgliteHarness: ContractHarness<Transaction> = {
  name: 'pglite',
  dialect: 'postgres',
  async setup({ topics, schema, brokers }) {
    const db = await sharedPgliteDatabase()
    const outbox = createPgliteOutbox({ db, topics, schema, kafka: { brokers, autoCreateTopics: true } })
    await outbox.migrate()
    await db.exec(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY, customer text NOT NULL)`)
    const scalar = async (sql: string) => ((await db.query<{ n: number }>(sql)).rows[0]?.n ?? 0) as number
    return {
      inbox: { outbox, db: db, target: undefined },
      transaction: (fn) => outbox.transaction((tx) => fn(tx)),
      async insertOrder(tx, id, customer) {
        await tx.query(`INSERT INTO "${schema}".orders (id, customer) VALUES ($1, $2)`, [id, customer])
      },
      producers: (tx) => outbox.in(tx),
      produceOutsideTransaction: (event) =>
        // The types keep the database itself out; this is the runtime check for untyped callers.
        outbox.in(db as unknown as Transaction).orders.produce(event),
      relay(options = {}) {
        const { mode, leaderCheckInterval: _leaderCheckInterval, topicRetry: _topicRetry, ...rest } = options
        if (mode !== undefined && mode !== 'single')
          throw invalidArgument(`PGlite has no relay mode '${mode}'`)
        return outbox.relay(rest)
      },
      countOutbox: () => scalar(`SELECT count(*)::int AS n FROM "${schema}".outbox`),
      countOrders: () => scalar(`SELECT count(*)::int AS n FROM "${schema}".orders`),
      outboxStatements: () => scalar(`SELECT count(DISTINCT cmin::text)::int AS n FROM "${schema}".outbox`),
      async teardown() {
        await outbox.close()
        await db.exec(`DROP SCHEMA "${schema}" CASCADE`)
      },
    }
  },
  // PGlite has no nested-transaction API of its own: savepoints on the transaction, as SQL.
  async nested(tx, fn) {
    const name = `ke_contract_${++savepoints}`
    await tx.exec(`SAVEPOINT ${name}`)
    try {
      const result = await fn(tx)
      await tx.exec(`RELEASE SAVEPOINT ${name}`)
      return result
    } catch (error) {
      await tx.exec(`ROLLBACK TO SAVEPOINT ${name}`)
      throw error
    }
  },
}
