import type mysql from 'mysql2/promise'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import {
  type MysqlDriver,
  MysqlOutbox,
  type MysqlOutboxOptions,
  type MysqlRelayOptions,
} from '../../dialects/mysql/mysql-outbox.ts'
import {
  type Mysql2Connection,
  type Mysql2TransactionConnection,
  openMysql2Session,
  promiseConnection,
} from './session.ts'

export type { Mysql2Connection, Mysql2TransactionConnection }

/** Status flags of the server's OK packet (mysql_com.h). */
const SERVER_STATUS_IN_TRANS = 0x0001
const SERVER_STATUS_AUTOCOMMIT = 0x0002

/**
 * Wraps the app's mysql2 connection, checked to be inside a transaction.
 *
 * mysql2 does not keep the server's transaction flag on the connection, and @@in_transaction is
 * MariaDB-only, so the check asks the server directly: `DO 0` does nothing, and the OK packet
 * it returns carries SERVER_STATUS_IN_TRANS (set by BEGIN / START TRANSACTION until COMMIT or
 * ROLLBACK, also after a deadlock silently ended the transaction) and SERVER_STATUS_AUTOCOMMIT.
 * Cost: one extra round trip per produce call (about 0.1 ms on a local server), paid before
 * anything is written, so a forgotten BEGIN can never autocommit an outbox row on its own.
 */
export function mysql2Transaction(connection: Mysql2TransactionConnection): TransactionAdapter {
  const conn = promiseConnection(connection)
  return {
    dialect: 'mysql',
    async assertInTransaction() {
      const [result] = await conn.query('DO 0')
      const status = (result as mysql.ResultSetHeader).serverStatus
      if (typeof status !== 'number') {
        throw new KEntityError(
          ErrorCodes.NO_TRANSACTION,
          'cannot tell whether a transaction is open on this connection: the server reported no status flags (a proxy in between?); nothing was stored',
        )
      }
      // With autocommit off, every statement joins the transaction the app will COMMIT.
      if (status & SERVER_STATUS_IN_TRANS || !(status & SERVER_STATUS_AUTOCOMMIT)) return
      throw new KEntityError(
        ErrorCodes.NO_TRANSACTION,
        'outbox topics must be produced inside a transaction: call beginTransaction() on this connection first (or use outbox.transaction(pool, fn)); nothing was stored',
      )
    },
    async execute(statement: SqlStatement) {
      await conn.query(statement.text, statement.values)
    },
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
