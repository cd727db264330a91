import { ErrorCodes, KEntityError } from '../../core/errors.ts'

/**
 * KE_NO_TRANSACTION for a handle that is not (or no longer) a transaction, whether the data
 * layer itself knows it or the database said so, worded the same on every database; `hint`
 * tells the user of that data layer what to do.
 */
export function noTransaction(hint?: string, cause?: unknown): KEntityError {
  return new KEntityError(
    ErrorCodes.NO_TRANSACTION,
    `outbox topics must be produced inside a transaction${hint ? `: ${hint}` : ''}; nothing was stored`,
    cause === undefined ? {} : { cause },
  )
}

/** KE_NO_TRANSACTION for the topics of a `transaction()` helper used after it ended. */
export function transactionEnded(): KEntityError {
  return new KEntityError(
    ErrorCodes.NO_TRANSACTION,
    'this transaction() has already ended: produce with the topics of a running transaction; nothing was stored',
  )
}
