/**
 * The session openers of the drivers the data layers run on, imported on first use: an adapter
 * that speaks several databases (Kysely, Knex...) loads only the driver of the one it runs on,
 * so an app installs just that driver.
 */
import type { MysqlSession } from '../dialects/mysql/session.ts'
import type { PgSession } from '../dialects/postgres/session.ts'
import type { SessionPurpose } from '../outbox/parts.ts'
import type { Mysql2Connection } from './mysql2/session.ts'
import type { PgRelayConnection } from './pg/session.ts'
import type { MariadbConnection } from './prisma/mariadb-session.ts'

/** A node-postgres session named after its purpose (`k-entity-relay`, `-migrate`, `-admin`). */
export async function openPgSession(
  target: PgRelayConnection | undefined,
  purpose: SessionPurpose,
): Promise<PgSession> {
  return (await import('./pg/session.ts')).openPgSession(target, `k-entity-${purpose}`)
}

export async function openMysql2Session(
  target: Mysql2Connection | undefined,
  purpose: SessionPurpose,
): Promise<MysqlSession> {
  return (await import('./mysql2/session.ts')).openMysql2Session(target, purpose)
}

/** A session on the `mariadb` driver that `@prisma/adapter-mariadb` runs on (Prisma apps on MySQL/MariaDB). */
export async function openMariadbSession(
  target: MariadbConnection | undefined,
  purpose: SessionPurpose,
): Promise<MysqlSession> {
  return (await import('./prisma/mariadb-session.ts')).openMariadbSession(target, purpose)
}
