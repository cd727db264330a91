import type postgres from 'postgres'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { OutboxTable, TransactionAdapter } from '../../core/seams.ts'
import {
  type PostgresDriver,
  PostgresOutbox,
  type PostgresOutboxOptions,
  type PostgresRelayOptions,
} from '../../dialects/postgres/postgres-outbox.ts'
import { noTransaction, probedTransaction } from '../../dialects/postgres/transaction.ts'
import {
  isPostgresJsTransaction,
  PostgresJsHeldScope,
  type PostgresJsTransaction,
  runStatement,
  settle,
} from './held-transaction.ts'
import { openPostgresJsSession, type PostgresJsConnection } from './session.ts'

/**
 * A postgres.js transaction is the `sql` passed to the callback of `sql.begin()` (or of
 * `tx.savepoint()`): only it has `savepoint()`, while the root `sql` and a reserved connection
 * have `begin()`/`release()` instead. That tells the handle kinds apart without a round trip;
 * whether its transaction is still open is checked by the database before each write
 * (`probedTransaction`), since postgres.js does not report it.
 */
export function postgresJsTransaction(
  tx: PostgresJsTransaction,
  table: () => OutboxTable,
): TransactionAdapter {
  if (typeof tx !== 'function' || typeof (tx as { unsafe?: unknown }).unsafe !== 'function') {
    throw invalidArgument(
      `expected the postgres.js transaction passed to sql.begin(async (tx) => ...), got ${describe(tx)}`,
    )
  }
  if (!isPostgresJsTransaction(tx)) {
    const refuse = () => {
      throw noTransaction(
        'this is the root postgres.js sql (or a reserved connection), not a transaction. Produce with the tx of sql.begin(async (tx) => ...) or use outbox.transaction(sql, fn)',
      )
    }
    return { dialect: 'postgres', assertInTransaction: refuse, execute: async () => refuse() }
  }
  return probedTransaction(table, (text, values) => runStatement(tx, text, values))
}

export interface PostgresJsOutboxOptions<M extends TopicMap> extends PostgresOutboxOptions<M> {
  /**
   * `transaction()` holds its messages until the app's next statement on `tx` or the COMMIT and
   * sends them just ahead of it, pipelined on the connection: messages produced last add no round
   * trip, and none is spent checking the transaction (default true). A write that fails then
   * fails that statement (PostgreSQL aborts the transaction) and `transaction()` rejects with the
   * write's error, nothing of the transaction committed; validation and serialization errors
   * still throw from `produce()`. Inside a `tx.savepoint()` callback, messages are written at
   * produce(). Set false to see write errors at `produce()`. `in(tx)` always writes at produce().
   */
  writeWithCommit?: boolean
}

/**
 * The postgres.js adapter.
 *
 * @example
 * const sql = postgres(process.env.DATABASE_URL)
 * const outbox = createPostgresJsOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(sql)
 * await outbox.transaction(sql, async (tx, topics) => {
 *   await tx`INSERT INTO orders ${tx(order)}`
 *   await topics.orderCreated.produce(order)
 * })
 */
export class PostgresJsOutbox<M extends TopicMap> extends PostgresOutbox<
  M,
  PostgresJsTransaction,
  PostgresJsConnection
> {
  readonly #writeWithCommit: boolean

  constructor(options: PostgresJsOutboxOptions<M>) {
    // The driver needs the outbox table for its probe; it exists only once super() validated it.
    let table: OutboxTable | undefined
    const driver: PostgresDriver<PostgresJsTransaction, PostgresJsConnection> = {
      transaction: (tx) => postgresJsTransaction(tx, () => table as OutboxTable),
      openSession: openPostgresJsSession,
    }
    super(options, driver)
    table = this.outbox.table
    if (options.writeWithCommit !== undefined && typeof options.writeWithCommit !== 'boolean') {
      throw invalidArgument(
        `'writeWithCommit' must be true or false, got ${describe(options.writeWithCommit)}`,
      )
    }
    this.#writeWithCommit = options.writeWithCommit ?? true
  }

  /**
   * Runs `fn` in `sql.begin()`: COMMIT if it resolves, ROLLBACK if it throws. Messages are sent
   * just ahead of the next statement on `tx`, or of the COMMIT, in the same flight (see
   * `writeWithCommit`). After the commit, relays of this process are woken at once.
   */
  async transaction<R>(
    // biome-ignore lint/suspicious/noExplicitAny: any custom type map of the app's postgres.js instance
    sql: postgres.Sql<any>,
    fn: (tx: PostgresJsTransaction, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    if (typeof sql !== 'function' || typeof (sql as { begin?: unknown }).begin !== 'function') {
      throw invalidArgument(
        `transaction() needs the root postgres.js sql (the one created by postgres(...)), got ${describe(sql)}`,
      )
    }
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a callback, got ${describe(fn)}`)
    if (!this.#writeWithCommit) {
      const result = (await sql.begin((tx) => fn(tx, this.in(tx)))) as R
      this.notifyCommitted()
      return result
    }
    let scope: PostgresJsHeldScope | undefined
    let result: R
    try {
      result = (await sql.begin(async (tx) => {
        scope = new PostgresJsHeldScope(tx)
        const value = await settle(fn(scope.handle(), this.producersOn(scope.adapter())))
        await scope.beforeCommit()
        return value
      })) as R
    } catch (error) {
      throw scope === undefined ? error : scope.explain(error)
    } finally {
      scope?.close()
    }
    await scope?.settled()
    this.notifyCommitted()
    return result
  }
}

export function createPostgresJsOutbox<M extends TopicMap>(
  options: PostgresJsOutboxOptions<M>,
): PostgresJsOutbox<M> {
  return new PostgresJsOutbox(options)
}

export type { PostgresJsConnection, PostgresJsTransaction, PostgresRelayOptions as PostgresJsRelayOptions }
