/**
 * What every multi-database data layer adapter (Kysely, Knex, ...) shares: it tells the
 * database from the handle it is given, composes the SQL outbox with that database's dialect,
 * its own transaction binding and the session opener of the driver underneath, and runs its
 * transaction helper the same way. An adapter supplies a `DataLayer`.
 */
import { describe, invalidArgument } from '../core/errors.ts'
import type { TopicMap } from '../core/outbox.ts'
import type { OutboxTable, TransactionAdapter } from '../core/seams.ts'
import type { MysqlSession } from '../dialects/mysql/session.ts'
import { mysqlSql } from '../dialects/mysql/sql-dialect.ts'
import type { PostgresOutboxOptions, PostgresRelayOptions } from '../dialects/postgres/postgres-outbox.ts'
import type { PgSession } from '../dialects/postgres/session.ts'
import { postgresSql } from '../dialects/postgres/sql-dialect.ts'
import type { SessionPurpose } from '../outbox/parts.ts'
import { SqlOutbox } from '../outbox/sql-outbox.ts'

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

  constructor(options: PostgresOutboxOptions<M>, layer: DataLayer<Tx>, forced?: SqlDatabase) {
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
  }

  /**
   * The transaction helper's frame: `handle` must be the layer's root instance on this outbox's
   * database and `fn` a function; `run` opens the transaction and calls `fn`; relays of this
   * process are woken after the commit.
   */
  protected async runTransaction<R>(handle: unknown, fn: unknown, run: () => Promise<R>): Promise<R> {
    const layer = this.#layer
    if (!layer.isHandle(handle)) {
      throw invalidArgument(
        `transaction() needs the ${layer.root}${layer.nests ? ' or one of its transactions' : ''}, got ${describe(handle)}`,
      )
    }
    if (!layer.nests && layer.isTransaction(handle)) {
      throw invalidArgument(
        `transaction() needs the ${layer.root} (not a transaction), got ${describe(handle)}; inside a transaction use outbox.in(trx)`,
      )
    }
    layer.assertDatabase(handle, this.database)
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a callback, got ${describe(fn)}`)
    const result = await run()
    this.notifyCommitted()
    return result
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
