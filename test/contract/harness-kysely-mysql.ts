import { type ControlledTransaction, Kysely, MysqlDialect } from 'kysely'
import { createPool } from 'mysql2'
import { createKyselyOutbox } from '../../src/adapters/kysely/index.ts'
import { createKyselyMysqlOutbox, type KyselyMysqlTransaction } from '../../src/adapters/kysely/mysql.ts'
import type { ContractHarness, ContractSetup } from './adapter-contract.ts'
import { createOrdersTable, dropDatabase, MYSQL_URL, mysqlInspection } from './mysql-support.ts'

interface Database {
  orders: { id: string; customer: string }
}

let savepoints = 0

/** `detect`: the one Kysely adapter, told the database by `db`; otherwise `k-entity/kysely/mysql`. */
async function open({ topics, schema, brokers }: ContractSetup, detect = false) {
  const db = new Kysely<Database>({
    dialect: new MysqlDialect({ pool: createPool({ uri: MYSQL_URL, connectionLimit: 10 }) }),
  })
  const options = { topics, schema, kafka: { brokers, autoCreateTopics: true as const } }
  const outbox = detect ? createKyselyOutbox({ ...options, db }) : createKyselyMysqlOutbox(options)
  await outbox.migrate(MYSQL_URL)
  await createOrdersTable(schema)
  const common = {
    async insertOrder(trx: KyselyMysqlTransaction, id: string, customer: string) {
      await trx.withSchema(schema).insertInto('orders').values({ id, customer }).execute()
    },
    producers: (trx: KyselyMysqlTransaction) => outbox.in(trx),
    async produceOutsideTransaction(event: { orderId: string; customer: string; seq: number }) {
      // @ts-expect-error a Kysely instance is not a transaction, and the types say so
      await outbox.in(db).orders.produce(event)
    },
    relay: (options: Parameters<typeof outbox.relay>[0]) =>
      outbox.relay({ ...options, connection: MYSQL_URL }),
    ...mysqlInspection(schema),
    async teardown() {
      await db.destroy()
      await outbox.close()
      await dropDatabase(schema)
    },
  }
  return { db, outbox, common }
}

/**
 * Kysely with `db.transaction().execute()`, through the adapter's helper. No `nested`: this
 * Transaction has no savepoint API (savepoints belong to controlled transactions, below).
 */
export const kyselyMysqlHarness: ContractHarness<KyselyMysqlTransaction> = {
  name: 'kysely (MysqlDialect, transaction().execute)',
  dialect: 'mysql',
  async setup(options) {
    const { db, outbox, common } = await open(options)
    return {
      ...common,
      inbox: { outbox, db, target: MYSQL_URL },
      transaction: (fn) => outbox.transaction(db, (trx) => fn(trx)),
    }
  },
}

/** Kysely's controlled transactions (`db.startTransaction()`), with its own savepoint API. */
export const kyselyMysqlControlledHarness: ContractHarness<ControlledTransaction<Database>> = {
  name: 'kysely (MysqlDialect detected from db, startTransaction)',
  dialect: 'mysql',
  async setup(options) {
    const { db, outbox, common } = await open(options, true)
    return {
      ...common,
      async transaction(fn) {
        const trx = await db.startTransaction().execute()
        try {
          const result = await fn(trx)
          await trx.commit().execute()
          outbox.notifyCommitted()
          return result
        } catch (error) {
          await trx.rollback().execute()
          throw error
        }
      },
    }
  },
  async nested(trx, fn) {
    const name = `ke_contract_${++savepoints}`
    const inner = await trx.savepoint(name).execute()
    try {
      const result = await fn(inner as unknown as ControlledTransaction<Database>)
      await inner.releaseSavepoint(name).execute()
      return result
    } catch (error) {
      await inner.rollbackToSavepoint(name).execute()
      throw error
    }
  },
}
