import type { EntityManager, MikroORM, TransactionOptions } from '@mikro-orm/core'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { PostgresOutboxOptions, PostgresRelayOptions } from '../../dialects/postgres/postgres-outbox.ts'
import { type DataLayer, DataLayerOutbox, type SqlDatabase } from '../data-layer.ts'
import { mikroOrmTransaction } from './bindings.ts'
import {
  type MikroOrmConnection,
  type MikroOrmMysqlConnection,
  openMikroOrmMysqlSession,
  openMikroOrmPgSession,
} from './connection.ts'
import {
  assertMikroOrmDatabase,
  entityManagerOf,
  mikroOrmDatabase,
  runTransactional,
} from './transaction-context.ts'

export { type MikroOrmConnection, mikroOrmTransaction }

export interface MikroOrmOutboxOptions<M extends TopicMap> extends PostgresOutboxOptions<M> {
  /**
   * The app's MikroORM instance (or `orm.em`): the outbox speaks its driver's database
   * (@mikro-orm/postgresql, or @mikro-orm/mysql and @mikro-orm/mariadb). Without it the outbox
   * is for PostgreSQL (`createMikroOrmMysqlOutbox` for MySQL/MariaDB). Reading the platform
   * needs no connection.
   */
  db?: MikroORM | EntityManager
}

export type MikroOrmRelayOptions<Target = MikroOrmConnection> = PostgresRelayOptions<Target>

/** The EntityManager of a handle already known to be one (or a MikroORM instance). */
const emOf = (handle: unknown) => entityManagerOf(handle as object) as EntityManager

const mikroOrm: DataLayer<EntityManager> = {
  root: 'MikroORM instance or EntityManager',
  isHandle: (value) => typeof value === 'object' && value !== null && entityManagerOf(value) !== undefined,
  // transaction() takes an em inside em.transactional() too: MikroORM makes that a savepoint.
  isTransaction: (handle) => emOf(handle).isInTransaction?.() === true,
  nests: true,
  databaseOf: (handle) => mikroOrmDatabase(emOf(handle)),
  assertDatabase: (handle, expected) => assertMikroOrmDatabase(emOf(handle), expected),
  binding: (em, database) => mikroOrmTransaction(em, database),
  openSession: (database, target, purpose) =>
    database === 'postgres'
      ? openMikroOrmPgSession(target, purpose)
      : openMikroOrmMysqlSession(target, purpose),
}

/**
 * The MikroORM adapter, on PostgreSQL (@mikro-orm/postgresql) and MySQL 8 / MariaDB 10.6+
 * (@mikro-orm/mysql or @mikro-orm/mariadb): pass `db` and the outbox speaks its database.
 * Messages are written in the transaction of the EntityManager, together with the entities it
 * flushes. Relays and migrations open their own session: pass `connection` (the MikroORM
 * instance, an EntityManager, a URL or the driver's options), or set `DATABASE_URL`.
 *
 * @example
 * const outbox = createMikroOrmOutbox({ db: orm, topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(orm)
 * await outbox.transaction(orm.em, async (em, topics) => {
 *   em.persist(em.create(Order, order))
 *   await topics.orderCreated.produce(order)
 * })
 */
export class MikroOrmOutbox<M extends TopicMap, Target = MikroOrmConnection> extends DataLayerOutbox<
  M,
  EntityManager,
  Target
> {
  constructor(options: MikroOrmOutboxOptions<M>, database?: SqlDatabase) {
    super(options, mikroOrm, database)
  }

  /**
   * Runs `fn` in `em.transactional()`: the forked EntityManager is flushed and committed if `fn`
   * resolves, everything is rolled back if it throws. Inside an open transaction MikroORM makes
   * this a savepoint. After the commit, relays of this process are woken at once.
   */
  transaction<E extends EntityManager, R>(
    em: E,
    fn: (em: E, topics: TopicProducers<M>) => Promise<R>,
    options?: TransactionOptions,
  ): Promise<R> {
    return this.runTransaction(em, fn, () => runTransactional(em, fn, options, (inner) => this.in(inner)))
  }
}

/** The outbox for `options.db`'s database; without `db`, for PostgreSQL. */
export function createMikroOrmOutbox<M extends TopicMap>(
  options: MikroOrmOutboxOptions<M> & { db: MikroORM | EntityManager },
): MikroOrmOutbox<M, MikroOrmConnection | MikroOrmMysqlConnection>
export function createMikroOrmOutbox<M extends TopicMap>(options: MikroOrmOutboxOptions<M>): MikroOrmOutbox<M>
export function createMikroOrmOutbox<M extends TopicMap>(
  options: MikroOrmOutboxOptions<M>,
): MikroOrmOutbox<M> {
  return new MikroOrmOutbox(options)
}
