import type mysql from 'mysql2/promise'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import {
  type MysqlDriver,
  MysqlOutbox,
  type MysqlOutboxOptions,
  type MysqlRelayOptions,
} from '../../dialects/mysql/mysql-outbox.ts'
import { assertTransactionStatus, TRANSACTION_PROBE } from '../../dialects/mysql/transaction-status.ts'
import {
  type Mysql2Connection,
  type Mysql2TransactionConnection,
  openMysql2Session,
  promiseConnection,
} from './session.ts'

export type { Mysql2Connection, Mysql2TransactionConnection }

/** Wraps the app's mysql2 connection, checked to be inside a transaction (see TRANSACTION_PROBE). */
export function mysql2Transaction(connection: Mysql2TransactionConnection): TransactionAdapter {
  const conn = promiseConnection(connection)
  const checked = async (text: string, values?: unknown[]) => {
    const [result] = await conn.query(text, values)
    assertTransactionStatus(
      (result as mysql.ResultSetHeader).serverStatus,
      'call beginTransaction() on this connection first (or use outbox.transaction(pool, fn))',
    )
  }
  return {
    dialect: 'mysql',
    assertInTransaction: () => checked(TRANSACTION_PROBE),
    async execute(statement: SqlStatement) {
      await conn.query(statement.text, statement.values)
    },
    executeChecked: (statement) => checked(statement.text, statement.values),
  }
}

const mysql2Driver: MysqlDriver<Mysql2TransactionConnection, Mysql2Connection> = {
  transaction: mysql2Transaction,
  openSession: openMysql2Session,
}

/**
 * The mysql2 adapter: the outbox for apps that use `mysql2` directly, on MySQL 8 or MariaDB 10.6+.
 *
 * @example
 * const outbox = createMysqlOutbox({ topics: { orderCreated }, schema: 'shop', kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate('mysql://root@127.0.0.1/shop')
 * await outbox.transaction(pool, async (conn, topics) => {
 *   await conn.query('INSERT INTO orders ...')
 *   await topics.orderCreated.produce(order)
 * })
 */
export class Mysql2Outbox<M extends TopicMap> extends MysqlOutbox<
  M,
  Mysql2TransactionConnection,
  Mysql2Connection
> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, mysql2Driver)
  }

  /** Runs `fn` in a transaction on a connection from `pool`: COMMIT if it resolves, ROLLBACK if it throws. */
  async transaction<R>(
    pool: mysql.Pool,
    fn: (connection: mysql.PoolConnection, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    if (typeof pool !== 'object' || pool === null || typeof pool.getConnection !== 'function') {
      throw invalidArgument(`transaction() needs a mysql2 pool, got ${describe(pool)}`)
    }
    // The callback API's pool: its promise facade hands out connections of the same pool.
    const callbackApi = pool as { promise?: () => mysql.Pool }
    const promisePool = typeof callbackApi.promise === 'function' ? callbackApi.promise() : pool
    const connection = await promisePool.getConnection()
    let healthy = true
    try {
      await connection.beginTransaction()
      const result = await fn(connection, this.in(connection))
      await connection.commit()
      this.notifyCommitted()
      return result
    } catch (error) {
      await connection.rollback().catch(() => {
        healthy = false
      })
      throw error
    } finally {
      // A connection whose ROLLBACK failed may still hold the transaction: never hand it back.
      if (healthy) connection.release()
      else connection.destroy()
    }
  }
}

export function createMysqlOutbox<M extends TopicMap>(options: MysqlOutboxOptions<M>): Mysql2Outbox<M> {
  return new Mysql2Outbox(options)
}

export type { MysqlOutboxOptions as Mysql2OutboxOptions, MysqlRelayOptions as Mysql2RelayOptions }
