// Scenario 6: pg-transactional-outbox 0.5.7 side by side with our relay, on the same workload,
// broker, Kafka client and producer settings. Throughput of a pre-filled outbox (same size as
// scenario 1), then commit-to-acknowledged latency at 1,000 msg/s.
import { RELAY_DEFAULTS } from '../../src/index.ts'
import type { TrackedMessage } from '../../src/testing/index.ts'
import type { BenchContext, Scenario } from '../lib/context.ts'
import { Resources, withClient } from '../lib/env.ts'
import { measureLatency } from '../lib/latency.ts'
import { PEER_BATCH_SIZE, PEER_POLLING_MS, prefillPeer, setupPeer } from '../lib/peer.ts'
import { metrics, type RelayMetrics } from '../lib/relay-metrics.ts'
import { fmt, fmtInt, fmtRatio, type ScenarioResult, type Table } from '../lib/report.ts'
import { round } from '../lib/stats.ts'
import { type Verification, verdict, verifyTopic } from '../lib/verify.ts'
import { runWorker } from '../lib/workers.ts'
import { fmtMs, LATENCY_COLUMNS, latencyData, latencyRow } from './latency.ts'
import { type RelayRun, relayPrefilled, roundMetrics } from './throughput.ts'

interface PeerRun {
  peer: RelayMetrics
  verification: Verification
  errors: string[]
  extra: Record<string, number>
}

async function peerPrefilled(
  ctx: BenchContext,
  res: Resources,
  count: number,
  prefix: string,
  timeLimitMs: number,
): Promise<PeerRun> {
  const schema = res.schema('peer')
  const topic = await res.topic('peer')
  await withClient(async (client) => {
    await setupPeer(client, schema)
    await prefillPeer(client, schema, prefix, 0, count)
    await client.query(`VACUUM ANALYZE "${schema}".outbox`)
  })
  const result = await runWorker({
    kind: 'peer',
    brokers: ctx.brokers,
    databaseUrl: ctx.databaseUrl,
    schema,
    topic,
    warmupTopic: ctx.warmupTopic,
    stopAfter: count,
    timeLimitMs,
  })
  // Expected = what the peer marked processed (at a time limit, the rest never got its turn).
  const expected = await withClient(async (client) => {
    const rows = await client.query(
      `SELECT payload->>'id' AS id, payload->>'key' AS key, (payload->>'seq')::int AS seq
       FROM "${schema}".outbox WHERE processed_at IS NOT NULL`,
    )
    return rows.rows as TrackedMessage[]
  })
  const verification = await verifyTopic(ctx.brokers, topic, expected)
  return { peer: metrics(result), verification, errors: result.errors, extra: result.extra ?? {} }
}

function peerVerdict(run: PeerRun): string {
  const v = run.verification
  const abandoned = run.extra.abandoned ?? 0
  const parts = [
    `lost ${v.lost}${abandoned > 0 ? ` + ${abandoned} abandoned` : ''}`,
    `dup ${v.duplicates}`,
    v.outOfOrder === 0 ? 'order ok' : `${v.outOfOrder} out of order`,
  ]
  if (v.unknown > 0) parts.push(`${v.unknown} unmarked at end`)
  return `${v.lost === 0 && abandoned === 0 ? 'ok' : 'FAILED'}: ${parts.join(', ')}`
}

export const peer: Scenario = {
  id: 'peer',
  number: 6,
  title: 'Side by side with pg-transactional-outbox 0.5.7',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const count = ctx.full ? 200_000 : 20_000
    // The peer relays hundreds of messages per second at best here: bound its run.
    const peerTimeLimitMs = ctx.full ? 600_000 : 30_000
    const latencyMs = ctx.full ? 30_000 : 5_000
    const completionMs = ctx.full ? 30_000 : 10_000
    const res = new Resources(ctx.brokers)
    let ours: RelayRun
    let theirs: PeerRun
    const latencyRows: string[][] = []
    const latency: Record<string, unknown> = {}
    let peerP99: number | undefined
    let oursP99: number | undefined
    try {
      theirs = await peerPrefilled(ctx, res, count, 'p', peerTimeLimitMs)
      ctx.log(
        `  peer: ${fmtInt(theirs.peer.rate)} msg/s (${fmtInt(theirs.peer.messages)} processed, ${theirs.extra.handlerErrors ?? 0} handler errors), ${peerVerdict(theirs)}`,
      )
      await res.release()
      ours = await relayPrefilled(ctx, res, { count, prefix: 'o', verify: true })
      ctx.log(`  ours: ${fmtInt(ours.ours.rate)} msg/s, ${verdict(ours.verification)}`)
      await res.release()

      const quiet = ctx.features.outboxNotifyOption ? { notify: false } : {}
      const latencyConfigs = [
        {
          label: `k-entity, polling every ${PEER_POLLING_MS} ms`,
          id: 'ours',
          placement: 'child' as const,
          relayOptions: { pollingInterval: PEER_POLLING_MS, ...ctx.features.pollingOnly },
          outboxOptions: quiet,
        },
        {
          label: `pg-transactional-outbox, polling every ${PEER_POLLING_MS} ms`,
          id: 'peer',
          placement: 'peer' as const,
        },
      ]
      for (const config of latencyConfigs) {
        const run = await measureLatency(ctx, res, {
          ...config,
          rate: 1000,
          durationMs: latencyMs,
          connections: 4,
          completionTimeoutMs: completionMs,
        })
        ctx.log(
          `  ${config.label} @ 1000/s: p50 ${fmtMs(run.latency.p50, ' ms')}, p99 ${fmtMs(run.latency.p99, ' ms')}`,
        )
        latencyRows.push([config.label, fmtInt(1000), ...latencyRow(run)])
        latency[config.id] = latencyData(run)
        if (config.id === 'peer') peerP99 = run.latency.p99
        else oursP99 = run.latency.p99
        await res.release()
      }
    } finally {
      await res.release()
    }

    const ratio = ours.ours.rate / theirs.peer.rate
    const peerComplete = theirs.extra.complete === 1
    const throughputTable: Table = {
      title: `6. Side by side: relaying ${fmtInt(count)} pre-filled messages to the same broker`,
      columns: [
        'relay',
        'messages relayed',
        'msg/s',
        'vs peer',
        'CPU s/100k',
        'PG round trips/msg',
        'PG statements/msg',
        'delivery check',
      ],
      rows: [
        [
          `pg-transactional-outbox 0.5.7 (parallel, batch ${PEER_BATCH_SIZE}, ${PEER_POLLING_MS} ms polling, cleanup off)`,
          `${fmtInt(theirs.peer.messages)}${peerComplete ? '' : ` (${peerTimeLimitMs / 1000} s limit)`}`,
          fmtInt(theirs.peer.rate),
          '1.00x',
          fmt(theirs.peer.cpuPer100k, 2),
          fmt(theirs.peer.roundTripsPerMessage, 2),
          fmt(theirs.peer.statementsPerMessage, 2),
          peerVerdict(theirs),
        ],
        [
          `k-entity (batch ${RELAY_DEFAULTS.maxMessagesPerPoll}, defaults)`,
          fmtInt(ours.ours.messages),
          fmtInt(ours.ours.rate),
          fmtRatio(ratio, 1),
          fmt(ours.ours.cpuPer100k, 2),
          fmt(ours.ours.roundTripsPerMessage, 4),
          fmt(ours.ours.statementsPerMessage, 4),
          verdict(ours.verification),
        ],
      ],
      notes: [
        "The peer's handler sends each message with our KafkaTransport (same @platformatic/kafka producer, idempotent, acks=all, murmur2 partitioner) and awaits it, as its handler contract requires; its pool runs up to 10 handlers at once.",
        "Messages marked 'parallel' give up the peer's per-segment ordering, so out-of-order deliveries are expected for it; they are reported, not counted against it.",
        `Peer: ${fmtInt(theirs.extra.startedAttempts ?? 0)} started attempts and ${fmtInt(theirs.extra.handlerCalls ?? 0)} successful handler calls for ${fmtInt(theirs.peer.messages)} messages processed; ${fmtInt(theirs.extra.handlerErrors ?? 0)} handler errors (first: ${theirs.errors[0] ?? 'none'}); ${fmtInt(theirs.extra.abandoned ?? 0)} messages abandoned (never delivered).`,
        `The peer's run ends when it has nothing left to work on or after ${peerTimeLimitMs / 1000} s; its delivery check covers the messages it marked processed ("unknown" = sent but not yet marked when the run ended).`,
        'Both relays run alone in a child process; round trips/statements counted there by wrapping pg.Client#query (all of the process: polling, locking, marking processed).',
      ],
    }
    const latencyTable: Table = {
      title: `6b. Latency side by side at 1,000 msg/s offered (${latencyMs / 1000} s each, 4 writer connections)`,
      columns: LATENCY_COLUMNS,
      rows: latencyRows,
      notes: [
        "Writers: order row + one message per transaction, through each library's own storage call (the peer: initializeMessageStorage).",
        `"not acked" = not acknowledged within ${completionMs / 1000} s after the load ended (counted as infinitely late in the percentiles).`,
      ],
    }
    return {
      id: this.id,
      title: this.title,
      tables: [throughputTable, latencyTable],
      targets: [
        {
          name: 'throughput vs pg-transactional-outbox',
          target: '>= 10x',
          measured: `${fmtRatio(ratio, 1)} (${fmtInt(ours.ours.rate)} vs ${fmtInt(theirs.peer.rate)} msg/s)`,
          met: ratio >= 10,
        },
        {
          name: 'p99 latency at 1,000 msg/s, 10 ms polling, vs peer (no target; informational)',
          target: '-',
          measured:
            oursP99 !== undefined && peerP99 !== undefined
              ? `${fmtMs(oursP99, ' ms')} vs ${fmtMs(peerP99, ' ms')}`
              : 'not measured',
          met: null,
        },
      ],
      data: {
        count,
        peer: {
          config: {
            concurrency: 'parallel',
            batchSize: PEER_BATCH_SIZE,
            pollingIntervalMs: PEER_POLLING_MS,
            cleanup: false,
          },
          ...roundMetrics(theirs.peer),
          ...theirs.extra,
          timeLimitMs: peerTimeLimitMs,
          errors: theirs.errors,
          verification: { ...theirs.verification, summary: undefined },
        },
        ours: {
          ...roundMetrics(ours.ours),
          verification: ours.verification && { ...ours.verification, summary: undefined },
        },
        ratio: round(ratio, 2),
        latency,
      },
    }
  },
}
