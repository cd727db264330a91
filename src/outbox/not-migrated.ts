import type { DeadLetters } from '../core/dead-letters.ts'
import { type ErrorCode, ErrorCodes, isKEntityError, notMigrated } from '../core/errors.ts'

export type ClassifyError = (error: unknown) => ErrorCode | undefined

/**
 * A `KE_NOT_MIGRATED` error (naming `table`, as the dialect quotes it) for a driver error that says the outbox tables are missing, and the
 * error itself otherwise. Errors k-entity already classified pass through unchanged.
 */
export function explainMissingTable(
  error: unknown,
  classify: ClassifyError,
  table: string | undefined,
  how = 'outbox.migrate(connection)',
): unknown {
  if (isKEntityError(error) || classify(error) !== ErrorCodes.NOT_MIGRATED) return error
  return notMigrated(table, error, { how })
}

/** `deadLetters` whose every method reports missing tables as `KE_NOT_MIGRATED`. */
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
