import { describe, invalidArgument } from './errors.ts'
import type { RecordHeader } from './record.ts'

/** A message that was given up on, with everything needed to inspect or replay it. */
export interface DeadLetter {
  id: string
  /** Its id in the outbox when it failed. */
  messageId: string
  topic: string
  key: Buffer | null
  value: Buffer | null
  headers: RecordHeader[]
  attempts: number
  /** Oldest first; the last entry is the error that buried it. */
  errors: { at: string; error: string }[]
  createdAt: Date
  deadAt: Date
}

export interface DeadLetterFilter {
  topic?: string
  ids?: readonly string[]
  /** Only those buried before this time. */
  deadBefore?: Date
  /** `replay` and `purge` act on everything only when this is set explicitly. */
  all?: boolean
  /** `list` only: most rows returned (default 100, at most 10,000). */
  limit?: number
}

/** Inspect, replay and purge dead letters. Every method runs in its own short transaction. */
export interface DeadLetters {
  list(filter?: DeadLetterFilter): Promise<DeadLetter[]>
  count(filter?: DeadLetterFilter): Promise<number>
  /**
   * Moves the matching dead letters back into the outbox, oldest first, as new messages: each
   * goes to the end of its key's queue (messages of the key produced since are not held back).
   */
  replay(filter: DeadLetterFilter): Promise<number>
  purge(filter: DeadLetterFilter): Promise<number>
}

/** Queue figures for dashboards and alerts. */
export interface OutboxStats {
  /** Messages waiting to be sent, including those waiting for a retry. */
  pending: number
  /** Messages that failed at least once and wait for their retry time. */
  retrying: number
  deadLetters: number
  /** Age of the oldest pending message in ms (0 when empty): the relay's lag. */
  oldestPendingMs: number
}

export function checkDeadLetterFilter(
  filter: unknown,
  action: 'list' | 'count' | 'replay' | 'purge',
): DeadLetterFilter {
  if (filter === undefined && (action === 'list' || action === 'count')) return {}
  if (typeof filter !== 'object' || filter === null) {
    throw invalidArgument(
      `deadLetters.${action}() needs a filter object like { topic: 'orders' } or { all: true }`,
    )
  }
  // Each field is read once, and what was checked is what the SQL gets: a fresh object of copies,
  // never the caller's, whose getters (or a later change) could hand the SQL something else.
  const { topic, ids: givenIds, deadBefore: givenDate, all, limit } = filter as DeadLetterFilter
  const ids: unknown = Array.isArray(givenIds) ? Array.from(givenIds as unknown[]) : givenIds
  const deadBefore: unknown =
    givenDate instanceof Date ? new Date(Date.prototype.getTime.call(givenDate)) : givenDate
  if (topic !== undefined && (typeof topic !== 'string' || topic.length === 0)) {
    throw invalidArgument(`dead-letter filter 'topic' must be a non-empty string, got ${describe(topic)}`)
  }
  if (
    ids !== undefined &&
    (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string' || !/^\d{1,19}$/.test(id)))
  ) {
    throw invalidArgument(`dead-letter filter 'ids' must be an array of id strings (as returned by list())`)
  }
  if (deadBefore !== undefined && !(deadBefore instanceof Date && !Number.isNaN(deadBefore.getTime()))) {
    throw invalidArgument(`dead-letter filter 'deadBefore' must be a valid Date, got ${describe(deadBefore)}`)
  }
  if (all !== undefined && typeof all !== 'boolean')
    throw invalidArgument(`dead-letter filter 'all' must be a boolean`)
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1 || limit > 10_000)) {
    throw invalidArgument(
      `dead-letter filter 'limit' must be an integer from 1 to 10000, got ${describe(limit)}`,
    )
  }
  const narrowed = topic !== undefined || ids !== undefined || deadBefore !== undefined
  if ((action === 'replay' || action === 'purge') && !narrowed && all !== true) {
    throw invalidArgument(
      `deadLetters.${action}() with no topic, ids or deadBefore would act on every dead letter; pass { all: true } if that is what you want`,
    )
  }
  const checked: DeadLetterFilter = {}
  if (topic !== undefined) checked.topic = topic
  if (ids !== undefined) checked.ids = ids as string[]
  if (deadBefore !== undefined) checked.deadBefore = deadBefore as Date
  if (all !== undefined) checked.all = all
  if (limit !== undefined) checked.limit = limit
  return Object.freeze(checked)
}
