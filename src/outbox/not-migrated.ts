import { type DatabaseFailure, databaseError } from '../core/database-errors.ts'
import type { DeadLetters } from '../core/dead-letters.ts'
import { ErrorCodes, isKEntityError, notMigrated } from '../core/errors.ts'

export type ClassifyFailure = (error: unknown) => DatabaseFailure | undefined

/**
 * A driver error the dialect's table knows as a `KEntityError` with its code and `retryable`
 * (the driver's error as `cause`): `KE_NOT_MIGRATED` naming `table` (as the dialect quotes it) and
 * saying `how` to migrate, or the condition's code. Unknown errors, and errors k-entity already
 * classified, pass through unchanged.
 */
export function explainDatabaseError(
  error: unknown,
  classify: ClassifyFailure | undefined,
  table: string | undefined,
  how = 'outbox.migrate(connection)',
): unknown {
  if (isKEntityError(error)) return error
  const failure = classify?.(error)
  if (failure === undefined) return error
  if (failure.code === ErrorCodes.NOT_MIGRATED) return notMigrated(table, error, { how })
  return databaseError(failure, error)
}

/**
 * `KE_NOT_MIGRATED` for a driver error saying the outbox tables are missing; any other error
 * unchanged (an error of the app's own transaction stays the driver's, see `Outbox`).
 */
export function explainMissingTable(
  error: unknown,
  classify: ClassifyFailure | undefined,
  table: string | undefined,
  how?: string,
): unknown {
  const missingTable: ClassifyFailure = (cause) => {
    const failure = classify?.(cause)
    return failure?.code === ErrorCodes.NOT_MIGRATED ? failure : undefined
  }
  return explainDatabaseError(error, missingTable, table, how)
}

/** `deadLetters` whose every method reports database errors as `explain` says. */
export function explainingDeadLetters(
  deadLetters: DeadLetters,
  explain: (error: unknown) => unknown,
): DeadLetters {
  const rethrow = (error: unknown): never => {
    throw explain(error)
  }
  return {
    list: (filter) => deadLetters.list(filter).catch(rethrow),
    count: (filter) => deadLetters.count(filter).catch(rethrow),
    replay: (filter) => deadLetters.replay(filter).catch(rethrow),
    purge: (filter) => deadLetters.purge(filter).catch(rethrow),
  }
}
