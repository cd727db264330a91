// Scenario 3: commit-to-acknowledged latency at 1,000 and 5,000 msg/s offered (open loop), for
// the relay configurations users choose between.
import type { BenchContext, Scenario } from '../lib/context.ts'
import { Resources } from '../lib/env.ts'
import {
  COMPLETION_TIMEOUT_MS,
  type LatencyOptions,
  type LatencyRun,
  measureLatency,
} from '../lib/latency.ts'
import { fmt, fmtInt, NOT_IMPLEMENTED, type ScenarioResult, type Table } from '../lib/report.ts'
import { round } from '../lib/stats.ts'

interface Config {
  id: string
  label: string
  /** Undefined when the relay does not support this configuration yet. */
  options: Omit<LatencyOptions, 'rate' | 'durationMs' | 'connections' | 'label'> | undefined
}

/** A latency in ms; a message never acknowledged within the wait shows as "not acked". */
export function fmtMs(value: number, unit = ''): string {
  return value === Number.POSITIVE_INFINITY ? 'not acked' : `${fmt(value, 1)}${unit}`
}

export function latencyRow(run: LatencyRun): string[] {
  return [
    fmtInt(run.achievedRate),
    fmtMs(run.latency.p50),
    fmtMs(run.latency.p99),
    fmtMs(run.latency.p999),
    fmtMs(run.latency.max),
    `${fmtInt(run.acknowledged)}/${fmtInt(run.committed)}`,
    run.relayCpuPercent === undefined ? '-' : `${fmt(run.relayCpuPercent, 0)}%`,
    run.roundTripsPerMessage === undefined ? '-' : fmt(run.roundTripsPerMessage, 3),
  ]
}

export const LATENCY_COLUMNS = [
  'configuration',
  'offered msg/s',
  'achieved msg/s',
  'p50 ms',
  'p99 ms',
  'p99.9 ms',
  'max ms',
  'acked/committed',
  'relay CPU',
  'PG round trips/msg',
]

export function latencyData(run: LatencyRun): Record<string, unknown> {
  return {
    offeredRate: run.offeredRate,
    achievedRate: round(run.achievedRate, 0),
    committed: run.committed,
    acknowledged: run.acknowledged,
    missing: run.missing,
    maxScheduleLagMs: round(run.maxScheduleLagMs, 1),
    p50Ms: round(run.latency.p50, 2),
    p90Ms: round(run.latency.p90, 2),
    p99Ms: round(run.latency.p99, 2),
    p999Ms: round(run.latency.p999, 2),
    maxMs: round(run.latency.max, 2),
    meanMs: round(run.latency.mean, 2),
    relayCpuPercent: run.relayCpuPercent === undefined ? null : round(run.relayCpuPercent, 1),
    roundTripsPerMessage: run.roundTripsPerMessage === undefined ? null : round(run.roundTripsPerMessage, 4),
    errors: run.errors,
  }
}

export const latency: Scenario = {
  id: 'latency',
  number: 3,
  title: 'Commit-to-acknowledged latency (open loop)',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const durationMs = ctx.full ? 30_000 : 5_000
    const rates = [1000, 5000]
    const { pollingOnly, wakeUp, outboxNotifyOption } = ctx.features
    // Polling-only rows also turn the producers' NOTIFY off, as a deployment without LISTEN would.
    const quiet = outboxNotifyOption ? { notify: false } : {}
    const configs: Config[] = [
      {
        id: 'poll10',
        label: 'polling every 10 ms',
        options: {
          placement: 'child',
          relayOptions: { pollingInterval: 10, ...pollingOnly },
          outboxOptions: quiet,
        },
      },
      {
        id: 'poll10notify',
        label: 'polling every 10 ms, writers still send NOTIFY (nobody listens)',
        // Separates the cost of NOTIFY for the writers from the cost of the relay's extra polls.
        options: outboxNotifyOption
          ? { placement: 'child', relayOptions: { pollingInterval: 10, ...pollingOnly } }
          : undefined,
      },
      {
        id: 'pollDefault',
        label: 'polling, default interval (1 s)',
        options: { placement: 'child', relayOptions: { ...pollingOnly }, outboxOptions: quiet },
      },
      {
        id: 'listen',
        label: `LISTEN/NOTIFY wake-up${ctx.features.wakeUpOption ? ` (${ctx.features.wakeUpOption})` : ''}, default polling`,
        options: wakeUp ? { placement: 'child', relayOptions: { ...wakeUp } } : undefined,
      },
      {
        id: 'listenEager',
        label: "LISTEN/NOTIFY wake-up, listen: 'eager', default polling",
        options: ctx.features.eagerWakeUp
          ? { placement: 'child', relayOptions: { listen: 'eager' } }
          : undefined,
      },
      {
        id: 'inprocess',
        label: 'in-process wake-up by transaction(), default polling',
        options: { placement: 'inprocess', relayOptions: { ...pollingOnly }, outboxOptions: quiet },
      },
    ]
    const rows: string[][] = []
    const data: Record<string, unknown> = {}
    const res = new Resources(ctx.brokers)
    const p99At1000 = new Map<string, number>()
    try {
      for (const rate of rates) {
        for (const config of configs) {
          const key = `${config.id}@${rate}`
          if (config.options === undefined) {
            rows.push([config.label, fmtInt(rate), NOT_IMPLEMENTED, '', '', '', '', '', '', ''])
            data[key] = NOT_IMPLEMENTED
            continue
          }
          const run = await measureLatency(ctx, res, {
            ...config.options,
            label: config.label,
            rate,
            durationMs,
            connections: rate >= 5000 ? 8 : 4,
          })
          ctx.log(
            `  ${config.label} @ ${rate}/s: p50 ${fmtMs(run.latency.p50, ' ms')}, p99 ${fmtMs(run.latency.p99, ' ms')}, achieved ${fmtInt(run.achievedRate)}/s`,
          )
          rows.push([config.label, fmtInt(rate), ...latencyRow(run)])
          data[key] = latencyData(run)
          if (rate === 1000) p99At1000.set(config.id, run.latency.p99)
          await res.release()
        }
      }
    } finally {
      await res.release()
    }
    const table: Table = {
      title: `3. Commit-to-acknowledged latency, ${durationMs / 1000} s per row, 4 writer connections at 1,000 msg/s and 8 at 5,000`,
      columns: LATENCY_COLUMNS,
      rows,
      notes: [
        'One message per transaction (plus an order row). Latency = when Kafka acknowledged the batch holding the message (acks=all, seen by the relay) minus when COMMIT returned to the writer.',
        'Polling rows run the relay without LISTEN and the writers without NOTIFY. Relays run in a child process except the in-process row, where the transaction() helper wakes the relay directly.',
        'Relay CPU = the relay process CPU time / wall time of the row (100% = one core); round trips include empty polls.',
        `"not acked" = not acknowledged within ${COMPLETION_TIMEOUT_MS / 1000} s after the load ended; such messages count as infinitely late in the percentiles.`,
      ],
    }
    return {
      id: this.id,
      title: this.title,
      tables: [table],
      targets: configs
        .filter((config) => config.id !== 'pollDefault' && config.id !== 'poll10notify')
        .flatMap((config) => {
          const p99 = p99At1000.get(config.id)
          const measured = p99 === undefined ? NOT_IMPLEMENTED : fmtMs(p99, ' ms')
          // The raised target applies to the database wake-up rows.
          const limits = config.id.startsWith('listen') ? [25, 10] : [25]
          return limits.map((limit) => ({
            name: `p99 commit-to-ack at 1,000 msg/s, ${config.label}`,
            target: `<= ${limit} ms${limit === 10 ? ' (raised)' : ''}`,
            measured,
            met: p99 === undefined ? null : p99 <= limit,
          }))
        }),
      data: { durationMs, rows: data },
    }
  },
}
