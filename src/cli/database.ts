import { type AdminDatabase, createAdmin, databaseOfUrl, sqlitePath } from '../admin/create.ts'
import type { OutboxAdmin } from '../admin/types.ts'
import { errorChain } from '../core/error-chain.ts'
import { ErrorCodes, isKEntityError, redactCredentials } from '../core/errors.ts'
import { endpointOf } from '../dialects/endpoint.ts'
import { UsageError } from './usage.ts'

export interface Target {
  url: string
  database: AdminDatabase
  schema?: string
  table?: string
  /** `host:port` or the file, for messages: never the user or the password. */
  where: string
}

const DATABASE_NAMES: Record<AdminDatabase, string> = {
  postgres: 'PostgreSQL',
  mysql: 'MySQL/MariaDB',
  sqlite: 'SQLite',
}

/** The database named by --url or DATABASE_URL, its kind told by the URL's scheme. */
export function target(values: { url?: string; schema?: string; table?: string }): Target {
  const url = values.url ?? (process.env.DATABASE_URL || undefined)
  if (url === undefined || url === '') {
    throw new UsageError(
      'no database given: pass --url postgres://user@host:5432/db (or mysql://, mariadb://, or a SQLite file path), or set DATABASE_URL',
    )
  }
  const database = databaseOfUrl(url)
  if (database === undefined) {
    throw new UsageError(
      `cannot tell the database from the URL '${redactCredentials(url)}': use postgres://, mysql://, mariadb:// or a SQLite file path`,
    )
  }
  const where =
    database === 'sqlite'
      ? sqlitePath(url)
      : (endpointOf(url, database === 'postgres' ? 5432 : 3306) ?? 'the configured host')
  return { url, database, schema: values.schema, table: values.table, where }
}

export function adminFor(t: Target): OutboxAdmin {
  return createAdmin({
    url: t.url,
    database: t.database,
    schema: t.schema,
    table: t.table,
    migrateHint: `k-entity migrate${t.schema ? ` --schema ${t.schema}` : ''}${t.table ? ` --table ${t.table}` : ''} (with the same --url)`,
  })
}

const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNRESET',
])
const LOGIN_REFUSED = new Set(['28P01', '28000', 'ER_ACCESS_DENIED_ERROR', 'ER_DBACCESS_DENIED_ERROR'])

/**
 * What the CLI prints for an error: how to fix it where the cause is known (a server that does
 * not answer, a refused login, tables never migrated), and never a password.
 */
export function explain(error: unknown, t: Target | undefined): string {
  const chain = errorChain(error)
  const codes = chain.map((e) => String((e as { code?: unknown }).code ?? ''))
  const messages = chain.map((e) => (e instanceof Error ? e.message : String(e)))
  const name = t === undefined ? 'the database' : DATABASE_NAMES[t.database]
  const fixUrl = '--url or DATABASE_URL'
  if (t !== undefined && !isKEntityError(error, ErrorCodes.NOT_MIGRATED)) {
    const unreachable = codes.find((code) => UNREACHABLE.has(code))
    if (
      unreachable !== undefined ||
      messages.some((m) =>
        /timeout expired|connect ETIMEDOUT|Connection terminated due to connection timeout/i.test(m),
      )
    ) {
      return `cannot reach ${name} at ${t.where} (${unreachable ?? 'connection timed out'}): start the server, or fix the host and port in ${fixUrl}`
    }
    if (codes.some((code) => LOGIN_REFUSED.has(code))) {
      return `${name} at ${t.where} refused the login (${redactCredentials(messages.find((_m, i) => LOGIN_REFUSED.has(codes[i] ?? '')) ?? '')}): check the user and password in ${fixUrl}`
    }
    if (codes.includes('3D000') || codes.includes('ER_BAD_DB_ERROR')) {
      return `${redactCredentials(messages.at(-1) ?? '')} on ${name} at ${t.where}: create the database or fix its name in ${fixUrl}`
    }
  }
  return redactCredentials(messages[0] ?? String(error))
}

/** The URL as the driver takes it: mysql2 knows `mysql://` only; SQLite wants the file path. */
export function driverTarget(t: Target): string {
  if (t.database === 'sqlite') return t.where
  return t.database === 'mysql' ? t.url.replace(/^mariadb:/i, 'mysql:') : t.url
}
