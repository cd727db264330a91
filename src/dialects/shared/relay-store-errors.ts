import { type DatabaseFailure, databaseError } from '../../core/database-errors.ts'
import { ErrorCodes, internalError, isKEntityError, KEntityError } from '../../core/errors.ts'

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

/**
 * `complete()` found no open claim. `lost`: the claim ended with its session (the server ended
 * it, the network dropped it, the relay closed it) while its batch was in Kafka's hands, a
 * database condition the relay retries: the rows were never deleted, so they are claimed and sent
 * again. Otherwise no claim was ever opened: a bug in k-entity.
 */
export function noOpenClaim(method: string, lost: boolean): KEntityError {
  if (!lost) return internalError(`${method} without an open claim`)
  return new KEntityError(
    ErrorCodes.STORE_FAILED,
    `the relay's claim ended with its database session before ${method} (the session was closed or ended by the server); its messages stay in the outbox and are claimed and sent again`,
    { retryable: true },
  )
}
