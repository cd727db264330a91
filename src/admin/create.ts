import type { DatabaseSync } from 'node:sqlite'
import { describe, internalError, invalidArgument } from '../core/errors.ts'
import { resolveTable } from '../core/identifiers.ts'
import type { MysqlSession } from '../dialects/mysql/session.ts'
import { mysqlSql } from '../dialects/mysql/sql-dialect.ts'
import type { PgSession } from '../dialects/postgres/session.ts'
import { postgresSql } from '../dialects/postgres/sql-dialect.ts'
import type { SqliteConnection } from '../dialects/sqlite/connection.ts'
import { type SqliteBorrowed, sqliteSql } from '../dialects/sqlite/sql-dialect.ts'
import { composeAdmin } from './admin.ts'
import type { OutboxAdmin } from './types.ts'

export type AdminDatabase = 'postgres' | 'mysql' | 'sqlite'

export interface AdminOptions {
  /** Which database; inferred from `url` when absent (postgres://, mysql:// or mariadb://, file: or a path). */
  database?: AdminDatabase
  /**
   * Where to connect: a postgres://, mysql:// or mariadb:// URL, or a SQLite file (`file:` URL
   * or path). Default `DATABASE_URL`. Each call opens a short session of its own.
   */
  url?: string
  /** Driver options instead of `url` (a pg client config, mysql2 connection options). */
  connection?: object
  /** Schema (MySQL: database) of the outbox table (default `k_entity`). */
  schema?: string
  /** Outbox table name (default `outbox`). */
  table?: string
  /** How error messages tell to create missing tables (default `outbox.migrate()`). */
  migrateHint?: string
}

/** The database a URL names by its scheme; undefined when it names none. */
export function databaseOfUrl(url: string): AdminDatabase | undefined {
  if (/^postgres(ql)?:\/\//i.test(url)) return 'postgres'
  if (/^(mysql|mariadb):\/\//i.test(url)) return 'mysql'
  if (/^(file|sqlite):/i.test(url) || !/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return 'sqlite'
  return undefined
}

/** A SQLite URL (`file:/path`, `sqlite:/path`) or path as the path of the file. */
export function sqlitePath(url: string): string {
  if (/^file:/i.test(url)) {
    const path = decodeURIComponent(new URL(url).pathname)
    return path
  }
  if (/^sqlite:/i.test(url)) return url.replace(/^sqlite:(\/\/)?/i, '')
  return url
}

/**
 * The admin part of an outbox table without the app's topics (for operators' tools: the CLI, a
 * dashboard, metrics). It opens its own short sessions through the database's driver (`pg`,
 * `mysql2`, or Node's built-in `node:sqlite`), which must be installed.
 *
 * @example
 * const admin = createAdmin({ url: process.env.DATABASE_URL })
 * console.log(await admin.status())
 * await admin.close()
 */
export function createAdmin(options: AdminOptions = {}): OutboxAdmin {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(
      `createAdmin(options): options must be an object like { url: 'postgres://...' }, got ${describe(options)}`,
    )
  }
  const { url: givenUrl, connection, database: givenDatabase, migrateHint } = options
  const table = resolveTable(options)
  if (givenUrl !== undefined && (typeof givenUrl !== 'string' || givenUrl === '')) {
    throw invalidArgument(`createAdmin option 'url' must be a non-empty string, got ${describe(givenUrl)}`)
  }
  if (connection !== undefined && (typeof connection !== 'object' || connection === null)) {
    throw invalidArgument(
      `createAdmin option 'connection' must be driver options (an object), got ${describe(connection)}`,
    )
  }
  if (givenUrl !== undefined && connection !== undefined) {
    throw invalidArgument("createAdmin takes either 'url' or 'connection', not both")
  }
  if (migrateHint !== undefined && typeof migrateHint !== 'string') {
    throw invalidArgument(`createAdmin option 'migrateHint' must be a string, got ${describe(migrateHint)}`)
  }
  const url = givenUrl ?? (connection === undefined ? process.env.DATABASE_URL || undefined : undefined)
  if (givenDatabase !== undefined && !['postgres', 'mysql', 'sqlite'].includes(givenDatabase)) {
    throw invalidArgument(
      `createAdmin option 'database' must be 'postgres', 'mysql' or 'sqlite', got ${describe(givenDatabase)}`,
    )
  }
  const database = givenDatabase ?? (url === undefined ? undefined : databaseOfUrl(url))
  if (database === undefined) {
    throw invalidArgument(
      url === undefined
        ? "createAdmin needs a database: pass { url: 'postgres://user@host:5432/db' } (or mysql://, or a SQLite file path), or set DATABASE_URL"
        : `cannot tell the database from the URL ${describe(url)}: use postgres://, mysql://, mariadb:// or a SQLite file path, or pass { database }`,
    )
  }
  if (database === 'postgres') {
    const target = (url ?? connection) as string | object
    return composeAdmin<Promise<PgSession>>({
      dialect: postgresSql(),
      table,
      migrateHint,
      open: async () =>
        (await import('../adapters/driver-sessions.ts')).openPgSession(target as never, 'admin'),
    })
  }
  if (database === 'mysql') {
    const target = url === undefined ? connection : url.replace(/^mariadb:/i, 'mysql:')
    return composeAdmin<Promise<MysqlSession>>({
      dialect: mysqlSql,
      table,
      migrateHint,
      open: async () =>
        (await import('../adapters/driver-sessions.ts')).openMysql2Session(target as never, 'admin'),
    })
  }
  if (url === undefined) {
    throw invalidArgument("createAdmin on SQLite needs { url: '/path/to/app.db' } (the database file)")
  }
  const filename = sqlitePath(url)
  if (filename === '' || filename === ':memory:') {
    throw invalidArgument(
      `an in-memory SQLite database exists only inside its handle; pass the path of the database file, got ${describe(url)}`,
    )
  }
  let wrap: ((db: DatabaseSync) => SqliteConnection) | undefined
  const open = (file: string): SqliteConnection => {
    if (wrap === undefined) throw internalError('the node:sqlite adapter was not loaded before use')
    return wrap(new (nodeSqlite().DatabaseSync)(file))
  }
  return composeAdmin<SqliteBorrowed>({
    dialect: sqliteSql(open),
    table,
    migrateHint,
    // Loaded at the first call: an admin of another database never loads node:sqlite.
    async ready() {
      wrap ??= (await import('../adapters/node-sqlite/index.ts')).nodeSqliteConnection
    },
    open: () => ({ connection: open(filename), owned: true }),
  })
}

function nodeSqlite(): typeof import('node:sqlite') {
  return process.getBuiltinModule('node:sqlite') as typeof import('node:sqlite')
}
