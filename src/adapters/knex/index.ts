import type { Knex } from 'knex'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { MysqlSession } from '../../dialects/mysql/session.ts'
import type { PostgresRelayOptions } from '../../dialects/postgres/postgres-outbox.ts'
import type { SessionPurpose } from '../../outbox/parts.ts'
import { type DataLayer, DataLayerOutbox, type DataLayerOutboxOptions } from '../data-layer.ts'
import { openMysql2Session, openPgSession } from '../driver-sessions.ts'
import { connectionOptions } from '../mysql2/client-options.ts'
import type { Mysql2Connection } from '../mysql2/session.ts'
import type { PgRelayConnection } from '../pg/session.ts'
import {
  assertKnexDatabase,
  isKnex,
  type KnexDatabase,
  type KnexTransaction,
  knexConnectionSettings,
  knexDatabase,
  knexTransaction,
  toKnexBindings,
} from './bindings.ts'

export { type KnexDatabase, type KnexTransaction, knexTransaction, toKnexBindings }

/**
 * Where relays, migrations and admin calls connect: on PostgreSQL a URL, a `pg` config or a
 * `pg.Pool`; on MySQL the app's `knex` instance (its settings open a new, dedicated
 * connection), a `mysql://` URL or mysql2 options.
 */
export type KnexConnection = PgRelayConnection | Knex | Mysql2Connection

export interface KnexOutboxOptions<M extends TopicMap> extends DataLayerOutboxOptions<M> {
  /**
   * The app's Knex instance: the outbox speaks its database (client `pg` or `mysql2`). Without
   * it the outbox is for PostgreSQL (`createKnexMysqlOutbox` for MySQL/MariaDB).
   */
  db?: Knex
}

export type KnexRelayOptions<Target = PgRelayConnection> = PostgresRelayOptions<Target>

/** MySQL: the app's knex instance lends its connection settings (not its pool) to a new connection. */
async function openMysqlSession(target: unknown, purpose: SessionPurpose): Promise<MysqlSession> {
  if (!isKnex(target)) return openMysql2Session(target as Mysql2Connection | undefined, purpose)
  assertKnexDatabase(target, 'mysql')
  const settings = await knexConnectionSettings(target)
  if (typeof settings === 'string') return openMysql2Session(settings, purpose)
  if (typeof settings === 'object' && settings !== null) {
    // Without what shapes the app's results (Knex apps often set `typeCast`) or is Knex's own.
    return openMysql2Session(connectionOptions(settings as Record<string, unknown>), purpose)
  }
  throw invalidArgument(
    `the Knex instance has no connection settings to open the outbox's own connection with (got ${describe(settings)}); pass a mysql:// URL or mysql2 connection options instead`,
  )
}

const knex: DataLayer<KnexTransaction> = {
  root: 'knex instance',
  isHandle: isKnex,
  isTransaction: (handle) => (handle as Knex).isTransaction === true,
  databaseOf: (handle) => knexDatabase(handle as Knex),
  assertDatabase: (handle, expected) => assertKnexDatabase(handle as Knex, expected),
  binding: knexTransaction,
  // Inside a transaction Knex hands out the transaction's own connection.
  pgClient: (trx) => trx.client.acquireConnection(),
  openSession: (database, target, purpose) =>
    database === 'postgres'
      ? openPgSession(target as PgRelayConnection | undefined, purpose)
      : openMysqlSession(target, purpose),
}

/**
 * The Knex adapter, on PostgreSQL (client `pg`) and MySQL 8 / MariaDB 10.6+ (client `mysql2`):
 * pass `db` and the outbox speaks its database. Relays and migrations open their own session:
 * pass `connection` (on PostgreSQL a URL, config or `pg.Pool`; on MySQL the knex instance, a
 * URL or options), or set `DATABASE_URL`.
 *
 * @example
 * const knex = Knex({ client: 'pg', connection: process.env.DATABASE_URL })
 * const outbox = createKnexOutbox({ db: knex, topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(process.env.DATABASE_URL)
 * await outbox.transaction(knex, async (trx, topics) => {
 *   await trx('orders').insert(order)
 *   await topics.orderCreated.produce(order)
 * })
 */
export class KnexOutbox<M extends TopicMap, Target = PgRelayConnection> extends DataLayerOutbox<
  M,
  KnexTransaction,
  Target
> {
  constructor(options: KnexOutboxOptions<M>, database?: KnexDatabase) {
    super(options, knex, database)
  }

  /**
   * Runs `fn` in `knex.transaction()`: COMMIT if it resolves, ROLLBACK if it throws. On
   * node-postgres the messages ride on the transaction's next query or its COMMIT (see
   * `writeWithCommit`). After the commit, relays of this process are woken at once.
   */
  transaction<R>(db: Knex, fn: (trx: KnexTransaction, topics: TopicProducers<M>) => Promise<R>): Promise<R> {
    return this.runTransaction(db, fn, (body) => db.transaction(body))
  }
}

/** The outbox for `options.db`'s database; without `db`, for PostgreSQL. */
export function createKnexOutbox<M extends TopicMap>(
  options: KnexOutboxOptions<M> & { db: Knex },
): KnexOutbox<M, KnexConnection>
export function createKnexOutbox<M extends TopicMap>(options: KnexOutboxOptions<M>): KnexOutbox<M>
export function createKnexOutbox<M extends TopicMap>(options: KnexOutboxOptions<M>): KnexOutbox<M> {
  return new KnexOutbox(options)
}

export type { PgRelayConnection as KnexRelayConnection }
