import type { TransactionOptions } from '@mikro-orm/core'
import { type EntityManager, type MikroORM, PostgreSqlPlatform } from '@mikro-orm/postgresql'
import pg from 'pg'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import type { PgSession } from '../../dialects/postgres/index.ts'
import {
  type PostgresDriver,
  PostgresOutbox,
  type PostgresOutboxOptions,
  type PostgresRelayOptions,
} from '../../dialects/postgres/postgres-outbox.ts'

/**
 * Where the relay and `migrate()` connect: the app's MikroORM instance or an EntityManager (their
 * connection settings are reused for a dedicated node-postgres session), a connection string or a
 * `pg` client config. Defaults to `DATABASE_URL`.
 */
export type MikroOrmConnection = MikroORM | EntityManager | string | pg.ClientConfig

/**
 * The slice of Kysely's transaction that MikroORM 7 keeps as the transaction context. Kysely's
 * PostgreSQL driver hands `sql` and `parameters` to node-postgres unchanged, so the dialect's
 * `$n` placeholders and Buffer arrays reach the server exactly as the pg adapter sends them.
 */
interface KyselyTransaction {
  executeQuery(query: CompiledRawQuery): Promise<unknown>
  readonly isCommitted?: boolean
  readonly isRolledBack?: boolean
}

/** Kysely's `CompiledQuery.raw(sql, parameters)`, built here so the adapter needs no kysely import. */
interface CompiledRawQuery {
  sql: string
  parameters: readonly unknown[]
  query: { kind: 'RawNode'; sqlFragments: readonly string[]; parameters: readonly unknown[] }
  queryId: { queryId: string }
}

let queryCounter = 0

function rawQuery(statement: SqlStatement): CompiledRawQuery {
  return {
    sql: statement.text,
    parameters: statement.values,
    query: { kind: 'RawNode', sqlFragments: [statement.text], parameters: [] },
    queryId: { queryId: `k-entity-${++queryCounter}` },
  }
}

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
  if (
    typeof em !== 'object' ||
    em === null ||
    typeof em.getTransactionContext !== 'function' ||
    typeof em.getPlatform !== 'function'
  ) {
    throw invalidArgument(
      `expected the EntityManager of a MikroORM transaction (em.transactional(async (em) => ...)), got ${describe(em)}`,
    )
  }
  if (!(em.getPlatform() instanceof PostgreSqlPlatform)) {
    throw invalidArgument(
      `k-entity/mikro-orm needs MikroORM's PostgreSQL driver (@mikro-orm/postgresql), this EntityManager uses ${describe(em.getPlatform())}`,
    )
  }
  const context = () => em.getTransactionContext<KyselyTransaction & Record<string, unknown>>()
  return {
    dialect: 'postgres',
    assertInTransaction() {
      const transaction = context()
      if (
        transaction === undefined ||
        transaction.isCommitted === true ||
        transaction.isRolledBack === true
      ) {
        throw new KEntityError(
          ErrorCodes.NO_TRANSACTION,
          'outbox topics must be produced inside a transaction: use the em passed to em.transactional(async (em) => ...) (or outbox.transaction(em, fn)); a plain em.flush() opens its own transaction only for the flush; nothing was stored',
        )
      }
    },
    async execute(statement: SqlStatement) {
      const transaction = context()
      if (transaction === undefined) throw new Error('assertInTransaction() must run before execute()')
      try {
        await transaction.executeQuery(rawQuery(statement))
      } catch (error) {
        if ((error as { code?: unknown }).code === IN_FAILED_TRANSACTION) throw abortedTransaction(error)
        throw error
      }
    },
  }
}

const IN_FAILED_TRANSACTION = '25P02'

function abortedTransaction(cause: unknown): KEntityError {
  return new KEntityError(
    ErrorCodes.TRANSACTION_ABORTED,
    'the transaction already failed (PostgreSQL ignores further commands until ROLLBACK); nothing was stored',
    { cause },
  )
}

const mikroOrmDriver: PostgresDriver<EntityManager, MikroOrmConnection> = {
  transaction: mikroOrmTransaction,
  async openSession(target, applicationName) {
    const config = clientConfig(target ?? defaultConnection())
    const client = new pg.Client({ ...config, application_name: applicationName })
    // Without a listener, a server-side disconnect of an idle session would crash the process.
    client.on('error', () => {})
    await client.connect()
    return client as unknown as PgSession
  },
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
    if (typeof em !== 'object' || em === null || typeof em.transactional !== 'function') {
      throw invalidArgument(`transaction() needs a MikroORM EntityManager (orm.em), got ${describe(em)}`)
    }
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a function, got ${describe(fn)}`)
    const result = await em.transactional((inner) => fn(inner, this.in(inner)), options)
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
  const url = process.env.DATABASE_URL
  if (!url) {
    throw invalidArgument(
      'no database connection given and DATABASE_URL is not set: pass your MikroORM instance, e.g. outbox.migrate(orm) or outbox.relay({ connection: orm })',
    )
  }
  return url
}

function clientConfig(target: MikroOrmConnection): pg.ClientConfig {
  if (typeof target === 'string') return { connectionString: target }
  if (typeof target !== 'object' || target === null) {
    throw invalidArgument(
      `expected a MikroORM instance or EntityManager, a connection string or a pg client config, got ${describe(target)}`,
    )
  }
  const candidate = 'em' in target && typeof target.em === 'object' ? target.em : target
  if (typeof (candidate as EntityManager).getConnection !== 'function') return target as pg.ClientConfig
  const em = candidate as EntityManager
  if (!(em.getPlatform() instanceof PostgreSqlPlatform)) {
    throw invalidArgument('k-entity/mikro-orm needs MikroORM configured with the PostgreSQL driver')
  }
  const connection = em.getConnection('write')
  // Plain driver options are extra node-postgres settings (TLS, timeouts) MikroORM gives its pool;
  // a ready-made Kysely instance or dialect says nothing about how to connect.
  const driverOptions = em.config.get('driverOptions')
  const extra = isPlainObject(driverOptions) ? driverOptions : {}
  return { ...extra, ...connection.getConnectionOptions() } as pg.ClientConfig
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype
}
