/**
 * What the MikroORM adapters of every database share: the transaction context of an
 * EntityManager, statements run on it, and the `transaction()` helper. Imports no driver.
 */
import type { EntityManager, TransactionOptions } from '@mikro-orm/core'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import type { SqlStatement } from '../../core/seams.ts'
import { type SqlDatabase, wrongDatabase } from '../data-layer.ts'

/**
 * The slice of Kysely's transaction that MikroORM 7 keeps as the transaction context, whatever
 * the database. Kysely's PostgreSQL and MySQL drivers hand `sql` and `parameters` to their
 * driver (node-postgres, mysql2) unchanged, so the dialect's placeholders and Buffer values reach
 * the server exactly as the plain driver adapters send them.
 */
export interface KyselyTransaction {
  executeQuery(query: CompiledRawQuery): Promise<unknown>
  readonly isCommitted?: boolean
  readonly isRolledBack?: boolean
}

/** Kysely's `CompiledQuery.raw(sql, parameters)`, built here so the adapters need no kysely import. */
export interface CompiledRawQuery {
  sql: string
  parameters: readonly unknown[]
  query: { kind: 'RawNode'; sqlFragments: readonly string[]; parameters: readonly unknown[] }
  queryId: { queryId: string }
}

let queryCounter = 0

export function rawQuery(statement: SqlStatement): CompiledRawQuery {
  return {
    sql: statement.text,
    parameters: statement.values,
    query: { kind: 'RawNode', sqlFragments: [statement.text], parameters: [] },
    queryId: { queryId: `k-entity-${++queryCounter}` },
  }
}

/** Throws unless `em` looks like a MikroORM EntityManager (the platform is the caller's check). */
export function checkEntityManager(em: unknown): asserts em is EntityManager {
  if (
    typeof em !== 'object' ||
    em === null ||
    typeof (em as EntityManager).getTransactionContext !== 'function' ||
    typeof (em as EntityManager).getPlatform !== 'function'
  ) {
    throw invalidArgument(
      `expected the EntityManager of a MikroORM transaction (em.transactional(async (em) => ...)), got ${describe(em)}`,
    )
  }
}

/**
 * The open transaction of `em`. An em outside `em.transactional()` has none, even though a plain
 * `em.flush()` opens one of its own: that transaction exists only inside `flush()`. A context
 * kept past its commit or rollback (an em leaked out of the callback) is refused too.
 */
export function openTransaction(em: EntityManager): KyselyTransaction {
  const transaction = em.getTransactionContext<KyselyTransaction & Record<string, unknown>>()
  if (transaction === undefined || transaction.isCommitted === true || transaction.isRolledBack === true) {
    throw new KEntityError(
      ErrorCodes.NO_TRANSACTION,
      'outbox topics must be produced inside a transaction: use the em passed to em.transactional(async (em) => ...) (or outbox.transaction(em, fn)); a plain em.flush() opens its own transaction only for the flush; nothing was stored',
    )
  }
  return transaction
}

/**
 * The body of every MikroORM adapter's `transaction()` helper: `fn` in `em.transactional()`, which
 * flushes the forked EntityManager and commits if `fn` resolves, and rolls everything back if it
 * throws. Inside an open transaction MikroORM makes it a savepoint.
 */
export async function runTransactional<E extends EntityManager, P, R>(
  em: E,
  fn: (em: E, topics: P) => Promise<R>,
  options: TransactionOptions | undefined,
  producers: (em: E) => P,
): Promise<R> {
  if (typeof em !== 'object' || em === null || typeof em.transactional !== 'function') {
    throw invalidArgument(`transaction() needs a MikroORM EntityManager (orm.em), got ${describe(em)}`)
  }
  if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a function, got ${describe(fn)}`)
  return em.transactional((inner) => fn(inner as E, producers(inner as E)), options)
}

/** The EntityManager of a MikroORM instance or EntityManager given as a connection target, if it is one. */
export function entityManagerOf(target: object): EntityManager | undefined {
  const candidate = 'em' in target && typeof target.em === 'object' && target.em !== null ? target.em : target
  return typeof (candidate as EntityManager).getConnection === 'function' &&
    typeof (candidate as EntityManager).getPlatform === 'function'
    ? (candidate as EntityManager)
    : undefined
}

/**
 * Plain `driverOptions` are extra driver settings (TLS, timeouts) MikroORM gives its pool; a
 * ready-made Kysely instance or dialect says nothing about how to connect.
 */
export function plainDriverOptions(em: EntityManager): Record<string, unknown> {
  const driverOptions: unknown = em.config.get('driverOptions')
  return isPlainObject(driverOptions) ? driverOptions : {}
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype
}

/** What ends the message of a session opened with no connection given and no DATABASE_URL. */
export const NO_CONNECTION =
  ': pass your MikroORM instance, e.g. outbox.migrate(orm) or outbox.relay({ connection: orm })'

/**
 * The platform classes of MikroORM's SQL drivers, by name. The adapter imports no driver package
 * (an app has @mikro-orm/postgresql or @mikro-orm/mysql, rarely both), so `instanceof` is out of
 * reach; the names are MikroORM's published classes, and the base classes of @mikro-orm/sql also
 * cover drivers built on them (@mikro-orm/mariadb's platform extends MySqlPlatform).
 */
const PLATFORMS = new Map<unknown, SqlDatabase>([
  ['PostgreSqlPlatform', 'postgres'],
  ['BasePostgreSqlPlatform', 'postgres'],
  ['MySqlPlatform', 'mysql'],
  ['BaseMySqlPlatform', 'mysql'],
])

/** The class name of the platform of `em` (`PostgreSqlPlatform`, `MySqlPlatform`...). */
export function platformName(em: EntityManager): string {
  const platform: unknown = em.getPlatform()
  return (platform as object | null)?.constructor?.name ?? describe(platform)
}

/** The database of the platform of `em`, walking up its classes; undefined for another one. */
export function mikroOrmDatabase(em: EntityManager): SqlDatabase | undefined {
  for (
    let proto = Object.getPrototypeOf(em.getPlatform());
    proto !== null;
    proto = Object.getPrototypeOf(proto)
  ) {
    const database = PLATFORMS.get((proto as { constructor?: { name?: unknown } }).constructor?.name)
    if (database !== undefined) return database
  }
  return undefined
}

/** Refuses an EntityManager (or MikroORM instance) of another database than the outbox's. */
export function assertMikroOrmDatabase(em: EntityManager, expected: SqlDatabase): void {
  const found = mikroOrmDatabase(em)
  if (found === expected) return
  const advice =
    found === undefined
      ? "k-entity's MikroORM adapter covers @mikro-orm/postgresql and @mikro-orm/mysql (or @mikro-orm/mariadb)"
      : "pass the MikroORM instance (or orm.em) as `db` to createMikroOrmOutbox ('k-entity/mikro-orm'), which detects the database"
  throw wrongDatabase(expected, `the EntityManager uses ${platformName(em)}`, advice)
}
