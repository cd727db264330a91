// Reads a topic back and runs the project's delivery checker on it.
import {
  checkDelivery,
  type DeliveryReport,
  formatReport,
  observedFromConsumed,
  readTopic,
  type TrackedMessage,
} from '../../src/testing/index.ts'
import { KEYS } from './workload.ts'

export interface Verification {
  ok: boolean
  expected: number
  delivered: number
  lost: number
  duplicates: number
  outOfOrder: number
  keysOnSeveralPartitions: number
  unknown: number
  summary: string
}

export async function verifyTopic(
  brokers: string[],
  topic: string,
  expected: TrackedMessage[],
): Promise<Verification> {
  const consumed = await readTopic({
    brokers,
    topic,
    // + the untracked warm-up records (one per key).
    expectedCount: expected.length + KEYS,
    timeoutMs: Math.max(60_000, expected.length),
    idleTimeoutMs: 10_000,
  })
  // Records without tracking headers are the benchmark's own topic warm-up (see topicWarmupRecords).
  const report: DeliveryReport = checkDelivery({
    expected,
    observed: observedFromConsumed(consumed, { untracked: 'ignore' }),
  })
  return {
    ok: report.ok,
    expected: report.expected,
    delivered: report.delivered,
    lost: report.lost,
    duplicates: report.duplicates,
    outOfOrder: report.outOfOrder,
    keysOnSeveralPartitions: report.keysOnSeveralPartitions,
    unknown: report.unknown,
    summary: formatReport(report),
  }
}

/** "ok (lost 0, dup 0, order ok)" or what failed, for a table cell. */
export function verdict(v: Verification | undefined): string {
  if (v === undefined) return 'not checked'
  const parts = [
    `lost ${v.lost}`,
    `dup ${v.duplicates}`,
    v.outOfOrder === 0 ? 'order ok' : `${v.outOfOrder} out of order`,
  ]
  if (v.unknown > 0) parts.push(`unknown ${v.unknown}`)
  return `${v.lost === 0 && v.unknown === 0 ? 'ok' : 'FAILED'}: ${parts.join(', ')}`
}
