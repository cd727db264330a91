/**
 * What the TypeORM adapters of every database share: the transaction's query runner, the
 * `transaction()` helper and DataSource detection. Imports no driver.
 */
import type { DataSource, EntityManager, QueryRunner } from 'typeorm'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import { type SqlDatabase, wrongDatabase } from '../data-layer.ts'

export type TypeOrmIsolationLevel = 'READ UNCOMMITTED' | 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE'

/**
 * Throws unless `manager` looks like a TypeORM EntityManager; returns the `type` of its
 * DataSource, which the caller matches against its database.
 */
export function dataSourceTypeOf(manager: unknown): unknown {
  if (
    typeof manager !== 'object' ||
    manager === null ||
    typeof (manager as EntityManager).query !== 'function' ||
    typeof (manager as EntityManager).connection !== 'object'
  ) {
    throw invalidArgument(
      `expected the EntityManager of a TypeORM transaction (dataSource.transaction(async (manager) => ...)), got ${describe(manager)}`,
    )
  }
  return (manager as EntityManager).connection.options?.type
}

/**
 * The query runner of the manager's open transaction. A manager without one of its own
 * (dataSource.manager) runs every query on some pool connection in autocommit, where a message
 * would commit on its own; a released runner belongs to a transaction that already ended.
 */
export function activeQueryRunner(manager: EntityManager): QueryRunner {
  const runner = manager.queryRunner
  if (runner === undefined || runner.isReleased || !runner.isTransactionActive) {
    throw new KEntityError(
      ErrorCodes.NO_TRANSACTION,
      'outbox topics must be produced inside a transaction: use the manager passed to dataSource.transaction(async (manager) => ...) (or outbox.transaction(dataSource, fn)), not dataSource.manager; nothing was stored',
    )
  }
  return runner
}

/**
 * The body of every TypeORM adapter's `transaction()` helper: `run` in `target.transaction()`,
 * COMMIT if it resolves, ROLLBACK if it throws. Given the manager of an open transaction, TypeORM
 * makes it a savepoint inside it.
 */
export async function runTypeOrmTransaction<R>(
  target: DataSource | EntityManager,
  options: { isolationLevel?: TypeOrmIsolationLevel },
  run: (manager: EntityManager) => Promise<R>,
): Promise<R> {
  if (typeof target !== 'object' || target === null || typeof target.transaction !== 'function') {
    throw invalidArgument(
      `transaction() needs a TypeORM DataSource or EntityManager, got ${describe(target)}`,
    )
  }
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(`transaction() options must be an object, got ${describe(options)}`)
  }
  return options.isolationLevel === undefined
    ? target.transaction(run)
    : target.transaction(options.isolationLevel, run)
}

export function isDataSource(value: object): value is DataSource {
  return (
    'options' in value && 'driver' in value && typeof (value as DataSource).createQueryRunner === 'function'
  )
}

/** What ends the message of a session opened with no connection given and no DATABASE_URL. */
export const NO_CONNECTION =
  ': pass your DataSource, e.g. outbox.migrate(dataSource) or outbox.relay({ connection: dataSource })'

/** A DataSource or an EntityManager (which every manager of TypeORM is, transaction or not). */
export function isTypeOrmHandle(value: unknown): value is DataSource | EntityManager {
  if (typeof value !== 'object' || value === null) return false
  return isDataSource(value) || isEntityManager(value)
}

function isEntityManager(value: object): value is EntityManager {
  return (
    typeof (value as EntityManager).query === 'function' &&
    typeof (value as EntityManager).transaction === 'function' &&
    typeof (value as EntityManager).connection === 'object'
  )
}

/** The `type` of the DataSource behind a DataSource or an EntityManager. */
export function dataSourceType(handle: DataSource | EntityManager): unknown {
  const dataSource = isDataSource(handle) ? handle : handle.connection
  return dataSource?.options?.type
}

/** The database of a DataSource type: 'postgres', or 'mysql'/'mariadb' (both on mysql2). */
export function typeOrmDatabase(type: unknown): SqlDatabase | undefined {
  if (type === 'postgres') return 'postgres'
  if (type === 'mysql' || type === 'mariadb') return 'mysql'
  return undefined
}

/** Refuses a DataSource (or manager) of another database than the outbox's, saying what to use. */
export function assertTypeOrmDatabase(handle: DataSource | EntityManager, expected: SqlDatabase): void {
  const type = dataSourceType(handle)
  const found = typeOrmDatabase(type)
  if (found === expected) return
  const advice =
    found === undefined
      ? "k-entity's TypeORM adapter covers DataSource types 'postgres', 'mysql' and 'mariadb'"
      : "pass the DataSource as `db` to createTypeOrmOutbox ('k-entity/typeorm'), which detects the database"
  throw wrongDatabase(expected, `the DataSource is of type ${describe(type)}`, advice)
}
