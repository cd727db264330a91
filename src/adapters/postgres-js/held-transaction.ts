import type postgres from 'postgres'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { classifyFailure } from '../../dialects/postgres/errors.ts'
import { withArrayLiterals } from '../../dialects/postgres/parameters.ts'
import {
  abortedTransaction,
  IN_FAILED_SQL_TRANSACTION,
  sqlState,
} from '../../dialects/postgres/transaction.ts'
import { transactionEnded } from '../../dialects/shared/transaction-errors.ts'
import { explainMissingTable } from '../../outbox/not-migrated.ts'

/** What `in()` accepts: the `sql` that `sql.begin()` or `tx.savepoint()` passes to its callback. */
// biome-ignore lint/suspicious/noExplicitAny: any custom type map of the app's postgres.js instance
export type PostgresJsTransaction = postgres.TransactionSql<any>
type Tx = PostgresJsTransaction

/** A postgres.js transaction `sql` (of `sql.begin()` or `savepoint()`), told by its shape. */
export function isPostgresJsTransaction(value: unknown): value is Tx {
  const fields = value as { unsafe?: unknown; savepoint?: unknown }
  return (
    typeof value === 'function' &&
    typeof fields.unsafe === 'function' &&
    typeof fields.savepoint === 'function'
  )
}

/** One of the outbox's statements on `sql`, as a prepared statement (bytes bound as binary). */
export function runStatement(
  sql: Tx,
  text: string,
  values: readonly unknown[],
): postgres.PendingQuery<postgres.Row[]> {
  return sql.unsafe(text, withArrayLiterals(values) as postgres.ParameterOrJSON<never>[], { prepare: true })
}

/** What postgres.js does with a callback's result: an array of queries runs as one. */
export function settle<R>(result: R | Promise<R>): Promise<R> {
  return Array.isArray(result) ? (Promise.all(result) as Promise<R>) : Promise.resolve(result)
}

/**
 * The outbox writes of one `transaction(sql, fn)` on postgres.js, held until the app's next
 * statement or the COMMIT and sent just ahead of it, in the same flight: postgres.js pipelines
 * the queries of a transaction on its connection, so messages produced last add no round trip,
 * and no probe is needed, since this scope owns the transaction and knows when it ends.
 *
 * Written ahead of every later statement, as if at produce(), a message stays inside any
 * savepoint the app opened or rolled back with SQL of its own (`tx\`ROLLBACK TO ...\``). While
 * a `tx.savepoint()` callback runs, messages are written at produce(), through that savepoint's
 * `sql`: postgres.js sends the ROLLBACK TO of a failed callback itself, past any handle.
 *
 * A write that fails fails the transaction, as any failed statement of a `sql.begin()` does in
 * postgres.js: one sent ahead of an app's statement is awaited before the COMMIT, which is then
 * not sent; one sent with the COMMIT aborts the transaction, so that COMMIT rolls back, and
 * `settled()` rejects with the write's error. The outbox's statements bind only strings,
 * Buffers, numbers and nulls, a fixed number of them, which postgres.js serialises without
 * failing, so a write cannot be dropped before it reaches the server while the COMMIT behind it
 * goes on.
 */
export class PostgresJsHeldScope {
  readonly #tx: Tx
  #held: SqlStatement[] = []
  /** Writes sent ahead of the app's statements, then those sent with the COMMIT. */
  #sent: Promise<unknown>[] = []
  #failure: unknown
  /** The `sql` of each `savepoint()` callback running, innermost last. */
  #savepoints: Tx[] = []
  #aborted = false
  #ended = false

  constructor(tx: Tx) {
    this.#tx = tx
  }

  /** The handle for the app's callback: its statements send the held writes ahead of them. */
  handle(): Tx {
    return this.#watched(this.#tx)
  }

  /**
   * `target` with every statement made through it sending the held writes first and watched
   * for the transaction's state; `savepoint()` hands its callback a watched handle too.
   */
  #watched(target: Tx): Tx {
    const statement = (query: unknown) => {
      this.#watch(query)
      return query
    }
    const savepoint = (...args: unknown[]) => this.#savepoint(target, args)
    const flush = () => this.#flush()
    return new Proxy(target, {
      apply(fn, self, args) {
        // A tagged template is a statement; `tx(value)` builds a helper for one.
        if (!Array.isArray(args[0]) || !('raw' in args[0])) return Reflect.apply(fn, self, args)
        flush()
        return statement(Reflect.apply(fn, self, args))
      },
      get(fn, property) {
        const value = Reflect.get(fn, property, fn)
        if (property === 'savepoint') return savepoint
        if ((property === 'unsafe' || property === 'file') && typeof value === 'function') {
          return (...args: unknown[]) => {
            flush()
            return statement(Reflect.apply(value, fn, args))
          }
        }
        return value
      },
    })
  }

  /**
   * Follows the transaction's state through the app's statements, so that a produce() after a
   * failed one is refused at once, as when written there: a statement that fails on the server
   * aborts the transaction, one that succeeds (a ROLLBACK TO among them) shows it is usable.
   * postgres.js settles a query through its `resolve` and `reject`; where they are not found,
   * the server's own refusal of the held write still fails the transaction.
   */
  #watch(query: unknown): void {
    const settles = query as { resolve?: unknown; reject?: unknown } | null
    if (typeof settles?.resolve !== 'function' || typeof settles.reject !== 'function') return
    const resolve = settles.resolve as (value: unknown) => unknown
    const reject = settles.reject as (error: unknown) => unknown
    settles.resolve = (value: unknown) => {
      this.#aborted = false
      return resolve(value)
    }
    settles.reject = (error: unknown) => {
      if (sqlState(error) !== undefined) this.#aborted = true
      return reject(error)
    }
  }

  /** What the callback's topics write through. */
  adapter(): TransactionAdapter {
    return {
      dialect: 'postgres',
      assertInTransaction: () => this.#assertOpen(),
      execute: async (statement) => {
        this.#assertOpen()
        if (this.#failure !== undefined) throw this.explain(this.#failure)
        if (this.#aborted) throw abortedTransaction()
        const savepoint = this.#savepoints.at(-1)
        if (savepoint === undefined) {
          this.#held.push(statement)
          return
        }
        try {
          await this.#run(statement, savepoint)
        } catch (error) {
          throw sqlState(error) === IN_FAILED_SQL_TRANSACTION ? abortedTransaction(error) : error
        }
      },
    }
  }

  /**
   * The callback resolved: rejects if a write sent earlier failed (it is usually settled, being
   * ahead of the app's statements); else the held writes go now, and postgres.js's COMMIT right
   * behind them.
   */
  async beforeCommit(): Promise<void> {
    this.#ended = true
    await Promise.all(this.#sent)
    if (this.#failure !== undefined) throw this.#failure
    this.#sent = []
    this.#flush()
  }

  /** The transaction settled: nothing produced after this may be stored. */
  close(): void {
    this.#ended = true
    this.#held = []
  }

  /**
   * After the COMMIT: rejects with the error of a write sent with it (the COMMIT then rolled back).
   * A missing outbox table is `KE_NOT_MIGRATED`; other errors stay the driver's own, for the
   * app's retry logic.
   */
  async settled(): Promise<void> {
    await Promise.all(this.#sent)
    if (this.#failure !== undefined) throw this.explain(this.#failure)
  }

  /** The transaction's error, or the held write's that caused it (postgres.js reports 25P02). */
  explain(error: unknown): unknown {
    const failure = this.#failure
    const caused =
      failure !== undefined && (error === failure || sqlState(error) === IN_FAILED_SQL_TRANSACTION)
    return explainMissingTable(caused ? failure : error, classifyFailure, undefined)
  }

  #assertOpen(): void {
    if (this.#ended) throw transactionEnded()
  }

  #flush(): void {
    const held = this.#held
    if (held.length === 0) return
    this.#held = []
    for (const statement of held) {
      // Executed now, so it is queued on the connection ahead of the statement that flushed it.
      const sent = this.#run(statement).then(
        () => undefined,
        (error: unknown) => {
          this.#failure ??= error
        },
      )
      this.#sent.push(sent)
    }
  }

  #run(statement: SqlStatement, sql = this.#tx): Promise<unknown> {
    return runStatement(sql, statement.text, statement.values).execute()
  }

  /**
   * `target.savepoint([name,] fn)`: writes go at produce() while `fn` runs inside the savepoint.
   * When `fn` fails, postgres.js rolls back to the savepoint, which leaves the transaction as it
   * was before it.
   */
  #savepoint(target: Tx, args: unknown[]): unknown {
    this.#flush()
    const last = args.length - 1
    const fn = args[last]
    if (typeof fn !== 'function') return Reflect.apply(target.savepoint, target, args)
    const aborted = this.#aborted
    const inside = async (sql: Tx) => {
      this.#savepoints.push(sql)
      try {
        return await settle(fn(this.#watched(sql)))
      } finally {
        this.#savepoints.splice(this.#savepoints.lastIndexOf(sql), 1)
      }
    }
    const done = Reflect.apply(target.savepoint, target, [...args.slice(0, last), inside]) as Promise<unknown>
    return done.catch((error: unknown) => {
      this.#aborted = aborted
      throw error
    })
  }
}
