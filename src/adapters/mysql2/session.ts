import mysql from 'mysql2/promise'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { MysqlSession } from '../../dialects/mysql/index.ts'
import { endConnection, type MysqlSessionPurpose } from '../../dialects/mysql/session.ts'
import { databaseUrl, MYSQL_URL } from '../../dialects/shared/database-url.ts'

/** What `in()` accepts: a mysql2 connection (promise or callback API) on which a transaction is open. */
export type Mysql2TransactionConnection = Pick<mysql.Connection, 'query'>

export type { MysqlSessionPurpose }

export function promiseConnection(connection: unknown): mysql.Connection {
  if (
    typeof connection !== 'object' ||
    connection === null ||
    typeof (connection as mysql.Connection).query !== 'function'
  ) {
    throw invalidArgument(`expected a mysql2 connection inside a transaction, got ${describe(connection)}`)
  }
  if (typeof (connection as mysql.Pool).getConnection === 'function') {
    throw invalidArgument(
      'got a mysql2 pool: a pool has no transaction of its own. Take a connection (const conn = await pool.getConnection()), call conn.beginTransaction(), and pass that connection',
    )
  }
  // The callback API's connection: its promise facade shares the same session.
  const callbackApi = connection as { promise?: () => mysql.Connection }
  return typeof callbackApi.promise === 'function' ? callbackApi.promise() : (connection as mysql.Connection)
}

/** A connection URL (`mysql://user:pass@host:3306/db`), mysql2 connection options, or (for migrate) a connection. */
export type Mysql2Connection = string | mysql.ConnectionOptions | Mysql2TransactionConnection

/**
 * Opens a connection the outbox owns, for a relay, a migration or an admin call. Shared by
 * every data layer that runs on mysql2 (Knex, Kysely, Drizzle, TypeORM, MikroORM): they pass
 * their URL or options here, since the relay keeps its leader lock and claim on a connection
 * of its own.
 */
export async function openMysql2Session(
  target: Mysql2Connection | undefined,
  purpose: MysqlSessionPurpose,
): Promise<MysqlSession> {
  const resolved = target ?? defaultConnection()
  if (
    typeof resolved === 'object' &&
    resolved !== null &&
    typeof (resolved as mysql.Pool).getConnection === 'function'
  ) {
    throw invalidArgument(
      `got a mysql2 pool where the outbox needs one connection it owns (${purpose === 'relay' ? "the relay's leader lock and claim live on it" : 'its statements must run on one session'}): pass the connection URL or options instead`,
    )
  }
  if (typeof resolved === 'object' && resolved !== null && 'query' in resolved) {
    if (purpose !== 'migrate') {
      throw invalidArgument(
        purpose === 'relay'
          ? 'the relay needs a connection of its own (its leader lock and claim live on it): pass a connection URL or mysql2 connection options, not a connection'
          : 'dead-letter and stats calls open a short connection of their own (replay runs a transaction, which would commit yours): pass a connection URL or mysql2 connection options, not a connection',
      )
    }
    // The caller's own connection (e.g. for migrate(conn)): use it, but never end it.
    return session(promiseConnection(resolved), false)
  }
  if (typeof resolved !== 'string' && (typeof resolved !== 'object' || resolved === null)) {
    throw invalidArgument(
      `expected a mysql:// connection URL, mysql2 connection options or a mysql2 connection, got ${describe(resolved)}`,
    )
  }
  const options: mysql.ConnectionOptions = typeof resolved === 'string' ? { uri: resolved } : resolved
  const connection = await mysql.createConnection({
    ...options,
    // TCP keepalive probes after 10 s of silence (mysql2 turns keepalive on, but with the
    // system's delay, 2 hours by default), unless the app chose its own.
    keepAliveInitialDelay: options.keepAliveInitialDelay ?? 10_000,
    connectAttributes: { program_name: `k-entity-${purpose}`, ...options.connectAttributes },
  })
  return session(connection, true)
}

function session(connection: mysql.Connection, owned: boolean): MysqlSession {
  // Without a listener, the server ending an idle connection would crash the process.
  connection.on('error', () => {})
  return {
    async query(text, values) {
      const [result] = await connection.query(text, values)
      if (Array.isArray(result)) return { rows: result as Record<string, unknown>[], affectedRows: 0 }
      return { rows: [], affectedRows: (result as mysql.ResultSetHeader).affectedRows }
    },
    async end() {
      if (!owned) return
      await endConnection(connection)
    },
    destroy() {
      if (owned) connection.destroy()
    },
    onError(listener) {
      connection.on('error', listener)
    },
  }
}

function defaultConnection(): string {
  return databaseUrl('', {
    pattern: MYSQL_URL,
    mismatch: `is not a mysql:// URL; pass connection: 'mysql://user@host:3306/db'`,
  })
}
