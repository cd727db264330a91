// Scenario 5: 1, 2 and 4 relays in concurrent mode sharing one outbox, each in its own process,
// released together; per-key order checked by the delivery checker. One relay in the default
// single mode is the baseline of the same run.
import { RELAY_DEFAULTS } from '../../src/index.ts'
import type { BenchContext, Scenario } from '../lib/context.ts'
import { Resources, withClient } from '../lib/env.ts'
import { combined, type RelayMetrics } from '../lib/relay-metrics.ts'
import { fmt, fmtInt, fmtRatio, NOT_IMPLEMENTED, type ScenarioResult, type Table } from '../lib/report.ts'
import { sleep } from '../lib/stats.ts'
import { type Verification, verdict, verifyTopic } from '../lib/verify.ts'
import type { RelayJob } from '../lib/worker.ts'
import { runWorkers } from '../lib/workers.ts'
import { benchOutbox, outboxCount, prefill, trackedRange } from '../lib/workload.ts'
import { roundMetrics } from './throughput.ts'

interface Row {
  label: string
  relays: number
  mode: string
  metrics?: RelayMetrics
  shares?: number[]
  verification?: Verification
  errors: string[]
}

export const scaling: Scenario = {
  id: 'scaling',
  number: 5,
  title: 'Relay scaling: several concurrent relays',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const count = ctx.full ? 200_000 : 20_000
    const configs: { relays: number; mode: string }[] = [
      { relays: 1, mode: 'single' },
      { relays: 1, mode: 'concurrent' },
      { relays: 2, mode: 'concurrent' },
      { relays: 4, mode: 'concurrent' },
    ]
    const res = new Resources(ctx.brokers)
    const rows: Row[] = []
    try {
      for (const config of configs) {
        const label = `${config.relays} relay${config.relays > 1 ? 's' : ''}, ${config.mode} mode`
        if (config.mode === 'concurrent' && !ctx.features.concurrent) {
          rows.push({ label, ...config, errors: [] })
          continue
        }
        const schema = res.schema('scale')
        const topic = await res.topic('scale')
        const outbox = benchOutbox(schema, topic, ctx.brokers)
        await outbox.migrate(ctx.databaseUrl)
        const prefix = `s${config.relays}${config.mode[0]}`
        // One session: chunks in order, so per-key seq is id order (the checker relies on it).
        await prefill(outbox, prefix, 0, count, 1)
        await withClient((client) => client.query(`VACUUM ANALYZE "${schema}".outbox`))
        const job: RelayJob = {
          kind: 'relay',
          brokers: ctx.brokers,
          databaseUrl: ctx.databaseUrl,
          schema,
          topic,
          warmupTopic: ctx.warmupTopic,
          relay: { maxMessagesPerPoll: RELAY_DEFAULTS.maxMessagesPerPoll, mode: config.mode },
          progress: true,
        }
        const results = await runWorkers(
          Array.from({ length: config.relays }, () => job),
          async (workers) => {
            // Stop everyone once the outbox is empty (deliveries are counted by the workers).
            for (;;) {
              const delivered = workers.reduce((sum, worker) => sum + worker.delivered, 0)
              if (delivered >= count && (await outboxCount(schema)) === 0) break
              await sleep(delivered >= count ? 20 : 50)
            }
            for (const worker of workers) worker.stop()
          },
        )
        const metrics = combined(results, count)
        const verification = await verifyTopic(ctx.brokers, topic, trackedRange(prefix, 0, count))
        const shares = results.map((r) => r.delivered)
        ctx.log(
          `  ${label}: ${fmtInt(metrics.rate)} msg/s (shares ${shares.join('/')}), ${verdict(verification)}`,
        )
        rows.push({
          label,
          ...config,
          metrics,
          shares,
          verification,
          errors: results.flatMap((r) => r.errors),
        })
        await res.release()
      }
    } finally {
      await res.release()
    }
    const baseline = rows[0]?.metrics
    const tableRows = rows.map((row) =>
      row.metrics
        ? [
            row.label,
            fmtInt(row.metrics.rate),
            baseline ? fmtRatio(row.metrics.rate / baseline.rate) : '-',
            (row.shares ?? []).map(fmtInt).join(' / '),
            fmt(row.metrics.cpuPer100k, 2),
            fmt(row.metrics.roundTripsPerMessage, 4),
            verdict(row.verification),
            String(row.errors.length),
          ]
        : [row.label, NOT_IMPLEMENTED, '', '', '', '', '', ''],
    )
    const table: Table = {
      title: `5. Relay scaling: ${fmtInt(count)} pre-filled messages, batch ${RELAY_DEFAULTS.maxMessagesPerPoll}, relays in separate processes`,
      columns: [
        'relays',
        'msg/s (all relays)',
        'vs 1 single-mode relay',
        'messages per relay',
        'CPU s/100k (all relays)',
        'PG round trips/msg',
        'delivery check',
        'relay errors',
      ],
      rows: tableRows,
      notes: [
        'Time from releasing the relays together to the last acknowledgement; the outbox is confirmed empty before stopping. Relays use the default options (polling 1 s, LISTEN on) except the mode.',
        '"messages per relay" shows how the work was shared: a relay that never wins a claim delivers 0.',
        'On a 2-core machine shared with PostgreSQL and the broker, more relay processes mostly compete for the same cores.',
      ],
    }
    const ordered = rows.filter((row) => row.verification !== undefined)
    const orderOk = ordered.every((row) => row.verification?.ok === true)
    return {
      id: this.id,
      title: this.title,
      tables: [table],
      targets: [
        {
          name: 'several concurrent relays: nothing lost, per-key order kept',
          target: 'ok',
          measured: ctx.features.concurrent ? (orderOk ? 'ok' : 'FAILED') : NOT_IMPLEMENTED,
          met: ctx.features.concurrent ? orderOk : null,
        },
      ],
      data: {
        count,
        rows: rows.map((row) => ({
          label: row.label,
          relays: row.relays,
          mode: row.mode,
          result: row.metrics ? roundMetrics(row.metrics) : NOT_IMPLEMENTED,
          messagesPerRelay: row.shares ?? null,
          verification: row.verification ? { ...row.verification, summary: undefined } : null,
          errors: row.errors,
        })),
      },
    }
  },
}
