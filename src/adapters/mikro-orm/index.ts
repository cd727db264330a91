import type { TransactionOptions } from '@mikro-orm/core'
import { type EntityManager, type MikroORM, PostgreSqlPlatform } from '@mikro-orm/postgresql'
import type pg from 'pg'
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
  checkEntityManager,
  entityManagerOf,
  noDefaultConnection,
  openTransaction,
  plainDriverOptions,
  rawQuery,
  runTransactional,
} from './transaction-context.ts'

/**
 * Where the relay and `migrate()` connect: the app's MikroORM instance or an EntityManager (their
 * connection settings are reused for a dedicated node-postgres session), a connection string or a
 * `pg` client config. Defaults to `DATABASE_URL`.
 */
export type MikroOrmConnection = MikroORM | EntityManager | string | pg.ClientConfig

/**
 * Wraps the EntityManager MikroORM hands to `em.transactional(async (em) => ...)`.
 *
 * Messages are written at once, on the connection of the open transaction, rather than staged
 * and written by a flush hook: the transaction commits only after `transactional()` flushed the
 * entities on that same connection, so a failing flush rolls the messages back with everything
 * else, while writing immediately takes each key's ordering lock at produce time and reports
 * a bad message (or a missing outbox table) at the `produce()` call that caused it. A flush hook
 * would also write messages in whatever transaction a later flush happens to use.
 */
export function mikroOrmTransaction(em: EntityManager): TransactionAdapter {
  checkEntityManager(em)
  if (!(em.getPlatform() instanceof PostgreSqlPlatform)) {
    throw invalidArgument(
      `k-entity/mikro-orm needs MikroORM's PostgreSQL driver (@mikro-orm/postgresql), this EntityManager uses ${describe(em.getPlatform())}`,
    )
  }
  return {
    dialect: 'postgres',
    assertInTransaction() {
      openTransaction(em)
    },
    async execute(statement: SqlStatement) {
      const transaction = openTransaction(em)
      try {
        await transaction.executeQuery(rawQuery(statement))
      } catch (error) {
        throw transactionError(error) ?? error
      }
    },
  }
}

const mikroOrmDriver: PostgresDriver<EntityManager, MikroOrmConnection> = {
  transaction: mikroOrmTransaction,
  openSession: (target, applicationName) =>
    openPgSession(clientConfig(target ?? defaultConnection()), applicationName),
}

/**
 * The MikroORM adapter (PostgreSQL): messages are written in the transaction of the
 * EntityManager, together with the entities it flushes.
 *
 * @example
 * const outbox = createMikroOrmOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(orm)
 * await outbox.transaction(orm.em, async (em, topics) => {
 *   em.persist(em.create(Order, order))
 *   await topics.orderCreated.produce(order)
 * })
 */
export class MikroOrmOutbox<M extends TopicMap> extends PostgresOutbox<M, EntityManager, MikroOrmConnection> {
  constructor(options: PostgresOutboxOptions<M>) {
    super(options, mikroOrmDriver)
  }

  /**
   * Runs `fn` in `em.transactional()`: the forked EntityManager is flushed and committed if `fn`
   * resolves, everything is rolled back if it throws. Inside an open transaction MikroORM makes
   * this a savepoint.
   */
  async transaction<E extends EntityManager, R>(
    em: E,
    fn: (em: E, topics: TopicProducers<M>) => Promise<R>,
    options?: TransactionOptions,
  ): Promise<R> {
    const result = await runTransactional(em, fn, options, (inner) => this.in(inner))
    this.notifyCommitted()
    return result
  }
}

export function createMikroOrmOutbox<M extends TopicMap>(
  options: PostgresOutboxOptions<M>,
): MikroOrmOutbox<M> {
  return new MikroOrmOutbox(options)
}

export type { PostgresOutboxOptions as MikroOrmOutboxOptions, PostgresRelayOptions as MikroOrmRelayOptions }

function defaultConnection(): string {
  if (!hasDatabaseUrl()) throw noDefaultConnection()
  return databaseUrl()
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
  if (!(em.getPlatform() instanceof PostgreSqlPlatform)) {
    throw invalidArgument('k-entity/mikro-orm needs MikroORM configured with the PostgreSQL driver')
  }
  const connection = em.getConnection('write')
  return { ...plainDriverOptions(em), ...connection.getConnectionOptions() } as pg.ClientConfig
}
