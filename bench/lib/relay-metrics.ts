// Derived figures from one worker run.
import type { WorkerResult } from './worker.ts'

export interface RelayMetrics {
  messages: number
  seconds: number
  rate: number
  cpuSeconds: number
  cpuPer100k: number
  /** PostgreSQL's and the broker's CPU seconds per 100k messages over the run (when readable). */
  postgresCpuPer100k?: number
  brokerCpuPer100k?: number
  roundTripsPerMessage: number
  statementsPerMessage: number
  roundTrips: number
  statements: number
}

export function metrics(result: WorkerResult, messages = result.delivered): RelayMetrics {
  const seconds = (result.endedAt - result.startedAt) / 1000
  const cpuSeconds = result.cpuUserS + result.cpuSystemS
  return {
    messages,
    seconds,
    rate: messages / seconds,
    cpuSeconds,
    cpuPer100k: (cpuSeconds / messages) * 100_000,
    ...(result.services
      ? {
          postgresCpuPer100k: (result.services.postgresS / messages) * 100_000,
          brokerCpuPer100k: (result.services.brokerS / messages) * 100_000,
        }
      : {}),
    roundTripsPerMessage: result.roundTrips / messages,
    statementsPerMessage: result.statements / messages,
    roundTrips: result.roundTrips,
    statements: result.statements,
  }
}

/** Several relays working on one outbox: from the first start to the last acknowledgement. */
export function combined(results: WorkerResult[], messages: number): RelayMetrics {
  const startedAt = Math.min(...results.map((r) => r.startedAt))
  const endedAt = Math.max(...results.map((r) => r.endedAt))
  const sum = (pick: (r: WorkerResult) => number) => results.reduce((total, r) => total + pick(r), 0)
  return metrics(
    {
      startedAt,
      endedAt,
      delivered: messages,
      batches: sum((r) => r.batches),
      cpuUserS: sum((r) => r.cpuUserS),
      cpuSystemS: sum((r) => r.cpuSystemS),
      roundTrips: sum((r) => r.roundTrips),
      statements: sum((r) => r.statements),
      errors: results.flatMap((r) => r.errors),
    },
    messages,
  )
}
