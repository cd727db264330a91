import mysql from 'mysql2/promise'
import { createMysqlOutbox } from '../../src/adapters/mysql2/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, dropDatabase, MYSQL_URL, mysqlInspection } from './mysql-support.ts'

let savepoints = 0

/** mysql2: the app takes a connection from its pool and runs beginTransaction() on it. */
export const mysql2Harness: ContractHarness<mysql.PoolConnection> = {
  name: 'mysql2',
  dialect: 'mysql',
  async setup({ topics, schema, brokers }) {
    const outbox = createMysqlOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
    await outbox.migrate(MYSQL_URL)
    await createOrdersTable(schema)
    const pool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 10 })
    return {
      inbox: { outbox, db: pool, target: MYSQL_URL },
      transaction: (fn) => outbox.transaction(pool, (connection) => fn(connection)),
      async insertOrder(connection, id, customer) {
        await connection.query(`INSERT INTO \`${schema}\`.orders (id, customer) VALUES (?, ?)`, [
          id,
          customer,
        ])
      },
      producers: (connection) => outbox.in(connection),
      async produceOutsideTransaction(event) {
        const connection = await pool.getConnection()
        try {
          await outbox.in(connection).orders.produce(event)
        } finally {
          connection.release()
        }
      },
      relay: (options) => outbox.relay({ ...options, connection: MYSQL_URL }),
      ...mysqlInspection(schema),
      async teardown() {
        await pool.end()
        await outbox.close()
        await dropDatabase(schema)
      },
    }
  },
  async nested(connection, fn) {
    const name = `ke_contract_${++savepoints}`
    await connection.query(`SAVEPOINT ${name}`)
    try {
      const result = await fn(connection)
      await connection.query(`RELEASE SAVEPOINT ${name}`)
      return result
    } catch (error) {
      await connection.query(`ROLLBACK TO SAVEPOINT ${name}`)
      throw error
    }
  },
}
