import type { TablesRelationalConfig } from 'drizzle-orm'
import type {
  MySqlDatabase,
  MySqlQueryResultHKT,
  MySqlTransaction,
  PreparedQueryHKTBase,
} from 'drizzle-orm/mysql-core'
import type { AnyMySql2Connection } from 'drizzle-orm/mysql2'
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { PostgresRelayOptions } from '../../dialects/postgres/postgres-outbox.ts'
import {
  type DataLayer,
  DataLayerOutbox,
  type DataLayerOutboxOptions,
  type SqlDatabase,
} from '../data-layer.ts'
import { openMysql2Session } from '../driver-sessions.ts'
import { mysql2ClientOptions } from '../mysql2/client-options.ts'
import type { Mysql2Connection } from '../mysql2/session.ts'
import { isPostgresJsTransaction } from '../postgres-js/held-transaction.ts'
import {
  assertDrizzleDatabase,
  type DrizzleMysqlTransaction,
  type DrizzleTransaction,
  drizzleDatabase,
  drizzleTransaction,
  isDrizzleTransaction,
  toDrizzleSql,
} from './bindings.ts'
import { type DrizzleRelayConnection, openDrizzleSession } from './session.ts'

export { type DrizzleMysqlTransaction, type DrizzleTransaction, drizzleTransaction, toDrizzleSql }

/**
 * Where relays, migrations and admin calls connect on MySQL: the app's Drizzle `db` or its
 * mysql2 pool (their settings open a new, dedicated connection), a `mysql://` URL, or mysql2 options.
 */
export type DrizzleMysqlConnection = Mysql2Connection | AnyMySql2Connection | { readonly $client: unknown }

/** Where they connect on either database (see `DrizzleRelayConnection` for PostgreSQL). */
export type DrizzleConnection = DrizzleRelayConnection | DrizzleMysqlConnection

export interface DrizzleOutboxOptions<M extends TopicMap> extends DataLayerOutboxOptions<M> {
  /**
   * The app's Drizzle db: the outbox speaks its database (drizzle-orm on PostgreSQL, or
   * drizzle-orm/mysql2). Without it the outbox is for PostgreSQL (`createDrizzleMysqlOutbox`
   * for MySQL/MariaDB).
   */
  db?: object
}

export type DrizzleRelayOptions<Target = DrizzleRelayConnection> = PostgresRelayOptions<Target>

/** MySQL: the Drizzle db or a pool lends its settings to a new connection; a connection goes as it is. */
function mysqlTarget(target: unknown): Mysql2Connection | undefined {
  const isObject = typeof target === 'object' && target !== null
  if (isObject && '$client' in target) {
    assertDrizzleDatabase(target, 'mysql', 'the Drizzle db')
    const options = mysql2ClientOptions(target.$client)
    if (options === undefined) {
      throw invalidArgument(
        `the Drizzle db's $client is not a mysql2 pool or connection (got ${describe(target.$client)}); pass a mysql:// URL or mysql2 connection options`,
      )
    }
    return options
  }
  if (isObject && typeof (target as { getConnection?: unknown }).getConnection === 'function') {
    return mysql2ClientOptions(target) ?? (target as Mysql2Connection)
  }
  return target as Mysql2Connection | undefined
}

/** The session under a Drizzle transaction (the same object as its `session`), whose `client` runs its statements. */
function drizzleSession(tx: unknown): { client?: unknown } | undefined {
  return (tx as { _?: { session?: { client?: unknown } } } | null)?._?.session
}

export const drizzleLayer: DataLayer<DrizzleTransaction | DrizzleMysqlTransaction> = {
  root: 'Drizzle db',
  isHandle: (value) => drizzleDatabase(value) !== undefined,
  isTransaction: isDrizzleTransaction,
  databaseOf: drizzleDatabase,
  assertDatabase: (handle, expected) => assertDrizzleDatabase(handle, expected, 'the Drizzle db'),
  binding: drizzleTransaction,
  // The node-postgres driver's transaction runs on a session of the client it checked out; the
  // postgres.js driver's session holds the postgres.js `sql` of its transaction, through which
  // every statement of `tx` (and its nested transactions' savepoints) goes.
  pgClient: (tx) => drizzleSession(tx)?.client,
  routePostgresJs(tx, route) {
    const session = drizzleSession(tx)
    if (session === undefined || !isPostgresJsTransaction(session.client)) return false
    session.client = route(session.client)
    return true
  },
  async openSession(database, target, purpose) {
    if (database === 'postgres') {
      return openDrizzleSession(target as DrizzleRelayConnection | undefined, `k-entity-${purpose}`)
    }
    return openMysql2Session(mysqlTarget(target), purpose)
  },
}

/**
 * The Drizzle adapter, on PostgreSQL (node-postgres and postgres.js drivers) and MySQL 8 /
 * MariaDB 10.6+ (`drizzle-orm/mysql2`): pass `db` and the outbox speaks its database. Relays and
 * migrations open their own session: pass `connection` (the Drizzle `db`, its client, or a
 * URL), or set `DATABASE_URL`.
 *
 * @example
 * const db = drizzle(pool)
 * const outbox = createDrizzleOutbox({ db, topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(db)
 * await outbox.transaction(db, async (tx, topics) => {
 *   await tx.insert(orders).values(order)
 *   await topics.orderCreated.produce(order)
 * })
 */
export class DrizzleOutbox<M extends TopicMap, Target = DrizzleRelayConnection> extends DataLayerOutbox<
  M,
  DrizzleTransaction | DrizzleMysqlTransaction,
  Target
> {
  constructor(options: DrizzleOutboxOptions<M>, database?: SqlDatabase) {
    super(options, drizzleLayer, database)
  }

  /**
   * Runs `fn` in `db.transaction()`: COMMIT if it resolves, ROLLBACK if it throws.
   * After the commit, relays of this process are woken at once.
   */
  transaction<
    Q extends PgQueryResultHKT,
    F extends Record<string, unknown>,
    S extends TablesRelationalConfig,
    R,
  >(
    db: PgDatabase<Q, F, S>,
    fn: (tx: PgTransaction<Q, F, S>, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R>
  transaction<
    Q extends MySqlQueryResultHKT,
    P extends PreparedQueryHKTBase,
    F extends Record<string, unknown>,
    S extends TablesRelationalConfig,
    R,
  >(
    db: MySqlDatabase<Q, P, F, S>,
    fn: (tx: MySqlTransaction<Q, P, F, S>, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R>
  transaction(db: DrizzleRoot, fn: DrizzleBody<M>): Promise<unknown> {
    return this.runTransaction(db, fn, (body) => db.transaction(body))
  }
}

/** What `transaction()` needs of a Drizzle db and its callback, whatever the database. */
// biome-ignore lint/suspicious/noExplicitAny: the overloads above carry the types
type DrizzleRoot = { transaction(body: (tx: any) => Promise<unknown>): Promise<any> }
// biome-ignore lint/suspicious/noExplicitAny: the overloads above carry the types
type DrizzleBody<M extends TopicMap> = (tx: any, topics: TopicProducers<M>) => Promise<any>

/** The outbox for `options.db`'s database; without `db`, for PostgreSQL. */
export function createDrizzleOutbox<M extends TopicMap>(
  options: DrizzleOutboxOptions<M> & { db: object },
): DrizzleOutbox<M, DrizzleConnection>
export function createDrizzleOutbox<M extends TopicMap>(options: DrizzleOutboxOptions<M>): DrizzleOutbox<M>
export function createDrizzleOutbox<M extends TopicMap>(options: DrizzleOutboxOptions<M>): DrizzleOutbox<M> {
  return new DrizzleOutbox(options)
}

export type { DrizzleRelayConnection }
