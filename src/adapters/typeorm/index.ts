import type { DataSource, EntityManager } from 'typeorm'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { PostgresRelayOptions } from '../../dialects/postgres/postgres-outbox.ts'
import {
  type DataLayer,
  DataLayerOutbox,
  type DataLayerOutboxOptions,
  type SqlDatabase,
} from '../data-layer.ts'
import { typeOrmTransaction } from './bindings.ts'
import {
  openTypeOrmMysqlSession,
  openTypeOrmPgSession,
  type TypeOrmConnection,
  type TypeOrmMysqlConnection,
} from './connection.ts'
import {
  assertTypeOrmDatabase,
  dataSourceType,
  isDataSource,
  isTypeOrmHandle,
  runTypeOrmTransaction,
  type TypeOrmIsolationLevel,
  typeOrmDatabase,
} from './entity-manager.ts'

export { type TypeOrmConnection, type TypeOrmIsolationLevel, typeOrmTransaction }

export interface TypeOrmOutboxOptions<M extends TopicMap> extends DataLayerOutboxOptions<M> {
  /**
   * The app's DataSource: the outbox speaks its database (type 'postgres', or 'mysql'/'mariadb').
   * Without it the outbox is for PostgreSQL (`createTypeOrmMysqlOutbox` for MySQL/MariaDB).
   * Reading its `options.type` needs no connection, so it may be passed before `initialize()`.
   */
  db?: DataSource
}

export type TypeOrmRelayOptions<Target = TypeOrmConnection> = PostgresRelayOptions<Target>

const typeOrm: DataLayer<EntityManager> = {
  root: 'TypeORM DataSource',
  // transaction() takes a DataSource or a manager, whose transaction TypeORM makes a savepoint.
  isHandle: isTypeOrmHandle,
  isTransaction: (handle) => !isDataSource(handle as object),
  nests: true,
  databaseOf: (handle) => typeOrmDatabase(dataSourceType(handle as DataSource)),
  assertDatabase: (handle, expected) => assertTypeOrmDatabase(handle as DataSource, expected),
  binding: (manager, database) => typeOrmTransaction(manager, database),
  // The postgres driver's query runner holds the pool client it checked out for the transaction.
  pgClient: (manager) =>
    (manager.queryRunner as { databaseConnection?: unknown } | undefined)?.databaseConnection,
  openSession: (database, target, purpose) =>
    database === 'postgres'
      ? openTypeOrmPgSession(target, purpose)
      : openTypeOrmMysqlSession(target, purpose),
}

/**
 * The TypeORM adapter, on PostgreSQL (DataSource type 'postgres') and MySQL 8 / MariaDB 10.6+
 * (type 'mysql' or 'mariadb', mysql2 driver): pass `db` and the outbox speaks its database.
 * Messages are written with the transaction's own query runner, so they commit or roll back
 * with the entities saved through the same manager. Relays and migrations open their own
 * session: pass `connection` (the DataSource, a URL or the driver's options), or set `DATABASE_URL`.
 *
 * @example
 * const outbox = createTypeOrmOutbox({ db: dataSource, topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(dataSource)
 * await outbox.transaction(dataSource, async (manager, topics) => {
 *   await manager.save(Order, order)
 *   await topics.orderCreated.produce(order)
 * })
 */
export class TypeOrmOutbox<M extends TopicMap, Target = TypeOrmConnection> extends DataLayerOutbox<
  M,
  EntityManager,
  Target
> {
  constructor(options: TypeOrmOutboxOptions<M>, database?: SqlDatabase) {
    super(options, typeOrm, database)
  }

  /**
   * Runs `fn` in `target.transaction()`: COMMIT if it resolves, ROLLBACK if it throws. Given the
   * manager of an open transaction, TypeORM makes this a savepoint inside it. Given the
   * DataSource of a 'postgres' type, the messages ride on the transaction's next query or its
   * COMMIT (see `writeWithCommit`). After the commit, relays of this process are woken at once.
   */
  transaction<R>(
    target: DataSource | EntityManager,
    fn: (manager: EntityManager, topics: TopicProducers<M>) => Promise<R>,
    options: { isolationLevel?: TypeOrmIsolationLevel } = {},
  ): Promise<R> {
    return this.runTransaction(target, fn, (body) => runTypeOrmTransaction(target, options, body))
  }
}

/** The outbox for `options.db`'s database; without `db`, for PostgreSQL. */
export function createTypeOrmOutbox<M extends TopicMap>(
  options: TypeOrmOutboxOptions<M> & { db: DataSource },
): TypeOrmOutbox<M, TypeOrmConnection | TypeOrmMysqlConnection>
export function createTypeOrmOutbox<M extends TopicMap>(options: TypeOrmOutboxOptions<M>): TypeOrmOutbox<M>
export function createTypeOrmOutbox<M extends TopicMap>(options: TypeOrmOutboxOptions<M>): TypeOrmOutbox<M> {
  return new TypeOrmOutbox(options)
}
