import { type DatabaseFailure, databaseError } from '../../core/database-errors.ts'
import { ErrorCodes, isKEntityError, KEntityError } from '../../core/errors.ts'

/**
 * A relay store's database error as the dialect's table names it, the driver's error as `cause`.
 * A missing table is retryable here, unlike for `produce()`: the relay waits for a migration that
 * may run later. Unknown errors and k-entity's own pass through (the relay retries the former and
 * stops on a `KE_INTERNAL`).
 */
export function relayStoreError(
  error: unknown,
  classify: (error: unknown) => DatabaseFailure | undefined,
  table: string,
  how = 'outbox.migrate()',
): unknown {
  if (isKEntityError(error)) return error
  const failure = classify(error)
  if (failure === undefined) return error
  if (failure.code === ErrorCodes.NOT_MIGRATED) {
    return new KEntityError(
      ErrorCodes.NOT_MIGRATED,
      `the outbox table ${table} does not exist; run ${how} (or apply outbox.migrationSql()) first`,
      { cause: error, retryable: true },
    )
  }
  return databaseError(failure, error)
}
