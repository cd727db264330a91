/**
 * Thrown by a processor's `handleBatch` when the handler of `messages[index]` failed: the messages
 * before it passed theirs, so only that one needs handling alone.
 */
export class BatchHandlerError extends Error {
  readonly index: number
  constructor(index: number, cause: unknown) {
    const reason = cause instanceof Error ? cause.message : String(cause)
    super(`the handler of message ${index} of a batch failed: ${reason}`, { cause })
    this.name = 'BatchHandlerError'
    this.index = index
  }
}

/** A failed part this small is handled one record at a time. */
export const ALONE = 4

/** What narrowing a failed batch down needs from the consumer, for the records of one partition. */
export interface BatchSteps<R> {
  /**
   * Handles `records` as one batch (and, when it succeeds, commits them): undefined when done,
   * else where it failed (`at`: the index of the record whose handler failed, when known).
   */
  batch(records: R[]): Promise<{ at: number | undefined } | undefined>
  /** Handles `records` one by one, each with its retries and dead letter; false when stopped. */
  alone(records: R[]): Promise<boolean>
  /** True once the partition must stop (closing, or taken away). */
  stopped(): boolean
  /** Gives up `records` without handling them (they stay uncommitted). */
  drop(records: R[]): void
}

/**
 * Handles the records of a batch that failed. Each alone would cost a transaction per record, so
 * the failure is narrowed down instead: when the handler of record `at` failed, the records before
 * it go again as a batch, then that record alone (with its retries and dead letter), then the
 * records after it as a batch; when the failing record is not known (a key seen before: records
 * redelivered after a crash, a relay's resend), each half goes again as a batch. A part that fails
 * again is narrowed down the same way, down to `ALONE` records handled one by one. One repeated key
 * in a batch of n costs about log2(n / ALONE) failed tries, and a handler runs at most that many
 * times more for it. False when stopped: every record not handled was given to `drop` or `alone`.
 */
export async function handleInParts<R>(
  records: R[],
  at: number | undefined,
  steps: BatchSteps<R>,
): Promise<boolean> {
  if (records.length <= ALONE) return steps.alone(records)
  const half = Math.ceil(records.length / 2)
  const parts =
    at === undefined
      ? [records.slice(0, half), records.slice(half)]
      : [records.slice(0, at), records.slice(at, at + 1), records.slice(at + 1)]
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as R[]
    if (steps.stopped()) {
      for (const rest of parts.slice(i)) steps.drop(rest)
      return false
    }
    let done = true
    if (part.length === 1) done = await steps.alone(part)
    else if (part.length > 1) {
      const failure = await steps.batch(part)
      if (failure !== undefined) done = await handleInParts(part, failure.at, steps)
    }
    if (!done) {
      for (const rest of parts.slice(i + 1)) steps.drop(rest)
      return false
    }
  }
  return true
}
