/**
 * What every multi-database data layer adapter (Kysely, Knex, ...) shares: it tells the
 * database from the handle it is given, composes the SQL outbox with that database's dialect,
 * its own transaction binding and the session opener of the driver underneath, and runs its
 * transaction helper the same way. An adapter supplies a `DataLayer`.
 */
import { describe, invalidArgument } from '../core/errors.ts'
import type { TopicMap, TopicProducers } from '../core/outbox.ts'
import type { OutboxTable, TransactionAdapter } from '../core/seams.ts'
import type { MysqlSession } from '../dialects/mysql/session.ts'
import { mysqlSql } from '../dialects/mysql/sql-dialect.ts'
import type { PostgresOutboxOptions, PostgresRelayOptions } from '../dialects/postgres/postgres-outbox.ts'
import type { PgSession } from '../dialects/postgres/session.ts'
import { postgresSql } from '../dialects/postgres/sql-dialect.ts'
import type { SessionPurpose } from '../outbox/parts.ts'
import { SqlOutbox } from '../outbox/sql-outbox.ts'
import { HeldTransactionScope, holdingOnLayer, holdWritesOption } from './pg/held-scope.ts'
import { PostgresJsHeldScope, type PostgresJsTransaction } from './postgres-js/held-transaction.ts'

/** The SQL databases a data layer adapter may speak. */
export type SqlDatabase = 'postgres' | 'mysql'

export const DATABASE_NAMES: Record<SqlDatabase, string> = { postgres: 'PostgreSQL', mysql: 'MySQL/MariaDB' }

type LayerSession = Promise<PgSession | MysqlSession>

export interface DataLayer<Tx> {
  /** How messages name the layer's root handle ('Kysely instance', 'knex instance'). */
  readonly root: string
  /** The layer's root instance or one of its transactions. */
  isHandle(value: unknown): boolean
  isTransaction(handle: unknown): boolean
  /**
   * The transaction helper also takes one of the layer's transactions, which the layer runs as a
   * savepoint inside it: the ORMs (TypeORM, MikroORM, Prisma) always did, and apps nest that way.
   * `db` must still be the root handle.
   */
  readonly nests?: boolean
  /** The database of a handle, undefined for one the adapter does not support. */
  databaseOf(handle: unknown): SqlDatabase | undefined
  /** Refuses a handle of another database than `expected`, naming the adapter to use. */
  assertDatabase(handle: unknown, expected: SqlDatabase): void
  /** The transaction binding on `database`; `table` is the outbox table (for probes). */
  binding(tx: Tx, database: SqlDatabase, table: () => OutboxTable): TransactionAdapter
  /**
   * The node-postgres client a PostgreSQL transaction runs on, where the layer lets it be
   * reached: the transaction helper then holds the outbox writes until the layer's COMMIT, which
   * carries them in its round trip. Absent, or not a plain node-postgres client (pipeline mode,
   * native, postgres.js, PGlite), writes go at produce().
   */
  pgClient?(tx: Tx): unknown
  /**
   * Where the layer runs PostgreSQL on postgres.js: makes the statements the layer sends through
   * `tx` go through `route(client)` instead of `client`, the postgres.js transaction `sql` under
   * it, and says whether it could. The transaction helper then holds the outbox writes until the
   * layer's next statement or its COMMIT (see `PostgresJsHeldScope`).
   */
  routePostgresJs?(tx: Tx, route: (client: PostgresJsTransaction) => PostgresJsTransaction): boolean
  /** The session opener on each database. */
  openSession(database: SqlDatabase, target: unknown, purpose: SessionPurpose): LayerSession
}

/** The database of an outbox: the one of `options.db`, else `forced`, else PostgreSQL. */
function databaseOf<Tx>(
  layer: DataLayer<Tx>,
  options: unknown,
  forced: SqlDatabase | undefined,
): SqlDatabase {
  const db = typeof options === 'object' && options !== null ? (options as { db?: unknown }).db : undefined
  if (db === undefined) return forced ?? 'postgres'
  if (!layer.isHandle(db) || layer.isTransaction(db)) {
    throw invalidArgument(`'db' must be the app's ${layer.root}, got ${describe(db)}`)
  }
  const detected = layer.databaseOf(db)
  layer.assertDatabase(db, forced ?? detected ?? 'postgres')
  return forced ?? (detected as SqlDatabase)
}

export interface DataLayerOutboxOptions<M extends TopicMap> extends PostgresOutboxOptions<M> {
  /**
   * On PostgreSQL through node-postgres, `transaction()` holds its messages until the client's
   * next query (sent just ahead of it) or the data layer's COMMIT (sent in the same round trip),
   * through a named prepared statement of the connection, instead of one INSERT round trip per
   * produce() (default true). Through postgres.js (Drizzle), it holds them until the layer's next
   * statement or its COMMIT and sends them just ahead of it, pipelined; inside a nested
   * transaction (a savepoint) it writes at produce(). A write that fails then rejects that query
   * or the COMMIT instead of `produce()`, and the transaction is rolled back; validation and
   * serialization errors still throw from `produce()`. `in(tx)` writes at produce() unless given
   * `{ holdWrites: true }` (node-postgres only).
   *
   * Set false behind a transaction-mode pooler that does not keep prepared statements per client
   * (PgBouncer before 1.21, or with `max_prepared_statements = 0`), or to see write errors at
   * `produce()`.
   */
  writeWithCommit?: boolean
}

/** Options of `in(tx, options)`. */
export interface DataLayerInOptions {
  /**
   * On PostgreSQL through node-postgres: hold the messages until the transaction's next query or
   * its COMMIT, sent in that COMMIT's round trip, instead of writing each at `produce()` (default
   * false: one round trip per produce(), and a failing write rejects `produce()` itself). A
   * failing write then rejects that query or the COMMIT, and the transaction is rolled back. The
   * COMMIT must go through the data layer (it sends it through the client's `query`); a COMMIT
   * sent past it is refused, the transaction rolled back and nothing of it committed. Needs
   * `writeWithCommit` (the default); on other drivers writes go at produce() anyway.
   */
  holdWrites?: boolean
}

/**
 * The SQL outbox on the database of the data layer's handle (`db` in the options), or
 * `forced` (the `/mysql` subpaths), or PostgreSQL. Relay options are PostgreSQL's, the widest:
 * what the database cannot honour is refused by its capability flags.
 */
export class DataLayerOutbox<M extends TopicMap, Tx, Target> extends SqlOutbox<
  M,
  Tx,
  Target,
  LayerSession,
  PostgresRelayOptions<Target>
> {
  /** The database this outbox speaks. */
  readonly database: SqlDatabase
  readonly #layer: DataLayer<Tx>
  readonly #writeWithCommit: boolean

  constructor(options: DataLayerOutboxOptions<M>, layer: DataLayer<Tx>, forced?: SqlDatabase) {
    const database = databaseOf(layer, options, forced)
    // The table exists once super() validated the options; bindings read it only later.
    let table: OutboxTable | undefined
    super(options, {
      dialect: database === 'postgres' ? postgresSql() : mysqlSql,
      binding: (tx) => layer.binding(tx, database, () => table as OutboxTable),
      sessions: (target, purpose) => () => layer.openSession(database, target, purpose),
    })
    table = this.outbox.table
    this.database = database
    this.#layer = layer
    const { writeWithCommit } = options
    if (writeWithCommit !== undefined && typeof writeWithCommit !== 'boolean') {
      throw invalidArgument(`'writeWithCommit' must be true or false, got ${describe(writeWithCommit)}`)
    }
    this.#writeWithCommit = writeWithCommit ?? true
  }

  /**
   * The transaction helper's frame: `handle` must be the layer's root instance on this outbox's
   * database and `fn` a function; `run` opens the transaction and calls `body` in it, which calls
   * `fn` with the transaction's topics; relays of this process are woken after the commit.
   */
  protected async runTransaction<R>(
    handle: unknown,
    fn: unknown,
    run: (body: (tx: Tx) => Promise<R>) => Promise<R>,
  ): Promise<R> {
    const layer = this.#layer
    if (!layer.isHandle(handle)) {
      throw invalidArgument(
        `transaction() needs the ${layer.root}${layer.nests ? ' or one of its transactions' : ''}, got ${describe(handle)}`,
      )
    }
    const nested = layer.isTransaction(handle)
    if (!layer.nests && nested) {
      throw invalidArgument(
        `transaction() needs the ${layer.root} (not a transaction), got ${describe(handle)}; inside a transaction use outbox.in(trx)`,
      )
    }
    layer.assertDatabase(handle, this.database)
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a callback, got ${describe(fn)}`)
    const body = fn as (tx: Tx, topics: TopicProducers<M>) => Promise<R>
    // A savepoint's RELEASE is no COMMIT: a write failing ahead of it would fail only the
    // savepoint, which the app may catch, and the outer COMMIT would then roll back silently.
    const scope = this.#holds() && !nested ? new HeldTransactionScope() : undefined
    let routed: PostgresJsHeldScope | undefined
    let result: R
    try {
      result = await run(async (tx) => {
        if (scope === undefined) return body(tx, this.in(tx))
        routed = this.#routedScope(tx)
        if (routed !== undefined) {
          const value = await body(tx, this.producersOn(routed.adapter()))
          await routed.beforeCommit()
          return value
        }
        const adapter = scope.open(await layer.pgClient?.(tx), this.#binding(tx))
        const value = await body(tx, this.producersOn(adapter))
        await scope.beforeCommit()
        return value
      })
    } catch (error) {
      throw routed?.explain(error) ?? (scope === undefined ? error : scope.explain(error))
    } finally {
      routed?.close()
      scope?.close()
    }
    await routed?.settled()
    this.notifyCommitted()
    return result
  }

  /** The held writes of a transaction on postgres.js, if the layer routes its statements. */
  #routedScope(tx: Tx): PostgresJsHeldScope | undefined {
    let scope: PostgresJsHeldScope | undefined
    const routed = this.#layer.routePostgresJs?.(tx, (client) => {
      scope = new PostgresJsHeldScope(client)
      return scope.handle()
    })
    return routed === true ? scope : undefined
  }

  /**
   * Typed producers bound to the app's open transaction `tx`. Each `produce()` writes its
   * messages in it at once; `{ holdWrites: true }` holds them for the transaction's next query or
   * its COMMIT instead (see `DataLayerInOptions`).
   */
  override in(tx: Tx, options?: DataLayerInOptions): TopicProducers<M> {
    if (!holdWritesOption(options, this.#writeWithCommit, 'tx') || !this.#holds()) return super.in(tx)
    const layer = this.#layer
    return this.producersOn(
      holdingOnLayer(
        this.#binding(tx),
        () => layer.pgClient?.(tx),
        (state) => state.wake.add(this.#wake),
      ),
    )
  }

  /** One function per outbox, so a transaction's held writes wake its relays once. */
  readonly #wake = () => this.notifyCommitted()

  #holds(): boolean {
    return this.#writeWithCommit && this.database === 'postgres' && this.#layer.pgClient !== undefined
  }

  #binding(tx: Tx): TransactionAdapter {
    return this.#layer.binding(tx, this.database, () => this.outbox.table)
  }
}

/** A handle of another database than the outbox's, with the advice of the layer. */
export function wrongDatabase(
  expected: SqlDatabase,
  found: string,
  advice: string,
): ReturnType<typeof invalidArgument> {
  return invalidArgument(`this outbox is for ${DATABASE_NAMES[expected]} but ${found}; ${advice}`)
}
