import Database from 'better-sqlite3'
import { createBetterSqliteOutbox } from '../../src/adapters/better-sqlite3/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { asyncProducers, databaseFile, inSavepoint, removeDatabaseFile } from './sqlite-support.ts'

let savepoints = 0

/** The business write of the contracts, synchronous as a SQLite inbox handler must be. */
function insertOrder(tx: Database.Database, id: string, customer: string): void {
  tx.prepare('INSERT INTO orders (id, customer) VALUES (?, ?)').run(id, customer)
}

/** better-sqlite3: the app's Database handle, in WAL mode, shared by the app and the relay. */
export const betterSqliteHarness: ContractHarness<Database.Database> = {
  name: 'better-sqlite3',
  dialect: 'sqlite',
  async setup({ topics, schema, brokers }) {
    const file = databaseFile(schema)
    const db = new Database(file)
    db.pragma('journal_mode = WAL')
    const outbox = createBetterSqliteOutbox({ topics, kafka: { brokers, autoCreateTopics: true } })
    outbox.migrate(db)
    db.exec('CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL)')
    const inspector = new Database(file, { readonly: true })
    const count = (table: string) =>
      (inspector.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n
    return {
      inbox: { outbox, db: db, target: db, insertOrder },
      transaction: (fn) => outbox.transaction(db, (tx) => fn(tx)),
      insertOrder: async (tx, id, customer) => insertOrder(tx, id, customer),
      producers: (tx) => asyncProducers(outbox.in(tx)),
      async produceOutsideTransaction(event) {
        outbox.in(db).orders.produce(event)
      },
      relay: (options) => outbox.relay({ ...options, connection: db }),
      countOutbox: async () => count('k_entity_outbox'),
      countOrders: async () => count('orders'),
      async teardown() {
        inspector.close()
        db.close()
        removeDatabaseFile(file)
      },
    }
  },
  nested: (db, fn) => inSavepoint(db, `ke_contract_${++savepoints}`, fn),
}
