import type { Kysely, Transaction } from 'kysely'
import { invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { PostgresOutboxOptions, PostgresRelayOptions } from '../../dialects/postgres/postgres-outbox.ts'
import { type DataLayer, DataLayerOutbox } from '../data-layer.ts'
import { openMysql2Session, openPgSession } from '../driver-sessions.ts'
import type { Mysql2Connection } from '../mysql2/session.ts'
import type { PgRelayConnection } from '../pg/session.ts'
import {
  assertKyselyDatabase,
  isKysely,
  type KyselyDatabase,
  type KyselyTransaction,
  kyselyDatabase,
  kyselyTransaction,
} from './bindings.ts'

export { type KyselyDatabase, type KyselyTransaction, kyselyTransaction }

/**
 * Where relays, migrations and admin calls connect: on PostgreSQL a URL, a `pg` config or the
 * app's `pg.Pool`; on MySQL a `mysql://` URL or mysql2 options. Kysely keeps its dialect's
 * pool private, so a Kysely instance cannot serve.
 */
export type KyselyConnection = PgRelayConnection | Mysql2Connection

export interface KyselyOutboxOptions<M extends TopicMap> extends PostgresOutboxOptions<M> {
  /**
   * The app's Kysely instance: the outbox speaks its database (PostgresDialect or MysqlDialect).
   * Without it the outbox is for PostgreSQL (`createKyselyMysqlOutbox` for MySQL/MariaDB).
   */
  // biome-ignore lint/suspicious/noExplicitAny: any database interface of the app
  db?: Kysely<any>
}

export type KyselyRelayOptions<Target = PgRelayConnection> = PostgresRelayOptions<Target>

const kysely: DataLayer<KyselyTransaction> = {
  root: 'Kysely instance',
  isHandle: isKysely,
  isTransaction: (handle) => (handle as Kysely<unknown>).isTransaction === true,
  databaseOf: (handle) => kyselyDatabase(handle as Kysely<unknown>),
  assertDatabase: (handle, expected) => assertKyselyDatabase(handle as Kysely<unknown>, expected),
  binding: kyselyTransaction,
  openSession(database, target, purpose) {
    if (database === 'postgres') return openPgSession(target as PgRelayConnection | undefined, purpose)
    if (isKysely(target)) {
      return Promise.reject(
        invalidArgument(
          "a Kysely instance cannot host the outbox's own connection (Kysely keeps its pool's settings private): pass a mysql:// URL or mysql2 connection options",
        ),
      )
    }
    return openMysql2Session(target as Mysql2Connection | undefined, purpose)
  },
}

/**
 * The Kysely adapter, on PostgreSQL (`PostgresDialect`) and MySQL 8 / MariaDB 10.6+
 * (`MysqlDialect`): pass `db` and the outbox speaks its database. Relays and migrations open
 * their own session: pass `connection` (on PostgreSQL a URL, config or your `pg.Pool`; on MySQL
 * a URL or mysql2 options), or set `DATABASE_URL`.
 *
 * @example
 * const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) })
 * const outbox = createKyselyOutbox({ db, topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(pool)
 * await outbox.transaction(db, async (trx, topics) => {
 *   await trx.insertInto('orders').values(order).execute()
 *   await topics.orderCreated.produce(order)
 * })
 */
export class KyselyOutbox<M extends TopicMap, Target = PgRelayConnection> extends DataLayerOutbox<
  M,
  KyselyTransaction,
  Target
> {
  constructor(options: KyselyOutboxOptions<M>, database?: KyselyDatabase) {
    super(options, kysely, database)
  }

  /**
   * Runs `fn` in `db.transaction().execute()`: COMMIT if it resolves, ROLLBACK if it throws.
   * After the commit, relays of this process are woken at once.
   */
  transaction<DB, R>(
    db: Kysely<DB>,
    fn: (trx: Transaction<DB>, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    return this.runTransaction(db, fn, () => db.transaction().execute((trx) => fn(trx, this.in(trx))))
  }
}

/** The outbox for `options.db`'s database; without `db`, for PostgreSQL. */
export function createKyselyOutbox<M extends TopicMap>(
  // biome-ignore lint/suspicious/noExplicitAny: any database interface of the app
  options: KyselyOutboxOptions<M> & { db: Kysely<any> },
): KyselyOutbox<M, KyselyConnection>
export function createKyselyOutbox<M extends TopicMap>(options: KyselyOutboxOptions<M>): KyselyOutbox<M>
export function createKyselyOutbox<M extends TopicMap>(options: KyselyOutboxOptions<M>): KyselyOutbox<M> {
  return new KyselyOutbox(options)
}

export type { PgRelayConnection as KyselyRelayConnection }
