import type { EntityManager, MikroORM, TransactionOptions } from '@mikro-orm/core'
import { MySqlPlatform, type SqlEntityManager } from '@mikro-orm/mysql'
import type mysql from 'mysql2/promise'
import { describe, invalidArgument, type KEntityError } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import {
  type MysqlDriver,
  MysqlOutbox,
  type MysqlOutboxOptions,
  type MysqlRelayOptions,
} from '../../dialects/mysql/mysql-outbox.ts'
import { assertInTransactionBySavepoint } from '../../dialects/mysql/savepoint-probe.ts'
import { errorNumber } from '../../dialects/mysql/session.ts'
import { hasDatabaseUrl } from '../../dialects/shared/database-url.ts'
import { connectionOptions as keptOptions } from '../mysql2/client-options.ts'
import { type Mysql2Connection, openMysql2Session } from '../mysql2/session.ts'
import {
  checkEntityManager,
  entityManagerOf,
  noDefaultConnection,
  openTransaction,
  plainDriverOptions,
  rawQuery,
  runTransactional,
} from './transaction-context.ts'

/**
 * The EntityManager of MikroORM's MySQL driver (`@mikro-orm/mysql`) or of its MariaDB driver
 * (`@mikro-orm/mariadb`, built on it); other drivers are refused at runtime.
 */
export type MikroOrmMysqlEntityManager = SqlEntityManager

/**
 * Where the relay and `migrate()` connect: the app's MikroORM instance or an EntityManager (their
 * connection settings are reused for a dedicated mysql2 connection), a `mysql://` URL or mysql2
 * connection options. Defaults to `DATABASE_URL`.
 */
export type MikroOrmMysqlConnection = MikroORM | SqlEntityManager | string | mysql.ConnectionOptions

const HINT = 'use the em passed to em.transactional(async (em) => ...) (or outbox.transaction(em, fn))'

/**
 * Wraps the EntityManager MikroORM hands to `em.transactional(async (em) => ...)` on MySQL or
 * MariaDB.
 *
 * Messages are written at once, on the connection of the open transaction (the Kysely
 * transaction MikroORM keeps as its context, which hands the statement and its Buffer values to
 * mysql2 as the mysql2 adapter does), rather than staged for a flush hook: `transactional()`
 * flushes the entities on that same connection before it commits, so a failing flush rolls the
 * messages back with everything else, while writing at once takes each key's ordering lock at
 * produce time and reports a bad message at the `produce()` call that caused it.
 *
 * Before writing, MikroORM's own state must show the transaction open, and so must the server
 * (`assertInTransactionBySavepoint`: Kysely keeps the OK packet's status flags to itself), which
 * also catches a transaction the server ended on its own, such as a deadlock victim's.
 */
export function mikroOrmMysqlTransaction(em: SqlEntityManager): TransactionAdapter {
  checkEntityManager(em)
  checkPlatform(em)
  return {
    dialect: 'mysql',
    async assertInTransaction() {
      const transaction = openTransaction(em)
      await assertInTransactionBySavepoint(
        transaction,
        (sql) => transaction.executeQuery(rawQuery({ text: sql, values: [] })),
        errorNumber,
        HINT,
      )
    },
    async execute(statement: SqlStatement) {
      await openTransaction(em).executeQuery(rawQuery(statement))
    },
  }
}

const mikroOrmMysqlDriver: MysqlDriver<SqlEntityManager, MikroOrmMysqlConnection> = {
  transaction: mikroOrmMysqlTransaction,
  async openSession(target, purpose) {
    if (target === undefined && !hasDatabaseUrl()) throw noDefaultConnection()
    const em = typeof target === 'object' && target !== null ? entityManagerOf(target) : undefined
    if (em !== undefined) return openMysql2Session(await connectionOptions(em), purpose)
    return openMysql2Session(target as Mysql2Connection | undefined, purpose)
  },
}

/**
 * The MikroORM adapter for MySQL and MariaDB (`@mikro-orm/mysql`, or `@mikro-orm/mariadb`):
 * messages are written in the transaction of the EntityManager, together with the entities it
 * flushes.
 *
 * @example
 * const outbox = createMikroOrmMysqlOutbox({ topics: { orderCreated }, schema: 'shop', kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(orm)
 * await outbox.transaction(orm.em, async (em, topics) => {
 *   em.persist(em.create(Order, order))
 *   await topics.orderCreated.produce(order)
 * })
 */
export class MikroOrmMysqlOutbox<M extends TopicMap> extends MysqlOutbox<
  M,
  SqlEntityManager,
  MikroOrmMysqlConnection
> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, mikroOrmMysqlDriver)
  }

  /**
   * Runs `fn` in `em.transactional()`: the forked EntityManager is flushed and committed if `fn`
   * resolves, everything is rolled back if it throws. Inside an open transaction MikroORM makes
   * this a savepoint.
   */
  async transaction<E extends SqlEntityManager, R>(
    em: E,
    fn: (em: E, topics: TopicProducers<M>) => Promise<R>,
    options?: TransactionOptions,
  ): Promise<R> {
    const result = await runTransactional(em, fn, options, (inner) => this.in(inner))
    this.notifyCommitted()
    return result
  }
}

export function createMikroOrmMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): MikroOrmMysqlOutbox<M> {
  return new MikroOrmMysqlOutbox(options)
}

export type {
  MysqlOutboxOptions as MikroOrmMysqlOutboxOptions,
  MysqlRelayOptions as MikroOrmMysqlRelayOptions,
}

function checkPlatform(em: { getPlatform(): unknown }): void {
  const platform = em.getPlatform()
  if (platform instanceof MySqlPlatform) return
  const name = (platform as object | null)?.constructor?.name ?? describe(platform)
  throw wrongDriver(name)
}

function wrongDriver(platform: string): KEntityError {
  return invalidArgument(
    `k-entity/mikro-orm/mysql needs MikroORM's MySQL driver (@mikro-orm/mysql or @mikro-orm/mariadb), this EntityManager uses ${platform}; ${
      platform.startsWith('PostgreSql')
        ? 'use k-entity/mikro-orm (createMikroOrmOutbox) for PostgreSQL'
        : "k-entity's MikroORM adapters cover PostgreSQL (k-entity/mikro-orm) and MySQL/MariaDB (k-entity/mikro-orm/mysql)"
    }`,
  )
}

/**
 * mysql2 options for a dedicated connection to the server of MikroORM's primary ('write')
 * connection, merged as MikroORM merges its pool's: connection settings, then plain
 * `driverOptions` (TLS, timeouts); of those, only where to connect and how (see
 * `connectionOptions`), never pool sizing or result shaping (MikroORM turns on
 * `supportBigNumbers` and `dateStrings`). A password given as a function is asked for now.
 */
async function connectionOptions(em: EntityManager): Promise<mysql.ConnectionOptions> {
  checkPlatform(em)
  const { password, ...settings } = em.getConnection('write').getConnectionOptions()
  return keptOptions({
    ...settings,
    password: typeof password === 'function' ? await password() : password,
    ...plainDriverOptions(em),
  })
}
