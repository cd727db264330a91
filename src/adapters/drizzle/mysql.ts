import { entityKind, is, type SQL, type SQLChunk, sql, type TablesRelationalConfig } from 'drizzle-orm'
import {
  MySqlDatabase,
  type MySqlQueryResultHKT,
  MySqlTransaction,
  type PreparedQueryHKTBase,
} from 'drizzle-orm/mysql-core'
import { type AnyMySql2Connection, MySql2Session } from 'drizzle-orm/mysql2'
import type mysql from 'mysql2/promise'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import {
  MysqlOutbox,
  type MysqlOutboxOptions,
  type MysqlRelayOptions,
} from '../../dialects/mysql/mysql-outbox.ts'
import type { MysqlSession } from '../../dialects/mysql/session.ts'
import {
  assertTransactionStatus,
  noTransaction,
  TRANSACTION_PROBE,
} from '../../dialects/mysql/transaction-status.ts'
import { mysql2ClientOptions } from '../mysql2/client-options.ts'
import { type Mysql2Connection, type MysqlSessionPurpose, openMysql2Session } from '../mysql2/session.ts'

/**
 * What `in()` accepts: the `tx` of `db.transaction(async (tx) => ...)` (or of a nested
 * `tx.transaction()`, a savepoint). The `db` itself lacks `rollback()` and does not type-check.
 */
// biome-ignore lint/suspicious/noExplicitAny: any schema and relations of the app
export type DrizzleMysqlTransaction = MySqlTransaction<any, any, any, any>

/**
 * Where relays, migrations and admin calls connect: the app's Drizzle `db` or its mysql2 pool
 * (their settings open a new, dedicated connection), a `mysql://` URL, or mysql2 options.
 */
export type DrizzleMysqlConnection = Mysql2Connection | AnyMySql2Connection | { readonly $client: unknown }

/** Drizzle's entity kinds of `value`'s class chain (`is()` only answers for classes it is given). */
function kinds(value: unknown): string[] {
  const found: string[] = []
  let type: unknown = (value as { constructor?: unknown } | null)?.constructor
  while (typeof type === 'function') {
    if (Object.hasOwn(type, entityKind))
      found.push(String((type as unknown as Record<symbol, unknown>)[entityKind]))
    type = Object.getPrototypeOf(type)
  }
  return found
}

/** Refuses anything but a Drizzle MySQL database on mysql2, naming what to use instead. */
function assertMysql2Database(value: unknown, what: string): asserts value is MySqlDatabase<never, never> {
  if (is(value, MySqlDatabase)) {
    const session = (value as unknown as { session?: unknown }).session
    if (is(session, MySql2Session)) return
    throw invalidArgument(
      `this Drizzle db runs on ${kinds(session)[0] ?? 'an unknown driver'}; 'k-entity/drizzle/mysql' needs drizzle-orm/mysql2 (the relay needs a MySQL session of its own, with locks)`,
    )
  }
  const found = kinds(value)
  const advice = found.includes('PgDatabase')
    ? "this Drizzle db is PostgreSQL: use createDrizzleOutbox from 'k-entity/drizzle'"
    : found.length > 0
      ? `this Drizzle db is ${found[0]}; k-entity supports Drizzle on PostgreSQL ('k-entity/drizzle') and MySQL/MariaDB ('k-entity/drizzle/mysql')`
      : `got ${describe(value)}`
  throw invalidArgument(`expected ${what} of a MySQL database (drizzle-orm/mysql2); ${advice}`)
}

/**
 * Wraps a Drizzle transaction on MySQL or MariaDB. Drizzle keeps no transaction state (a
 * finished `tx` still runs queries, on a connection back in the pool), so the server is asked
 * before each write (TRANSACTION_PROBE).
 */
export function drizzleMysqlTransaction(tx: DrizzleMysqlTransaction): TransactionAdapter {
  assertMysql2Database(tx, 'the Drizzle transaction passed to db.transaction(async (tx) => ...)')
  if (!is(tx, MySqlTransaction)) {
    const refuse = () => {
      throw noTransaction(
        'this is the Drizzle db, not a transaction. Produce with the tx of db.transaction(async (tx) => ...) or use outbox.transaction(db, fn)',
      )
    }
    return { dialect: 'mysql', assertInTransaction: refuse, execute: async () => refuse() }
  }
  return {
    dialect: 'mysql',
    async assertInTransaction() {
      const [status] = (await tx.execute(TRANSACTION_PROBE)) as unknown as [mysql.ResultSetHeader | undefined]
      assertTransactionStatus(
        status?.serverStatus,
        'this Drizzle transaction already committed or rolled back, or MySQL ended it on its own (a deadlock, or a statement that commits implicitly such as DDL)',
      )
    },
    async execute(statement: SqlStatement) {
      await tx.execute(toDrizzleMysqlSql(statement))
    },
  }
}

/** The statement as a Drizzle `SQL` object: text between `?` stays raw, each `?` binds its value. */
function toDrizzleMysqlSql(statement: SqlStatement): SQL {
  const parts = statement.text.split('?')
  if (parts.length - 1 !== statement.values.length) {
    throw new Error(`statement has ${parts.length - 1} placeholders for ${statement.values.length} values`)
  }
  const chunks: SQLChunk[] = []
  parts.forEach((part, index) => {
    chunks.push(sql.raw(part))
    if (index < statement.values.length) chunks.push(sql.param(statement.values[index]))
  })
  return sql.join(chunks)
}

function openDrizzleSession(
  target: DrizzleMysqlConnection | undefined,
  purpose: MysqlSessionPurpose,
): Promise<MysqlSession> {
  try {
    return openMysql2Session(resolveTarget(target), purpose)
  } catch (error) {
    return Promise.reject(error)
  }
}

function resolveTarget(target: DrizzleMysqlConnection | undefined): Mysql2Connection | undefined {
  const isObject = typeof target === 'object' && target !== null
  if (isObject && '$client' in target) {
    assertMysql2Database(target, 'the Drizzle db')
    const options = mysql2ClientOptions(target.$client)
    if (options === undefined) {
      throw invalidArgument(
        `the Drizzle db's $client is not a mysql2 pool or connection (got ${describe(target.$client)}); pass a mysql:// URL or mysql2 connection options`,
      )
    }
    return options
  }
  // A pool is turned into its settings; a connection goes on as it is (migrate() may use it).
  if (isObject && typeof (target as { getConnection?: unknown }).getConnection === 'function') {
    return mysql2ClientOptions(target) ?? (target as Mysql2Connection)
  }
  return target as Mysql2Connection | undefined
}

/**
 * The Drizzle adapter on MySQL 8 / MariaDB 10.6+ (`drizzle-orm/mysql2`). Relays, migrations and
 * admin calls open their own mysql2 connection: pass `connection` (the Drizzle `db`, its pool,
 * a URL or options), or set `DATABASE_URL`.
 *
 * @example
 * const db = drizzle(mysql.createPool(url))
 * const outbox = createDrizzleMysqlOutbox({ topics: { orderCreated }, schema: 'shop', kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(db)
 * await outbox.transaction(db, async (tx, topics) => {
 *   await tx.insert(orders).values(order)
 *   await topics.orderCreated.produce(order)
 * })
 */
export class DrizzleMysqlOutbox<M extends TopicMap> extends MysqlOutbox<
  M,
  DrizzleMysqlTransaction,
  DrizzleMysqlConnection
> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, { transaction: drizzleMysqlTransaction, openSession: openDrizzleSession })
  }

  /**
   * Runs `fn` in `db.transaction()`: COMMIT if it resolves, ROLLBACK if it throws.
   * After the commit, relays of this process are woken at once.
   */
  async transaction<
    Q extends MySqlQueryResultHKT,
    P extends PreparedQueryHKTBase,
    F extends Record<string, unknown>,
    S extends TablesRelationalConfig,
    R,
  >(
    db: MySqlDatabase<Q, P, F, S>,
    fn: (tx: MySqlTransaction<Q, P, F, S>, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    if (is(db, MySqlTransaction)) {
      throw invalidArgument(
        'transaction() needs the Drizzle db, not a transaction; inside a transaction use outbox.in(tx)',
      )
    }
    assertMysql2Database(db, 'the Drizzle db')
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a callback, got ${describe(fn)}`)
    const result = await db.transaction((tx) => fn(tx, this.in(tx)))
    this.notifyCommitted()
    return result
  }
}

export function createDrizzleMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): DrizzleMysqlOutbox<M> {
  return new DrizzleMysqlOutbox(options)
}

export type DrizzleMysqlOutboxOptions<M extends TopicMap> = MysqlOutboxOptions<M>
export type DrizzleMysqlRelayOptions = MysqlRelayOptions<DrizzleMysqlConnection>
