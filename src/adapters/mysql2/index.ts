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
  return {
    dialect: 'mysql',
    async assertInTransaction() {
      const [result] = await conn.query(TRANSACTION_PROBE)
      assertTransactionStatus(
        (result as mysql.ResultSetHeader).serverStatus,
        'call beginTransaction() on this connection first (or use outbox.transaction(pool, fn))',
      )
    },
    async execute(statement: SqlStatement) {
      // A named statement is one that recurs: mysql2 prepares it once per connection and keeps it.
      if (statement.name !== undefined && typeof conn.execute === 'function') {
        try {
          await conn.execute(statement.text, statement.values as never)
          return
        } catch (error) {
          // The server refused to prepare it (its prepared statements are all taken, or a proxy
          // does not pass them on): nothing ran, so the same statement goes as text instead.
          if (!isPrepareRefused(error)) throw error
        }
      }
      await conn.query(statement.text, statement.values)
    },
  }
}

/** ER_MAX_PREPARED_STMT_COUNT_REACHED, ER_UNSUPPORTED_PS. */
const PREPARE_REFUSED = new Set([1461, 1295])

function isPrepareRefused(error: unknown): boolean {
  const errno = (error as { errno?: unknown } | null)?.errno
  return typeof errno === 'number' && PREPARE_REFUSED.has(errno)
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
