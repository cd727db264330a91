import type { OutboxRecord } from '../../core/record.ts'
import { HELD_ATTEMPTS } from '../../core/seams.ts'

// What every SQL dialect stores the same way: the header column and the attempts arithmetic.

/** Headers as stored: JSON pairs keep duplicates and order; values are base64 so bytes survive. */
export function encodeHeaders(headers: OutboxRecord['headers']): string | null {
  if (headers.length === 0) return null
  return JSON.stringify(
    headers.map(([name, value]) => [name, value === null ? null : value.toString('base64')]),
  )
}

/** `stored`: the headers as the driver returns them, parsed or as JSON text. */
export function decodeHeaders(stored: unknown): OutboxRecord['headers'] {
  if (typeof stored === 'string') stored = JSON.parse(stored)
  if (!Array.isArray(stored)) return []
  return stored.map(([name, value]: [string, string | null]) => [
    name,
    value === null ? null : Buffer.from(value, 'base64'),
  ])
}

/**
 * The attempts column after a failure, in SQL every dialect speaks: a counted failure adds one
 * to the counted part and drops the held mark; one that does not count marks the row held (see
 * `FailedDelivery.countAttempt`), which keeps its key blocked, and leaves the count as it was.
 */
export function nextAttemptsSql(attempts: string, counted: string): string {
  return `CASE WHEN ${counted} THEN ${attempts} % ${HELD_ATTEMPTS} + 1 WHEN ${attempts} >= ${HELD_ATTEMPTS} THEN ${attempts} ELSE ${attempts} + ${HELD_ATTEMPTS} END`
}
