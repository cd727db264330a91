/**
 * Where the Prisma adapter's relays, migrations and admin calls connect: Prisma neither exposes
 * its connections nor their settings, so the app passes the URL (or the driver's options) its
 * driver adapter uses; the outbox opens a session of its own with that driver, loaded on first use.
 */
import type pg from 'pg'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { MysqlSession } from '../../dialects/mysql/session.ts'
import type { PgSession } from '../../dialects/postgres/session.ts'
import { databaseUrl } from '../../dialects/shared/database-url.ts'
import type { SessionPurpose } from '../../outbox/parts.ts'
import type { SqlDatabase } from '../data-layer.ts'
import { openMariadbSession, openPgSession } from '../driver-sessions.ts'
import type { MariadbConnection } from './mariadb-session.ts'
import { isPrismaClient } from './transaction-client.ts'

/**
 * Where the relay and `migrate()` connect on PostgreSQL: the connection string (or `pg` config)
 * your `PrismaPg` adapter uses. Defaults to `DATABASE_URL`.
 */
export type PrismaConnection = string | pg.ClientConfig

/**
 * Where they connect on MySQL/MariaDB: the URL (`mysql://` or `mariadb://`) or `mariadb`
 * options your `PrismaMariaDb` adapter uses. Defaults to `DATABASE_URL`.
 */
export type PrismaMysqlConnection = MariadbConnection

export function openPrismaSession(
  database: SqlDatabase,
  target: unknown,
  purpose: SessionPurpose,
): Promise<PgSession | MysqlSession> {
  return database === 'postgres'
    ? openPostgres(target, purpose)
    : openMariadbSession(target as MariadbConnection | undefined, purpose)
}

async function openPostgres(target: unknown, purpose: SessionPurpose): Promise<PgSession> {
  const resolved = target ?? databaseUrl(': pass the connection string of your PrismaPg adapter')
  if (typeof resolved !== 'string' && (typeof resolved !== 'object' || resolved === null)) {
    throw invalidArgument(
      `expected the connection string (or pg client config) of your PrismaPg adapter, got ${describe(resolved)}`,
    )
  }
  if (isPrismaClient(resolved)) {
    throw invalidArgument(
      'Prisma does not reveal its connection settings: pass the connection string your PrismaPg adapter uses, e.g. outbox.relay({ connection: process.env.DATABASE_URL })',
    )
  }
  return openPgSession(resolved as PrismaConnection, purpose)
}
