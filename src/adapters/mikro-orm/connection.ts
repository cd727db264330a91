/**
 * Where the MikroORM adapter's relays, migrations and admin calls connect: a session of its own,
 * opened with the driver of the database (loaded on first use) from the settings of the app's
 * MikroORM instance or EntityManager, a URL or the driver's options.
 */
import type { EntityManager, MikroORM } from '@mikro-orm/core'
import type mysql from 'mysql2/promise'
import type pg from 'pg'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { MysqlSession } from '../../dialects/mysql/session.ts'
import type { PgSession } from '../../dialects/postgres/session.ts'
import { databaseUrl } from '../../dialects/shared/database-url.ts'
import type { SessionPurpose } from '../../outbox/parts.ts'
import { openMysql2Session, openPgSession } from '../driver-sessions.ts'
import { connectionOptions as keptOptions } from '../mysql2/client-options.ts'
import type { Mysql2Connection } from '../mysql2/session.ts'
import { notMysql, notPostgres } from './bindings.ts'
import {
  entityManagerOf,
  mikroOrmDatabase,
  NO_CONNECTION,
  plainDriverOptions,
  platformName,
} from './transaction-context.ts'

/**
 * Where the relay and `migrate()` connect on PostgreSQL: the app's MikroORM instance or an
 * EntityManager (their connection settings are reused for a dedicated node-postgres session), a
 * connection string or a `pg` client config. Defaults to `DATABASE_URL`.
 */
export type MikroOrmConnection = MikroORM | EntityManager | string | pg.ClientConfig

/**
 * Where they connect on MySQL/MariaDB: the app's MikroORM instance or an EntityManager (their
 * connection settings are reused for a dedicated mysql2 connection), a `mysql://` URL or mysql2
 * connection options. Defaults to `DATABASE_URL`.
 */
export type MikroOrmMysqlConnection = MikroORM | EntityManager | string | mysql.ConnectionOptions

export async function openMikroOrmPgSession(target: unknown, purpose: SessionPurpose): Promise<PgSession> {
  return openPgSession(clientConfig((target ?? databaseUrl(NO_CONNECTION)) as MikroOrmConnection), purpose)
}

export async function openMikroOrmMysqlSession(
  target: unknown,
  purpose: SessionPurpose,
): Promise<MysqlSession> {
  const em = typeof target === 'object' && target !== null ? entityManagerOf(target) : undefined
  if (em !== undefined) return openMysql2Session(await connectionOptions(em), purpose)
  // Read here only to say what to pass when it is unset; the mysql2 opener checks its scheme.
  if (target === undefined) databaseUrl(NO_CONNECTION)
  return openMysql2Session(target as Mysql2Connection | undefined, purpose)
}

function clientConfig(target: MikroOrmConnection): pg.ClientConfig {
  if (typeof target === 'string') return { connectionString: target }
  if (typeof target !== 'object' || target === null) {
    throw invalidArgument(
      `expected a MikroORM instance or EntityManager, a connection string or a pg client config, got ${describe(target)}`,
    )
  }
  const em = entityManagerOf(target)
  if (em === undefined) return target as pg.ClientConfig
  const found = mikroOrmDatabase(em)
  if (found !== 'postgres') throw notPostgres(em, found)
  const connection = em.getConnection('write')
  return { ...plainDriverOptions(em), ...connection.getConnectionOptions() } as pg.ClientConfig
}

/**
 * mysql2 options for a dedicated connection to the server of MikroORM's primary ('write')
 * connection, merged as MikroORM merges its pool's: connection settings, then plain
 * `driverOptions` (TLS, timeouts); of those, only where to connect and how (see
 * `connectionOptions`), never pool sizing or result shaping (MikroORM turns on
 * `supportBigNumbers` and `dateStrings`). A password given as a function is asked for now.
 */
async function connectionOptions(em: EntityManager): Promise<mysql.ConnectionOptions> {
  if (mikroOrmDatabase(em) !== 'mysql') throw notMysql(platformName(em))
  const { password, ...settings } = em.getConnection('write').getConnectionOptions()
  return keptOptions({
    ...settings,
    password: typeof password === 'function' ? await password() : password,
    ...plainDriverOptions(em),
  })
}
