import type { Knex } from 'knex'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { withArrayLiterals } from '../../dialects/postgres/parameters.ts'
import {
  PostgresOutbox,
  type PostgresOutboxOptions,
  type PostgresRelayOptions,
} from '../../dialects/postgres/postgres-outbox.ts'
import { noTransaction, transactionError } from '../../dialects/postgres/transaction.ts'
import { openPgSession, type PgRelayConnection } from '../pg/session.ts'

/**
 * What `in()` accepts: the `trx` of `knex.transaction(async (trx) => ...)` (or of a nested
 * `trx.transaction()`). The `knex` instance itself lacks `commit`/`rollback`/`isCompleted` and
 * does not type-check.
 */
export type KnexTransaction = Knex.Transaction

type KnexClient = { dialect?: unknown; config?: { client?: unknown } }

/** Wraps a Knex transaction on PostgreSQL, checked to be a live transaction. */
export function knexTransaction(trx: KnexTransaction): TransactionAdapter {
  if (typeof trx !== 'function' || typeof trx.raw !== 'function' || typeof trx.client !== 'object') {
    throw invalidArgument(
      `expected the Knex transaction passed to knex.transaction(async (trx) => ...), got ${describe(trx)}`,
    )
  }
  const dialect = (trx.client as KnexClient).dialect
  if (dialect !== 'postgresql') {
    throw invalidArgument(
      `this outbox is for PostgreSQL but the Knex instance uses the ${String(dialect)} client; use the adapter of that database`,
    )
  }
  return {
    dialect: 'postgres',
    assertInTransaction() {
      if (trx.isTransaction !== true) {
        throw noTransaction(
          undefined,
          ': this is the knex instance, not a transaction. Produce with the trx of knex.transaction(async (trx) => ...) or use outbox.transaction(knex, fn)',
        )
      }
      if (trx.isCompleted()) {
        throw noTransaction(undefined, ': this transaction already committed or rolled back')
      }
    },
    async execute(statement: SqlStatement) {
      const { sql, bindings } = toKnexBindings(statement)
      try {
        await trx.raw(sql, bindings)
      } catch (error) {
        throw transactionError(error) ?? error
      }
    },
  }
}

/**
 * Knex's raw() binds `?` in order, not `$n`: each `$n` becomes a `?` with its value repeated
 * where it is used twice, and a literal `?` is escaped so Knex leaves it alone. Values reach
 * node-postgres unchanged (arrays as literals, see `withArrayLiterals`).
 */
export function toKnexBindings(statement: SqlStatement): { sql: string; bindings: Knex.RawBinding[] } {
  const values = withArrayLiterals(statement.values)
  const bindings: Knex.RawBinding[] = []
  const sql = statement.text.replaceAll('?', '\\?').replace(/\$(\d+)/g, (_, position: string) => {
    const index = Number(position) - 1
    if (index < 0 || index >= values.length) {
      throw new Error(`statement uses $${position} but has ${values.length} values`)
    }
    bindings.push(values[index] as Knex.RawBinding)
    return '?'
  })
  return { sql, bindings }
}

/**
 * The Knex adapter (the `pg` client). Relays and migrations open their own node-postgres
 * session: pass `connection` (URL, config or `pg.Pool`), or set `DATABASE_URL`.
 *
 * @example
 * const knex = Knex({ client: 'pg', connection: process.env.DATABASE_URL })
 * const outbox = createKnexOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(process.env.DATABASE_URL)
 * await outbox.transaction(knex, async (trx, topics) => {
 *   await trx('orders').insert(order)
 *   await topics.orderCreated.produce(order)
 * })
 */
export class KnexOutbox<M extends TopicMap> extends PostgresOutbox<M, KnexTransaction, PgRelayConnection> {
  constructor(options: PostgresOutboxOptions<M>) {
    super(options, { transaction: knexTransaction, openSession: openPgSession })
  }

  /**
   * Runs `fn` in `knex.transaction()`: COMMIT if it resolves, ROLLBACK if it throws.
   * After the commit, relays of this process are woken at once.
   */
  async transaction<R>(
    knex: Knex,
    fn: (trx: KnexTransaction, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    if (typeof knex !== 'function' || typeof knex.transaction !== 'function' || knex.isTransaction === true) {
      throw invalidArgument(
        `transaction() needs the knex instance (not a transaction), got ${describe(knex)}; inside a transaction use outbox.in(trx)`,
      )
    }
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a callback, got ${describe(fn)}`)
    const result = await knex.transaction((trx) => fn(trx, this.in(trx)))
    this.notifyCommitted()
    return result
  }
}

export function createKnexOutbox<M extends TopicMap>(options: PostgresOutboxOptions<M>): KnexOutbox<M> {
  return new KnexOutbox(options)
}

export type {
  PgRelayConnection as KnexRelayConnection,
  PostgresOutboxOptions as KnexOutboxOptions,
  PostgresRelayOptions as KnexRelayOptions,
}
