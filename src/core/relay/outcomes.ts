import type { SendFailure } from '../seams.ts'

/**
 * How long a message waits, without using an attempt, after the cluster failed it on its
 * partition (leader moving, dead broker): Kafka moves a dead broker's leaders in about 10 s.
 */
export const HELD_RETRY_MS = 1000

/** Kafka's answer to a batch: the records it did not acknowledge, or a rejection of the whole send. */
export type SendOutcome = { failed: OutcomeFailure[] } | { rejected: unknown }

/**
 * A record Kafka did not acknowledge. `holdMs`: it may still be written (a send settled early,
 * see `settle.ts`), so it is held this long instead of `HELD_RETRY_MS`: no one may send it again
 * before Kafka can no longer write it.
 */
export interface OutcomeFailure extends SendFailure {
  holdMs?: number
}

/**
 * A transport's answer as a list of failures: `undefined` (the seam's old contract, still what
 * user transports return) means everything was acknowledged. Entries naming no record of the
 * batch are ignored; a record named twice counts once.
 */
export function sendFailures(result: unknown, count: number): SendFailure[] {
  if (typeof result !== 'object' || result === null) return []
  const failed = (result as { failed?: unknown }).failed
  if (!Array.isArray(failed)) return []
  const byIndex = new Map<number, SendFailure>()
  for (const entry of failed as SendFailure[]) {
    if (typeof entry !== 'object' || entry === null) continue
    const { index } = entry
    if (!Number.isInteger(index) || index < 0 || index >= count || byIndex.has(index)) continue
    byIndex.set(index, {
      index,
      error: entry.error,
      retryable: entry.retryable !== false,
      countsAsAttempt: entry.countsAsAttempt !== false,
      kafkaAnswered: entry.kafkaAnswered === true,
    })
  }
  return [...byIndex.values()].sort((a, b) => a.index - b.index)
}

/** A failure of one stage of a batch, so the loop reports it under that stage. */
export class RelayStageError extends Error {
  readonly stage: 'send' | 'acknowledge'
  constructor(stage: 'send' | 'acknowledge', cause: unknown) {
    super(errorText(cause), { cause })
    this.stage = stage
  }
}

export function unwrap(error: unknown): unknown {
  return error instanceof RelayStageError ? error.cause : error
}

export function errorText(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 2000)
  return String(error).slice(0, 2000)
}
