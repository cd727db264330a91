import * as mariadb from 'mariadb'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { MysqlSession } from '../../dialects/mysql/index.ts'
import { endConnection, type MysqlSessionPurpose } from '../../dialects/mysql/session.ts'
import { databaseUrl, MYSQL_URL } from '../../dialects/shared/database-url.ts'
import { isPrismaClient } from './transaction-client.ts'

/**
 * A connection URL (`mysql://` or `mariadb://user:pass@host:3306/db`) or `mariadb` connection
 * options: what `new PrismaMariaDb(...)` takes, minus an existing pool.
 */
export type MariadbConnection = string | mariadb.ConnectionConfig

/**
 * Results as mysql2 returns them by default (BIGINT as numbers, DECIMAL as strings, BLOB as
 * Buffers, DATETIME as Dates, rows as objects), whatever the connection options say, so the MySQL
 * dialect reads the same values through both drivers. Given per statement, where they override
 * the connection's options.
 */
const MYSQL2_RESULTS = {
  rowsAsArray: false,
  nestTables: false,
  metaAsArray: false,
  namedPlaceholders: false,
  typeCast: undefined,
  bigIntAsNumber: true,
  insertIdAsNumber: true,
  decimalAsNumber: false,
  supportBigNumbers: false,
  bigNumberStrings: false,
  dateStrings: false,
  autoJsonMap: true,
} satisfies mariadb.QueryConfig

/**
 * TCP keepalive after 10 s of silence (the driver's default is none), and 10 s to connect (its
 * default is 1 s, short for a server across a busy network), unless the app chose its own.
 */
const KEEPALIVE_DELAY_MS = 10_000
const CONNECT_TIMEOUT_MS = 10_000

/**
 * Opens a connection the outbox owns with the `mariadb` driver that `@prisma/adapter-mariadb`
 * runs on, for a relay, a migration or an admin call: Prisma neither exposes its connections
 * nor has one to spare (the relay keeps its leader lock and claim on a connection of its own),
 * and a Prisma app has this driver already.
 */
export async function openMariadbSession(
  target: MariadbConnection | undefined,
  purpose: MysqlSessionPurpose,
): Promise<MysqlSession> {
  const resolved = target ?? defaultConnection()
  const programName = `k-entity-${purpose}`
  let config: string | mariadb.ConnectionConfig
  if (typeof resolved === 'string') {
    config = connectionUrl(resolved, programName)
  } else {
    checkConfig(resolved)
    const attributes = typeof resolved.connectAttributes === 'object' ? resolved.connectAttributes : {}
    config = {
      ...resolved,
      keepAliveDelay: resolved.keepAliveDelay ?? KEEPALIVE_DELAY_MS,
      connectTimeout: resolved.connectTimeout ?? CONNECT_TIMEOUT_MS,
      connectAttributes: { program_name: programName, ...attributes },
    }
  }
  const connection = await mariadb.createConnection(config)
  return session(connection)
}

function session(connection: mariadb.Connection): MysqlSession {
  // Without a listener, the server ending an idle connection would crash the process.
  connection.on('error', () => {})
  return {
    async query(text, values) {
      const statement = { sql: text, ...MYSQL2_RESULTS }
      // Values go as binary parameters of a prepared statement: the driver's text protocol would
      // inline bytes with backslash escapes, which a server in NO_BACKSLASH_ESCAPES mode misreads.
      const result: unknown =
        values !== undefined && values.length > 0
          ? await connection.execute(statement, values)
          : await connection.query(statement)
      if (Array.isArray(result)) return { rows: result as Record<string, unknown>[], affectedRows: 0 }
      return { rows: [], affectedRows: Number((result as { affectedRows?: unknown }).affectedRows ?? 0) }
    },
    async end() {
      await endConnection(connection)
    },
    destroy() {
      connection.destroy()
    },
    onError(listener) {
      connection.on('error', listener)
    },
  }
}

/**
 * The URL as the `mariadb` driver reads it, rewritten the way `@prisma/adapter-mariadb` rewrites
 * it (`mysql://` becomes `mariadb://`, an IPv6 host is percent-encoded), so whatever URL the app
 * gives its PrismaMariaDb adapter reaches the same server here.
 */
function connectionUrl(value: string, programName: string): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    // The text itself is left out: it may hold the password.
    throw invalidArgument(
      `expected a mysql:// or mariadb:// connection URL (the one your PrismaMariaDb adapter uses), got a string that is not a URL (${value.length} characters, not shown since it may hold a password)`,
    )
  }
  if (url.protocol !== 'mysql:' && url.protocol !== 'mariadb:') {
    throw invalidArgument(
      `expected a mysql:// or mariadb:// connection URL (the one your PrismaMariaDb adapter uses), got a ${url.protocol}// URL${url.protocol.startsWith('postgres') ? '; for PostgreSQL use k-entity/prisma' : ''}`,
    )
  }
  url.protocol = 'mariadb:'
  if (url.hostname.startsWith('[') && url.hostname.endsWith(']')) {
    url.hostname = encodeURIComponent(url.hostname.slice(1, -1))
  }
  if (!url.searchParams.has('keepAliveDelay'))
    url.searchParams.set('keepAliveDelay', String(KEEPALIVE_DELAY_MS))
  if (!url.searchParams.has('connectTimeout'))
    url.searchParams.set('connectTimeout', String(CONNECT_TIMEOUT_MS))
  if (!url.searchParams.has('connectAttributes')) {
    url.searchParams.set('connectAttributes', JSON.stringify({ program_name: programName }))
  }
  return url.toString()
}

function checkConfig(value: unknown): asserts value is mariadb.ConnectionConfig {
  if (isPrismaClient(value)) {
    throw invalidArgument(
      'Prisma does not reveal its connection settings: pass the URL (or mariadb options) your PrismaMariaDb adapter uses, e.g. outbox.relay({ connection: process.env.DATABASE_URL })',
    )
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidArgument(
      `expected a mysql:// URL or mariadb connection options (what your PrismaMariaDb adapter takes), got ${describe(value)}`,
    )
  }
  if (typeof (value as { getConnection?: unknown }).getConnection === 'function') {
    throw invalidArgument(
      'got a mariadb pool where the outbox needs a connection it owns (the relay keeps its leader lock and claim on it): pass the URL or options the pool was created with',
    )
  }
  if (typeof (value as { connect?: unknown }).connect === 'function') {
    throw invalidArgument(
      'got a driver adapter (or a connection), whose settings it does not reveal: pass the URL or mariadb options you gave new PrismaMariaDb(...)',
    )
  }
  if (typeof (value as { query?: unknown }).query === 'function') {
    throw invalidArgument(
      'got a connection where the outbox needs one it owns: pass the URL or mariadb options your PrismaMariaDb adapter uses',
    )
  }
}

function defaultConnection(): string {
  return databaseUrl(
    ': pass the URL (or mariadb options) of your PrismaMariaDb adapter, e.g. outbox.relay({ connection: url })',
    {
      pattern: MYSQL_URL,
      mismatch:
        'is not a mysql:// or mariadb:// URL: pass the URL (or mariadb options) of your PrismaMariaDb adapter',
    },
  )
}
