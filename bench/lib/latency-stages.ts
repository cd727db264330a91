// Where a message's commit-to-acknowledged time goes, for bench/latency-stages.ts.
//
// The relay worker records, in its own process: every send (start, ack; AckRecordingTransport
// with recordSends), every `delivered` event (its wall time and the batch's claim/send/delete
// steps), the event loop's delay and GC pauses. The parent joins them with the writers' commit
// times: the n-th acknowledged send is the n-th delivered batch (one batch settles at a time,
// and these runs have no failures), so each message gets
//   wait   = claim start - COMMIT returned (the wake-up: notification, poll timer, or the batch
//            before it still in flight)
//   claim  = the claim's round trip
//   gap    = claim end -> send called (decoding, building the batch)
//   send   = send called -> Kafka acknowledged (the producer and the broker)
// and wait + claim + gap + send = the latency the scenario reports.
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks'
import type { RelayEvent } from '../../src/index.ts'
import type { SendTiming } from './kafka.ts'
import { type Distribution, distribution, wallNow } from './stats.ts'

export interface DeliveredTiming {
  /** Wall-clock ms when the event was emitted (after the batch's delete). */
  at: number
  durationMs: number
  claimMs: number
  sendMs: number
  deleteMs: number
  count: number
}

export interface RelayStageRecord {
  sends: SendTiming[]
  sendOf: [string, number][]
  delivered: DeliveredTiming[]
  /** Event-loop delay of the relay process over the timed span, ms. */
  loopDelay: { p50: number; p99: number; max: number }
  /** GC pauses of the relay process over the timed span. */
  gc: { count: number; totalMs: number; maxMs: number }
}

/** Child side: event-loop delay and GC pauses from `start()` until `stop()`. */
export class ProcessPauses {
  readonly #loop = monitorEventLoopDelay({ resolution: 1 })
  readonly #gc: number[] = []
  readonly #observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) this.#gc.push(entry.duration)
  })

  start(): void {
    this.#loop.enable()
    this.#observer.observe({ entryTypes: ['gc'] })
  }

  stop(): Pick<RelayStageRecord, 'loopDelay' | 'gc'> {
    this.#loop.disable()
    this.#observer.disconnect()
    const ms = (ns: number) => ns / 1e6
    return {
      loopDelay: {
        p50: ms(this.#loop.percentile(50)),
        p99: ms(this.#loop.percentile(99)),
        max: ms(this.#loop.max),
      },
      gc: {
        count: this.#gc.length,
        totalMs: this.#gc.reduce((sum, d) => sum + d, 0),
        maxMs: this.#gc.reduce((max, d) => Math.max(max, d), 0),
      },
    }
  }
}

/** Child side: a `delivered` event's timing. */
export function deliveredTiming(event: Extract<RelayEvent, { type: 'delivered' }>): DeliveredTiming {
  return {
    at: wallNow(),
    durationMs: event.durationMs,
    claimMs: event.claimMs,
    sendMs: event.sendMs,
    deleteMs: event.deleteMs,
    count: event.count,
  }
}

export interface StageBreakdown {
  /** Messages whose stages could be joined (all of them when no batch failed). */
  joined: number
  total: Distribution
  wait: Distribution
  claim: Distribution
  gap: Distribution
  send: Distribution
  /** Per batch: messages, delete round trip, and the time from one batch's end to the next claim. */
  batchSize: Distribution
  deleteMs: Distribution
  idleBetweenBatches: Distribution
  /** Of the slowest 1% of messages: their mean stages, to see which one makes the tail. */
  tail: { count: number; wait: number; claim: number; gap: number; send: number }
  loopDelay: RelayStageRecord['loopDelay']
  gc: RelayStageRecord['gc']
}

/** Parent side: joins the writers' commit times with the relay's record. */
export function stageBreakdown(
  commits: ReadonlyMap<string, number>,
  record: RelayStageRecord,
): StageBreakdown | undefined {
  if (record.sends.length !== record.delivered.length) return undefined
  const sendOf = new Map(record.sendOf)
  const rows: { total: number; wait: number; claim: number; gap: number; send: number }[] = []
  for (const [id, committedAt] of commits) {
    const index = sendOf.get(id)
    if (index === undefined) continue
    const send = record.sends[index] as SendTiming
    const batch = record.delivered[index] as DeliveredTiming
    const claimStart = batch.at - batch.durationMs
    const claimEnd = claimStart + batch.claimMs
    rows.push({
      total: send.ack - committedAt,
      wait: claimStart - committedAt,
      claim: batch.claimMs,
      gap: send.start - claimEnd,
      send: send.ack - send.start,
    })
  }
  const idle: number[] = []
  for (let i = 1; i < record.delivered.length; i++) {
    const previous = record.delivered[i - 1] as DeliveredTiming
    const current = record.delivered[i] as DeliveredTiming
    idle.push(current.at - current.durationMs - previous.at)
  }
  const sorted = [...rows].sort((a, b) => b.total - a.total)
  const tail = sorted.slice(0, Math.max(1, Math.ceil(sorted.length / 100)))
  const avg = (pick: (row: (typeof rows)[number]) => number) =>
    tail.reduce((sum, row) => sum + pick(row), 0) / tail.length
  return {
    joined: rows.length,
    total: distribution(rows.map((r) => r.total)),
    wait: distribution(rows.map((r) => r.wait)),
    claim: distribution(rows.map((r) => r.claim)),
    gap: distribution(rows.map((r) => r.gap)),
    send: distribution(rows.map((r) => r.send)),
    batchSize: distribution(record.delivered.map((d) => d.count)),
    deleteMs: distribution(record.delivered.map((d) => d.deleteMs)),
    idleBetweenBatches: distribution(idle),
    tail: {
      count: tail.length,
      wait: avg((r) => r.wait),
      claim: avg((r) => r.claim),
      gap: avg((r) => r.gap),
      send: avg((r) => r.send),
    },
    loopDelay: record.loopDelay,
    gc: record.gc,
  }
}
