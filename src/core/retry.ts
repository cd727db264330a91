import { describe, invalidArgument, KEntityError } from './errors.ts'

/** What happens to a message that keeps failing on its own (not because Kafka is down). */
export interface RetryPolicy {
  /** Attempts before giving up on a message (default 10). */
  maxAttempts: number
  /**
   * `dead-letter` (default): move it to the dead-letter table, so later messages of its key flow
   * again. `block`: keep retrying it with backoff, holding back later messages of its key only.
   */
  onExhausted: 'dead-letter' | 'block'
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxAttempts: 10, onExhausted: 'dead-letter' }

export function resolveRetryPolicy(
  input: unknown,
  where: string,
  base: RetryPolicy = DEFAULT_RETRY_POLICY,
): RetryPolicy {
  if (input === undefined) return base
  if (typeof input !== 'object' || input === null) {
    throw invalidArgument(
      `${where}: 'retry' must be an object like { maxAttempts: 5, onExhausted: 'dead-letter' }`,
    )
  }
  const { maxAttempts, onExhausted } = input as Partial<RetryPolicy>
  if (
    maxAttempts !== undefined &&
    (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 1000)
  ) {
    throw invalidArgument(
      `${where}: 'retry.maxAttempts' must be an integer from 1 to 1000, got ${describe(maxAttempts)}`,
    )
  }
  if (onExhausted !== undefined && onExhausted !== 'dead-letter' && onExhausted !== 'block') {
    throw invalidArgument(
      `${where}: 'retry.onExhausted' must be 'dead-letter' or 'block', got ${describe(onExhausted)}`,
    )
  }
  return { maxAttempts: maxAttempts ?? base.maxAttempts, onExhausted: onExhausted ?? base.onExhausted }
}

/**
 * Whether trying again can help. Transports classify their own errors (a KEntityError's
 * `retryable`); anything unclassified is assumed transient, so an unknown error is retried with
 * backoff rather than sent to the dead letters on its first occurrence.
 */
export function isRetryable(error: unknown): boolean {
  return error instanceof KEntityError ? error.retryable : true
}
