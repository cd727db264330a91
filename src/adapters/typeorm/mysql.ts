import type mysql from 'mysql2/promise'
import type { DataSource, EntityManager } from 'typeorm'
import { describe, invalidArgument, type KEntityError } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import {
  type MysqlDriver,
  MysqlOutbox,
  type MysqlOutboxOptions,
  type MysqlRelayOptions,
} from '../../dialects/mysql/mysql-outbox.ts'
import { assertTransactionStatus, TRANSACTION_PROBE } from '../../dialects/mysql/transaction-status.ts'
import { hasDatabaseUrl } from '../../dialects/shared/database-url.ts'
import { connectionOptions as keptOptions } from '../mysql2/client-options.ts'
import { type Mysql2Connection, openMysql2Session } from '../mysql2/session.ts'
import {
  activeQueryRunner,
  dataSourceTypeOf,
  isDataSource,
  noDefaultConnection,
  runTypeOrmTransaction,
  type TypeOrmIsolationLevel,
} from './entity-manager.ts'

export type { TypeOrmIsolationLevel }

/**
 * Where the relay and `migrate()` connect: the app's DataSource (its connection options are
 * reused for a dedicated mysql2 connection), a `mysql://` URL or mysql2 connection options.
 * Defaults to `DATABASE_URL`.
 */
export type TypeOrmMysqlConnection = DataSource | string | mysql.ConnectionOptions

const HINT =
  'use the manager passed to dataSource.transaction(async (manager) => ...) (or outbox.transaction(dataSource, fn))'

/**
 * Wraps the EntityManager TypeORM hands to `dataSource.transaction(async (manager) => ...)` on a
 * DataSource of type 'mysql' or 'mariadb'. Statements run on the transaction's own query runner.
 * Before writing, TypeORM's own state must show the transaction open, and so must the server:
 * the runner's `DO 0` returns mysql2's OK packet, whose status flags also reveal a transaction
 * the server ended on its own (a deadlock rolls it back and leaves the session in autocommit,
 * while TypeORM still believes it open).
 */
export function typeOrmMysqlTransaction(manager: EntityManager): TransactionAdapter {
  const type = dataSourceTypeOf(manager)
  if (type !== 'mysql' && type !== 'mariadb') throw wrongDataSource(type)
  return {
    dialect: 'mysql',
    async assertInTransaction() {
      const result: unknown = await activeQueryRunner(manager).query(TRANSACTION_PROBE)
      assertTransactionStatus((result as { serverStatus?: unknown } | undefined)?.serverStatus, HINT)
    },
    async execute(statement: SqlStatement) {
      await activeQueryRunner(manager).query(statement.text, statement.values)
    },
  }
}

const typeOrmMysqlDriver: MysqlDriver<EntityManager, TypeOrmMysqlConnection> = {
  transaction: typeOrmMysqlTransaction,
  async openSession(target, purpose) {
    if (target === undefined && !hasDatabaseUrl()) throw noDefaultConnection()
    if (typeof target === 'object' && target !== null) {
      if (isDataSource(target)) return openMysql2Session(connectionOptions(target), purpose)
      if (typeof (target as EntityManager).transaction === 'function') {
        throw invalidArgument(
          "the outbox opens a connection of its own for relays, migrations and admin calls (never one of TypeORM's pool, whose session settings it would change): pass the DataSource, a mysql:// URL or mysql2 connection options, not an EntityManager",
        )
      }
    }
    return openMysql2Session(target as Mysql2Connection | undefined, purpose)
  },
}

/**
 * The TypeORM adapter for MySQL and MariaDB (DataSource type 'mysql' or 'mariadb', mysql2
 * driver): messages are written with the transaction's own query runner, so they commit or roll
 * back with the entities saved through the same manager.
 *
 * @example
 * const outbox = createTypeOrmMysqlOutbox({ topics: { orderCreated }, schema: 'shop', kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(dataSource)
 * await outbox.transaction(dataSource, async (manager, topics) => {
 *   await manager.save(Order, order)
 *   await topics.orderCreated.produce(order)
 * })
 */
export class TypeOrmMysqlOutbox<M extends TopicMap> extends MysqlOutbox<
  M,
  EntityManager,
  TypeOrmMysqlConnection
> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, typeOrmMysqlDriver)
  }

  /**
   * Runs `fn` in `target.transaction()`: COMMIT if it resolves, ROLLBACK if it throws. Given the
   * manager of an open transaction, TypeORM makes this a savepoint inside it.
   */
  async transaction<R>(
    target: DataSource | EntityManager,
    fn: (manager: EntityManager, topics: TopicProducers<M>) => Promise<R>,
    options: { isolationLevel?: TypeOrmIsolationLevel } = {},
  ): Promise<R> {
    const result = await runTypeOrmTransaction(target, fn, options, (manager) => this.in(manager))
    this.notifyCommitted()
    return result
  }
}

export function createTypeOrmMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): TypeOrmMysqlOutbox<M> {
  return new TypeOrmMysqlOutbox(options)
}

export type { MysqlOutboxOptions as TypeOrmMysqlOutboxOptions, MysqlRelayOptions as TypeOrmMysqlRelayOptions }

function wrongDataSource(type: unknown): KEntityError {
  return invalidArgument(
    `k-entity/typeorm/mysql needs a DataSource of type 'mysql' or 'mariadb', this one is ${describe(type)}; ${
      type === 'postgres'
        ? 'use k-entity/typeorm (createTypeOrmOutbox) for PostgreSQL'
        : "k-entity's TypeORM adapters cover 'postgres' (k-entity/typeorm) and 'mysql'/'mariadb' (k-entity/typeorm/mysql)"
    }`,
  )
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
  if (options.type !== 'mysql' && options.type !== 'mariadb') throw wrongDataSource(options.type)
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
