import { is, type SQL, type SQLChunk, sql, type TablesRelationalConfig } from 'drizzle-orm'
import { PgDatabase, type PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { OutboxTable, SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { withArrayLiterals } from '../../dialects/postgres/parameters.ts'
import {
  type PostgresDriver,
  PostgresOutbox,
  type PostgresOutboxOptions,
  type PostgresRelayOptions,
} from '../../dialects/postgres/postgres-outbox.ts'
import {
  abortedTransaction,
  noTransaction,
  probedTransaction,
  transactionError,
} from '../../dialects/postgres/transaction.ts'
import { type DrizzleRelayConnection, openDrizzleSession } from './session.ts'

/**
 * What `in()` accepts: the `tx` of `db.transaction(async (tx) => ...)` (or of a nested
 * `tx.transaction()`), whatever the driver. The `db` itself lacks `rollback()` and does not
 * type-check.
 */
// biome-ignore lint/suspicious/noExplicitAny: any driver, schema and relations of the app
export type DrizzleTransaction = PgTransaction<any, any, any>

/**
 * Wraps a Drizzle PostgreSQL transaction. `is(tx, PgTransaction)` follows Drizzle's own
 * entity kinds, so it holds for every driver's transaction class and across duplicate copies
 * of drizzle-orm. Whether the transaction is still open: node-postgres reports it on the client
 * (free); for other drivers the database is asked before each write (`probedTransaction`).
 */
export function drizzleTransaction(tx: DrizzleTransaction, table: () => OutboxTable): TransactionAdapter {
  if (!is(tx, PgDatabase)) {
    throw invalidArgument(
      `expected the Drizzle transaction passed to db.transaction(async (tx) => ...) of a PostgreSQL database, got ${describe(tx)}`,
    )
  }
  if (!is(tx, PgTransaction)) {
    const refuse = () => {
      throw noTransaction(
        undefined,
        ': this is the Drizzle db, not a transaction. Produce with the tx of db.transaction(async (tx) => ...) or use outbox.transaction(db, fn)',
      )
    }
    return { dialect: 'postgres', assertInTransaction: refuse, execute: async () => refuse() }
  }
  const run = async (text: string, values: unknown[]) => {
    await tx.execute(toDrizzleSql({ text, values }))
  }
  const client = (tx._.session as { client?: { getTransactionStatus?: unknown } }).client
  const getStatus = client?.getTransactionStatus
  if (typeof getStatus !== 'function') return probedTransaction(table, run)
  return {
    dialect: 'postgres',
    assertInTransaction() {
      const status = getStatus.call(client)
      if (status === 'T') return
      if (status === 'E') throw abortedTransaction()
      throw noTransaction(undefined, ': this transaction already committed or rolled back')
    },
    async execute(statement: SqlStatement) {
      try {
        await run(statement.text, statement.values)
      } catch (error) {
        throw transactionError(error) ?? error
      }
    },
  }
}

/**
 * The statement as a Drizzle `SQL` object: text between placeholders stays raw, each `$n`
 * becomes a bound parameter (Drizzle renumbers them, repeating a value used twice).
 */
export function toDrizzleSql(statement: SqlStatement): SQL {
  const values = withArrayLiterals(statement.values)
  const chunks: SQLChunk[] = []
  let last = 0
  for (const match of statement.text.matchAll(/\$(\d+)/g)) {
    const index = Number(match[1]) - 1
    if (index < 0 || index >= values.length) {
      throw new Error(`statement uses ${match[0]} but has ${values.length} values`)
    }
    chunks.push(sql.raw(statement.text.slice(last, match.index)), sql.param(values[index]))
    last = match.index + match[0].length
  }
  chunks.push(sql.raw(statement.text.slice(last)))
  return sql.join(chunks)
}

/**
 * The Drizzle adapter (PostgreSQL: node-postgres and postgres.js drivers). Relays and
 * migrations open their own session: pass `connection` (the Drizzle `db`, its client, or a URL),
 * or set `DATABASE_URL`.
 *
 * @example
 * const db = drizzle(pool)
 * const outbox = createDrizzleOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(db)
 * await outbox.transaction(db, async (tx, topics) => {
 *   await tx.insert(orders).values(order)
 *   await topics.orderCreated.produce(order)
 * })
 */
export class DrizzleOutbox<M extends TopicMap> extends PostgresOutbox<
  M,
  DrizzleTransaction,
  DrizzleRelayConnection
> {
  constructor(options: PostgresOutboxOptions<M>) {
    // The driver needs the outbox table for its probe; it exists only once super() validated it.
    let table: OutboxTable | undefined
    const driver: PostgresDriver<DrizzleTransaction, DrizzleRelayConnection> = {
      transaction: (tx) => drizzleTransaction(tx, () => table as OutboxTable),
      openSession: openDrizzleSession,
    }
    super(options, driver)
    table = this.outbox.table
  }

  /**
   * Runs `fn` in `db.transaction()`: COMMIT if it resolves, ROLLBACK if it throws.
   * After the commit, relays of this process are woken at once.
   */
  async transaction<
    Q extends PgQueryResultHKT,
    F extends Record<string, unknown>,
    S extends TablesRelationalConfig,
    R,
  >(
    db: PgDatabase<Q, F, S>,
    fn: (tx: PgTransaction<Q, F, S>, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    if (!is(db, PgDatabase) || is(db, PgTransaction)) {
      throw invalidArgument(
        `transaction() needs the Drizzle db of a PostgreSQL database (not a transaction), got ${describe(db)}; inside a transaction use outbox.in(tx)`,
      )
    }
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a callback, got ${describe(fn)}`)
    const result = await db.transaction((tx) => fn(tx, this.in(tx)))
    this.notifyCommitted()
    return result
  }
}

export function createDrizzleOutbox<M extends TopicMap>(options: PostgresOutboxOptions<M>): DrizzleOutbox<M> {
  return new DrizzleOutbox(options)
}

export type {
  DrizzleRelayConnection,
  PostgresOutboxOptions as DrizzleOutboxOptions,
  PostgresRelayOptions as DrizzleRelayOptions,
}
