import type pg from 'pg'
import type { DataSource, EntityManager } from 'typeorm'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import {
  type PostgresDriver,
  PostgresOutbox,
  type PostgresOutboxOptions,
  type PostgresRelayOptions,
} from '../../dialects/postgres/postgres-outbox.ts'
import { transactionError } from '../../dialects/postgres/transaction.ts'
import { databaseUrl, hasDatabaseUrl } from '../../dialects/shared/database-url.ts'
import { openPgSession } from '../pg/session.ts'
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
 * reused for a dedicated node-postgres session), a connection string or a `pg` client config.
 * Defaults to `DATABASE_URL`.
 */
export type TypeOrmConnection = DataSource | string | pg.ClientConfig

/** Wraps the EntityManager TypeORM hands to `dataSource.transaction(async (manager) => ...)`. */
export function typeOrmTransaction(manager: EntityManager): TransactionAdapter {
  const type = dataSourceTypeOf(manager)
  if (type !== 'postgres') {
    throw invalidArgument(
      `k-entity/typeorm needs a DataSource of type 'postgres', this one is ${describe(type)}; ${type === 'mysql' || type === 'mariadb' ? 'use k-entity/typeorm/mysql' : 'use the adapter of that database'}`,
    )
  }
  return {
    dialect: 'postgres',
    assertInTransaction() {
      activeQueryRunner(manager)
    },
    async execute(statement: SqlStatement) {
      try {
        await activeQueryRunner(manager).query(statement.text, statement.values)
      } catch (error) {
        throw transactionError(error) ?? error
      }
    },
  }
}

const typeOrmDriver: PostgresDriver<EntityManager, TypeOrmConnection> = {
  transaction: typeOrmTransaction,
  openSession: (target, applicationName) =>
    openPgSession(clientConfig(target ?? defaultConnection()), applicationName),
}

/**
 * The TypeORM adapter (PostgreSQL): messages are written with the transaction's own query runner,
 * so they commit or roll back with the entities saved through the same manager.
 *
 * @example
 * const outbox = createTypeOrmOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(dataSource)
 * await outbox.transaction(dataSource, async (manager, topics) => {
 *   await manager.save(Order, order)
 *   await topics.orderCreated.produce(order)
 * })
 */
export class TypeOrmOutbox<M extends TopicMap> extends PostgresOutbox<M, EntityManager, TypeOrmConnection> {
  constructor(options: PostgresOutboxOptions<M>) {
    super(options, typeOrmDriver)
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

export function createTypeOrmOutbox<M extends TopicMap>(options: PostgresOutboxOptions<M>): TypeOrmOutbox<M> {
  return new TypeOrmOutbox(options)
}

export type { PostgresOutboxOptions as TypeOrmOutboxOptions, PostgresRelayOptions as TypeOrmRelayOptions }

function defaultConnection(): string {
  if (!hasDatabaseUrl()) throw noDefaultConnection()
  return databaseUrl()
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
  if (options.type !== 'postgres') {
    throw invalidArgument(
      `k-entity/typeorm needs a DataSource of type 'postgres', this one is '${options.type}'${options.type === 'mysql' || options.type === 'mariadb' ? '; use k-entity/typeorm/mysql' : ''}`,
    )
  }
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
