import type { Knex } from 'knex'
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
import { connectionOptions } from '../mysql2/client-options.ts'
import { type Mysql2Connection, type MysqlSessionPurpose, openMysql2Session } from '../mysql2/session.ts'

/**
 * What `in()` accepts: the `trx` of `knex.transaction(async (trx) => ...)` (or of a nested
 * `trx.transaction()`, a savepoint). The `knex` instance itself lacks `commit`/`rollback`/
 * `isCompleted` and does not type-check.
 */
export type KnexMysqlTransaction = Knex.Transaction

/**
 * Where relays, migrations and admin calls connect: the app's `knex` instance (its connection
 * settings open a new, dedicated connection), a `mysql://` URL, or mysql2 connection options.
 */
export type KnexMysqlConnection = Knex | Mysql2Connection

type KnexClient = { dialect?: unknown; config?: { connection?: unknown } }

function isKnex(value: unknown): value is Knex {
  return (
    typeof value === 'function' &&
    typeof (value as Knex).raw === 'function' &&
    typeof (value as Knex).client === 'object' &&
    (value as Knex).client !== null
  )
}

/** Refuses a Knex instance configured for another database, naming the adapter it needs. */
function assertMysqlClient(knex: Knex): void {
  const dialect = (knex.client as KnexClient).dialect
  if (dialect === 'mysql') return
  const advice =
    dialect === 'postgresql' || dialect === 'cockroachdb'
      ? "use createKnexOutbox from 'k-entity/knex'"
      : "k-entity supports Knex on PostgreSQL ('k-entity/knex') and MySQL/MariaDB ('k-entity/knex/mysql')"
  throw invalidArgument(
    `this outbox is for MySQL/MariaDB but the Knex instance uses the ${String(dialect)} client; ${advice}`,
  )
}

/**
 * Wraps a Knex transaction on MySQL or MariaDB. Knex knows whether the trx was committed or
 * rolled back; only the server knows whether it ended the transaction on its own (a deadlock,
 * or DDL committing implicitly), so each write is preceded by TRANSACTION_PROBE.
 */
export function knexMysqlTransaction(trx: KnexMysqlTransaction): TransactionAdapter {
  if (!isKnex(trx)) {
    throw invalidArgument(
      `expected the Knex transaction passed to knex.transaction(async (trx) => ...), got ${describe(trx)}`,
    )
  }
  assertMysqlClient(trx)
  return {
    dialect: 'mysql',
    async assertInTransaction() {
      if (trx.isTransaction !== true) {
        throw noTransaction(
          'this is the knex instance, not a transaction. Produce with the trx of knex.transaction(async (trx) => ...) or use outbox.transaction(knex, fn)',
        )
      }
      if (trx.isCompleted()) throw noTransaction('this Knex transaction already committed or rolled back')
      const [status] = (await trx.raw(TRANSACTION_PROBE)) as [mysql.ResultSetHeader | undefined]
      assertTransactionStatus(
        status?.serverStatus,
        'MySQL ended the transaction of this trx on its own (a deadlock, or a statement that commits implicitly such as DDL)',
      )
    },
    async execute(statement: SqlStatement) {
      await trx.raw(statement.text, checkedBindings(statement))
    },
  }
}

/**
 * Knex's raw() reads every `?` as a value and `??` as an identifier. The MySQL dialect's `?` are
 * all placeholders and it never writes `??`, so the text passes as it is; checked here, because
 * a miscount would bind values to the wrong columns.
 */
function checkedBindings(statement: SqlStatement): Knex.RawBinding[] {
  const placeholders = statement.text.split('?').length - 1
  if (
    statement.text.includes('??') ||
    statement.text.includes('\\?') ||
    placeholders !== statement.values.length
  ) {
    throw new Error(
      `statement has ${placeholders} placeholders for ${statement.values.length} values, or a ?? / \\? Knex would rewrite`,
    )
  }
  return statement.values as Knex.RawBinding[]
}

/**
 * A Knex instance's own connection settings (a URL, options, or a function returning either),
 * without what shapes the app's results (Knex apps often set `typeCast`) or is Knex's own
 * (`expirationChecker`).
 */
async function knexConnectionSettings(knex: Knex): Promise<Mysql2Connection> {
  assertMysqlClient(knex)
  const configured = (knex.client as KnexClient).config?.connection
  const settings = typeof configured === 'function' ? await configured() : configured
  if (typeof settings === 'string') return settings
  if (typeof settings === 'object' && settings !== null) {
    return connectionOptions(settings as Record<string, unknown>)
  }
  throw invalidArgument(
    `the Knex instance has no connection settings to open the outbox's own connection with (got ${describe(settings)}); pass a mysql:// URL or mysql2 connection options instead`,
  )
}

function openKnexSession(
  target: KnexMysqlConnection | undefined,
  purpose: MysqlSessionPurpose,
): Promise<MysqlSession> {
  if (isKnex(target))
    return knexConnectionSettings(target).then((settings) => openMysql2Session(settings, purpose))
  return openMysql2Session(target, purpose)
}

/**
 * The Knex adapter on MySQL 8 / MariaDB 10.6+ (client `mysql2`). Relays, migrations and admin
 * calls open their own mysql2 connection: pass `connection` (the knex instance, a URL or
 * options), or set `DATABASE_URL`.
 *
 * @example
 * const knex = Knex({ client: 'mysql2', connection: 'mysql://app@127.0.0.1:3306/shop' })
 * const outbox = createKnexMysqlOutbox({ topics: { orderCreated }, schema: 'shop', kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(knex)
 * await outbox.transaction(knex, async (trx, topics) => {
 *   await trx('orders').insert(order)
 *   await topics.orderCreated.produce(order)
 * })
 */
export class KnexMysqlOutbox<M extends TopicMap> extends MysqlOutbox<
  M,
  KnexMysqlTransaction,
  KnexMysqlConnection
> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, { transaction: knexMysqlTransaction, openSession: openKnexSession })
  }

  /**
   * Runs `fn` in `knex.transaction()`: COMMIT if it resolves, ROLLBACK if it throws.
   * After the commit, relays of this process are woken at once.
   */
  async transaction<R>(
    knex: Knex,
    fn: (trx: KnexMysqlTransaction, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    if (!isKnex(knex) || typeof knex.transaction !== 'function' || knex.isTransaction === true) {
      throw invalidArgument(
        `transaction() needs the knex instance (not a transaction), got ${describe(knex)}; inside a transaction use outbox.in(trx)`,
      )
    }
    assertMysqlClient(knex)
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a callback, got ${describe(fn)}`)
    const result = await knex.transaction((trx) => fn(trx, this.in(trx)))
    this.notifyCommitted()
    return result
  }
}

export function createKnexMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): KnexMysqlOutbox<M> {
  return new KnexMysqlOutbox(options)
}

export type KnexMysqlOutboxOptions<M extends TopicMap> = MysqlOutboxOptions<M>
export type KnexMysqlRelayOptions = MysqlRelayOptions<KnexMysqlConnection>
