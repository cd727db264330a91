/** What every MySQL test shares: the server URL, the business table, counts and cleanup, over plain mysql2. */
import mysql from 'mysql2/promise'
import type { ContractContext } from './adapter-contract.ts'

/** The machine's MariaDB (root, no password); `MYSQL_URL` points the tests elsewhere. */
export const MYSQL_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'

export async function withMysql<R>(fn: (connection: mysql.Connection) => Promise<R>): Promise<R> {
  const connection = await mysql.createConnection(MYSQL_URL)
  try {
    return await fn(connection)
  } finally {
    await connection.end()
  }
}

/** `orders (id, customer)` in the outbox's database, which migrate() created. */
export async function createOrdersTable(database: string): Promise<void> {
  await withMysql((c) =>
    c.query(
      `CREATE TABLE \`${database}\`.orders (id VARCHAR(100) PRIMARY KEY, customer VARCHAR(200) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
    ),
  )
}

export async function dropDatabase(database: string): Promise<void> {
  await withMysql((c) => c.query(`DROP DATABASE IF EXISTS \`${database}\``))
}

export async function countMysqlRows(database: string, table = 'outbox'): Promise<number> {
  return withMysql(async (c) => {
    const [rows] = await c.query(`SELECT COUNT(*) AS n FROM \`${database}\`.\`${table}\``)
    return Number((rows as { n: number }[])[0]?.n)
  })
}

/** The context members that only look at the database, never through the adapter under test. */
export function mysqlInspection(
  database: string,
): Pick<ContractContext<unknown>, 'countOutbox' | 'countOrders'> {
  return {
    countOutbox: () => countMysqlRows(database),
    countOrders: () => countMysqlRows(database, 'orders'),
  }
}
