/**
 * Where the TypeORM adapter's relays, migrations and admin calls connect: a session of its own,
 * opened with the driver of the database (loaded on first use) from the app's DataSource, a URL
 * or the driver's options.
 */
import type mysql from 'mysql2/promise'
import type pg from 'pg'
import type { DataSource, EntityManager } from 'typeorm'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { MysqlSession } from '../../dialects/mysql/session.ts'
import type { PgSession } from '../../dialects/postgres/session.ts'
import { databaseUrl } from '../../dialects/shared/database-url.ts'
import type { SessionPurpose } from '../../outbox/parts.ts'
import { openMysql2Session, openPgSession } from '../driver-sessions.ts'
import { connectionOptions as keptOptions } from '../mysql2/client-options.ts'
import type { Mysql2Connection } from '../mysql2/session.ts'
import { notMysql, notPostgres } from './bindings.ts'
import { isDataSource, NO_CONNECTION } from './entity-manager.ts'

/**
 * Where the relay and `migrate()` connect on PostgreSQL: the app's DataSource (its connection
 * options are reused for a dedicated node-postgres session), a connection string or a `pg`
 * client config. Defaults to `DATABASE_URL`.
 */
export type TypeOrmConnection = DataSource | string | pg.ClientConfig

/**
 * Where they connect on MySQL/MariaDB: the app's DataSource (its connection options are reused
 * for a dedicated mysql2 connection), a `mysql://` URL or mysql2 connection options. Defaults to
 * `DATABASE_URL`.
 */
export type TypeOrmMysqlConnection = DataSource | string | mysql.ConnectionOptions

export async function openTypeOrmPgSession(target: unknown, purpose: SessionPurpose): Promise<PgSession> {
  const resolved = target ?? databaseUrl(NO_CONNECTION)
  return openPgSession(clientConfig(resolved as TypeOrmConnection), purpose)
}

export async function openTypeOrmMysqlSession(
  target: unknown,
  purpose: SessionPurpose,
): Promise<MysqlSession> {
  if (typeof target === 'object' && target !== null) {
    if (isDataSource(target)) return openMysql2Session(connectionOptions(target), purpose)
    if (typeof (target as EntityManager).transaction === 'function') {
      throw invalidArgument(
        "the outbox opens a connection of its own for relays, migrations and admin calls (never one of TypeORM's pool, whose session settings it would change): pass the DataSource, a mysql:// URL or mysql2 connection options, not an EntityManager",
      )
    }
  }
  // Read here only to say what to pass when it is unset; the mysql2 opener checks its scheme.
  if (target === undefined) databaseUrl(NO_CONNECTION)
  return openMysql2Session(target as Mysql2Connection | undefined, purpose)
}

function clientConfig(target: TypeOrmConnection): pg.ClientConfig {
  if (typeof target === 'string') return { connectionString: target }
  if (typeof target !== 'object' || target === null) {
    throw invalidArgument(
      `expected a TypeORM DataSource, a connection string or a pg client config, got ${describe(target)}`,
    )
  }
  if (!isDataSource(target)) return target
  const options = target.options
  if (options.type !== 'postgres') throw notPostgres(options.type)
  // The relay writes, so it must reach the primary, never a replica.
  const credentials = options.replication?.master ?? options
  // Built the way TypeORM builds its own pool config, `extra` last, so the session reaches the
  // same server with the same TLS settings as the app.
  return {
    connectionString: credentials.url,
    host: credentials.host,
    port: credentials.port,
    user: credentials.username,
    password: credentials.password,
    database: credentials.database,
    ssl: credentials.ssl,
    connectionTimeoutMillis: options.connectTimeoutMS,
    ...(options.extra ?? {}),
  }
}

/**
 * mysql2 options for a dedicated connection to the DataSource's server, merged the way TypeORM
 * builds its own pool options (a `url` overrides host, port, credentials and database; `extra`
 * comes last), so it reaches the same server with the same TLS settings as the app; of those,
 * only where to connect and how (see `connectionOptions`), never pool sizing or result shaping
 * (TypeORM turns on `bigNumberStrings`, the dialect expects mysql2's defaults). The relay
 * writes, so with `replication` configured it goes to the primary, never a replica.
 */
function connectionOptions(dataSource: DataSource): mysql.ConnectionOptions {
  const options = dataSource.options
  if (options.type !== 'mysql' && options.type !== 'mariadb') throw notMysql(options.type)
  const credentials = options.replication?.master ?? options
  return keptOptions({
    host: credentials.host,
    port: credentials.port,
    user: credentials.username,
    password: credentials.password,
    database: credentials.database,
    socketPath: credentials.socketPath,
    ssl: options.ssl,
    charset: options.charset,
    connectTimeout: options.connectTimeout,
    insecureAuth: options.insecureAuth,
    flags: options.flags,
    ...(credentials.url === undefined ? {} : urlCredentials(credentials.url)),
    ...options.extra,
  })
}

/** What TypeORM reads from a connection URL (query parameters are ignored, as TypeORM does); only what it holds. */
function urlCredentials(url: string): Record<string, unknown> {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    // The text itself is left out: it may hold the password.
    throw invalidArgument(
      `the DataSource's url is not a valid URL (${url.length} characters, not shown since it may hold a password); expected mysql://user:password@host:3306/database`,
    )
  }
  const decode = (part: string) => decodeURIComponent(part)
  const parts: Record<string, unknown> = {}
  if (parsed.hostname !== '') parts.host = decode(parsed.hostname.replace(/^\[(.*)\]$/, '$1'))
  if (parsed.port !== '') parts.port = Number(parsed.port)
  if (parsed.username !== '') parts.user = decode(parsed.username)
  if (parsed.password !== '') parts.password = decode(parsed.password)
  if (parsed.pathname.length > 1) parts.database = decode(parsed.pathname.slice(1))
  return parts
}
