import { type ControlledTransaction, Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { createKyselyOutbox, type KyselyTransaction } from '../../src/adapters/kysely/index.ts'
import type { ContractHarness, ContractSetup } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'

interface Database {
  orders: { id: string; customer: string }
}

let savepoints = 0

async function open({ topics, schema, brokers }: ContractSetup) {
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 })
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
  const outbox = createKyselyOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
  await outbox.migrate(pool)
  await createOrdersTable(schema)
  const common = {
    async insertOrder(trx: KyselyTransaction, id: string, customer: string) {
      await trx.withSchema(schema).insertInto('orders').values({ id, customer }).execute()
    },
    producers: (trx: KyselyTransaction) => outbox.in(trx),
    async produceOutsideTransaction(event: { orderId: string; customer: string; seq: number }) {
      // @ts-expect-error a Kysely instance is not a transaction, and the types say so
      await outbox.in(db).orders.produce(event)
    },
    relay: (options: Parameters<typeof outbox.relay>[0]) => outbox.relay({ ...options, connection: pool }),
    ...postgresInspection(schema),
    async teardown() {
      await db.destroy()
      await outbox.close()
      await dropSchema(schema)
    },
  }
  return { db, outbox, common }
}

/** Kysely with `db.transaction().execute()`; it has no nested transactions, so SAVEPOINT is raw SQL. */
export const kyselyHarness: ContractHarness<KyselyTransaction> = {
  name: 'kysely (transaction().execute)',
  dialect: 'postgres',
  async setup(options) {
    const { db, outbox, common } = await open(options)
    return {
      ...common,
      inbox: { outbox, db, target: DATABASE_URL },
      transaction: (fn) => outbox.transaction(db, (trx) => fn(trx)),
    }
  },
  async nested(trx, fn) {
    const name = sql.id(`ke_contract_${++savepoints}`)
    await sql`SAVEPOINT ${name}`.execute(trx)
    try {
      const result = await fn(trx)
      await sql`RELEASE SAVEPOINT ${name}`.execute(trx)
      return result
    } catch (error) {
      await sql`ROLLBACK TO SAVEPOINT ${name}`.execute(trx)
      throw error
    }
  },
}

/** Kysely's controlled transactions (`db.startTransaction()`), with its own savepoint API. */
export const kyselyControlledHarness: ContractHarness<ControlledTransaction<Database>> = {
  name: 'kysely (startTransaction)',
  dialect: 'postgres',
  async setup(options) {
    const { db, outbox, common } = await open(options)
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
