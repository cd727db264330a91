// Scenario 1: relaying a pre-filled outbox to Kafka, against the raw producer of the same client
// sending the same messages in batches of the same size. Raw and relay alternate which goes
// first in each repetition, so drift on a busy machine hits both.
import { RELAY_DEFAULTS } from '../../src/index.ts'
import type { BenchContext, Scenario } from '../lib/context.ts'
import { Resources, withClient } from '../lib/env.ts'
import { WARMUP_BATCHES } from '../lib/kafka.ts'
import { metrics, type RelayMetrics } from '../lib/relay-metrics.ts'
import { fmt, fmtInt, fmtRatio, type ScenarioResult, type Table } from '../lib/report.ts'
import { median, round } from '../lib/stats.ts'
import { type Verification, verdict, verifyTopic } from '../lib/verify.ts'
import { runWorker } from '../lib/workers.ts'
import { benchOutbox, prefill, trackedRange, WARMUP_CLAIMS } from '../lib/workload.ts'

/** Batches the raw producer keeps in flight for the client's ceiling (full mode). */
const RAW_IN_FLIGHT = 4

export interface RelayRun {
  ours: RelayMetrics
  verification: Verification | undefined
  errors: string[]
}

/**
 * Pre-fills a fresh outbox with `count` messages (not measured), relays them with one relay in
 * a child process, and optionally reads the topic back through the delivery checker.
 */
export async function relayPrefilled(
  ctx: BenchContext,
  res: Resources,
  options: { count: number; prefix: string; relay?: Record<string, unknown>; verify: boolean },
): Promise<RelayRun> {
  const schema = res.schema('relay')
  const topic = await res.topic('relay')
  const outbox = benchOutbox(schema, topic, ctx.brokers)
  await outbox.migrate(ctx.databaseUrl)
  const fillMs = await prefill(outbox, options.prefix, 0, options.count)
  await withClient((client) => client.query(`ANALYZE "${schema}".outbox`))
  ctx.log(`  pre-filled ${fmtInt(options.count)} rows in ${fmt(fillMs / 1000)} s`)
  const result = await runWorker({
    kind: 'relay',
    brokers: ctx.brokers,
    databaseUrl: ctx.databaseUrl,
    schema,
    topic,
    warmupTopic: ctx.warmupTopic,
    relay: { maxMessagesPerPoll: RELAY_DEFAULTS.maxMessagesPerPoll, ...options.relay },
    stopAfter: options.count,
  })
  const verification = options.verify
    ? await verifyTopic(ctx.brokers, topic, trackedRange(options.prefix, 0, options.count))
    : undefined
  return { ours: metrics(result), verification, errors: result.errors }
}

export async function rawProducerRun(
  ctx: BenchContext,
  res: Resources,
  options: { count: number; prefix: string; batchSize: number; inFlight?: number },
): Promise<RelayMetrics> {
  const topic = await res.topic('raw')
  const result = await runWorker({
    kind: 'raw',
    brokers: ctx.brokers,
    topic,
    warmupTopic: ctx.warmupTopic,
    prefix: options.prefix,
    count: options.count,
    batchSize: options.batchSize,
    inFlight: options.inFlight,
  })
  return metrics(result)
}

export const throughput: Scenario = {
  id: 'throughput',
  number: 1,
  title: 'Relay throughput vs the raw producer',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const count = ctx.full ? 200_000 : 20_000
    const repetitions = 3
    const defaultBatch = RELAY_DEFAULTS.maxMessagesPerPoll
    // Full mode also tries a larger batch (same size for the raw producer), to show how much of
    // the gap is per-batch cost; the target is read at the default batch size.
    const batchSizes = ctx.full ? [defaultBatch, 2000] : [defaultBatch]
    const res = new Resources(ctx.brokers)
    const rows: string[][] = []
    const runs: Record<string, unknown>[] = []
    const ratios = new Map<number, number[]>()
    const machineRatios: { batchSize: number; ratio: number }[] = []
    const parallelRatios: number[] = []
    let verifiedOk = true
    try {
      for (const batchSize of batchSizes) {
        const batchRatios: number[] = []
        ratios.set(batchSize, batchRatios)
        for (let rep = 0; rep < repetitions; rep++) {
          // Verify every run in short mode; in full mode the first of each batch size.
          const verify = !ctx.full || rep === 0
          const rawFirst = rep % 2 === 0
          let raw: RelayMetrics | undefined
          let ours: RelayRun | undefined
          for (const which of rawFirst ? ['raw', 'ours'] : ['ours', 'raw']) {
            if (which === 'raw') {
              raw = await rawProducerRun(ctx, res, { count, prefix: `r${rep}`, batchSize })
              ctx.log(`  batch ${batchSize}, rep ${rep + 1}: raw producer ${fmtInt(raw.rate)} msg/s`)
            } else {
              ours = await relayPrefilled(ctx, res, {
                count,
                prefix: `t${rep}`,
                verify,
                relay: { maxMessagesPerPoll: batchSize },
              })
              ctx.log(
                `  batch ${batchSize}, rep ${rep + 1}: relay ${fmtInt(ours.ours.rate)} msg/s${ours.verification ? `, ${verdict(ours.verification)}` : ''}`,
              )
            }
          }
          if (raw === undefined || ours === undefined) throw new Error('unreachable')
          // The client's own ceiling: the raw producer with several batches in flight (full mode).
          const rawParallel =
            ctx.full && batchSize === defaultBatch
              ? await rawProducerRun(ctx, res, {
                  count,
                  prefix: `p${rep}`,
                  batchSize,
                  inFlight: RAW_IN_FLIGHT,
                })
              : undefined
          if (rawParallel !== undefined) {
            parallelRatios.push(ours.ours.rate / rawParallel.rate)
            ctx.log(
              `  batch ${batchSize}, rep ${rep + 1}: raw producer, ${RAW_IN_FLIGHT} batches in flight ${fmtInt(rawParallel.rate)} msg/s`,
            )
          }
          const ratio = ours.ours.rate / raw.rate
          batchRatios.push(ratio)
          const relayMachine = machineCpu(ours.ours)
          const rawMachine = machineCpu(raw)
          if (relayMachine !== undefined && rawMachine !== undefined)
            machineRatios.push({ batchSize, ratio: relayMachine / rawMachine })
          if (ours.verification && !(ours.verification.ok && ours.verification.lost === 0)) verifiedOk = false
          rows.push([
            `batch ${batchSize}, rep ${rep + 1} (${rawFirst ? 'raw first' : 'relay first'})`,
            fmtInt(raw.rate),
            fmtInt(ours.ours.rate),
            fmtRatio(ratio),
            rawParallel === undefined ? '-' : fmtInt(rawParallel.rate),
            rawParallel === undefined ? '-' : fmtRatio(ours.ours.rate / rawParallel.rate),
            fmt(ours.ours.cpuPer100k, 2),
            fmtOptional(ours.ours.postgresCpuPer100k),
            fmt(raw.cpuPer100k, 2),
            relayMachine === undefined || rawMachine === undefined
              ? '-'
              : `${fmt(relayMachine, 2)} / ${fmt(rawMachine, 2)}`,
            fmt(ours.ours.roundTripsPerMessage, 4),
            fmt(ours.ours.statementsPerMessage, 4),
            verdict(ours.verification),
          ])
          runs.push({
            batchSize,
            repetition: rep + 1,
            rawFirst,
            raw: roundMetrics(raw),
            relay: roundMetrics(ours.ours),
            ratio: round(ratio, 3),
            verification: ours.verification && { ...ours.verification, summary: undefined },
            relayErrors: ours.errors,
          })
          await res.release()
        }
      }
    } finally {
      await res.release()
    }
    const medianRatio = median(ratios.get(defaultBatch) ?? [])
    const medians = batchSizes.map((size) => `batch ${size}: ${fmtRatio(median(ratios.get(size) ?? []))}`)
    const table: Table = {
      title: `1. Relay throughput: ${fmtInt(count)} pre-filled messages vs the raw producer (same client, same batch size)`,
      columns: [
        'run',
        'raw msg/s',
        'relay msg/s',
        'relay/raw',
        `raw msg/s, ${RAW_IN_FLIGHT} batches in flight`,
        `relay/raw (${RAW_IN_FLIGHT} in flight)`,
        'relay CPU s/100k',
        'PostgreSQL CPU s/100k (relay run)',
        'raw CPU s/100k',
        'machine CPU s/100k, relay / raw',
        'PG round trips/msg',
        'PG statements/msg',
        'delivery check',
      ],
      rows,
      notes: [
        `median relay/raw ratio: ${medians.join('; ')}`,
        `Batch ${defaultBatch} is the relay's default maxMessagesPerPoll. Relay and raw producer each run alone in a child process, after the same warm-up (producer connected, ${WARMUP_BATCHES} batches to a warm-up topic, one record per key to the measured topic; the relay also runs its claim ${WARMUP_CLAIMS} times inside a rolled-back transaction). Pre-fill is not timed.`,
        "CPU = that process (relay loop, pg and Kafka client; raw: Kafka client only). PostgreSQL CPU = every postgres process over the same span (the relay's backends, WAL writer, checkpointer), read from /proc. Machine CPU = the process + PostgreSQL + the broker's JVM: what one message costs the whole machine when all three share its cores.",
        ...(machineRatios.length > 0
          ? [
              `median machine-CPU ratio per message, relay run / raw run: ${batchSizes.map((size) => `batch ${size}: ${fmtRatio(median(machineRatios.filter((r) => r.batchSize === size).map((r) => r.ratio)))}`).join('; ')}`,
            ]
          : []),
        'Round trips and statements are counted in the relay\'s process by wrapping pg.Client#query (pg_stat_statements is not loaded): with a backlog, 1 round trip per batch, "DELETE; COMMIT; BEGIN; claim" (the delete of the previous batch rides with the next claim on the same session), 4 statements.',
      ],
    }
    return {
      id: this.id,
      title: this.title,
      tables: [table],
      targets: [
        {
          name: `relay throughput / raw producer (batch ${defaultBatch})`,
          target: '>= 0.5x',
          measured: `${fmtRatio(medianRatio)} (median of ${repetitions}${batchSizes.length > 1 ? `; ${medians.slice(1).join('; ')}` : ''})`,
          met: medianRatio >= 0.5,
        },
        ...(parallelRatios.length > 0
          ? [
              {
                name: `relay throughput / raw producer with ${RAW_IN_FLIGHT} batches in flight (batch ${defaultBatch})`,
                target: '>= 0.8x',
                measured: `${fmtRatio(median(parallelRatios))} (median of ${parallelRatios.length})`,
                met: median(parallelRatios) >= 0.8,
              },
            ]
          : []),
        {
          name: 'delivery check (lost 0, per-key order)',
          target: 'ok',
          measured: verifiedOk ? 'ok' : 'FAILED',
          met: verifiedOk,
        },
      ],
      data: {
        count,
        batchSizes,
        repetitions,
        medianRatio: round(medianRatio, 3),
        ...(parallelRatios.length > 0
          ? { medianRatioRawInFlight: round(median(parallelRatios), 3), rawInFlight: RAW_IN_FLIGHT }
          : {}),
        medianRatioByBatch: Object.fromEntries(
          batchSizes.map((size) => [size, round(median(ratios.get(size) ?? []), 3)]),
        ),
        medianMachineCpuRatioByBatch: Object.fromEntries(
          batchSizes.map((size) => [
            size,
            round(median(machineRatios.filter((r) => r.batchSize === size).map((r) => r.ratio)), 3),
          ]),
        ),
        runs,
      },
    }
  },
}

export function roundMetrics(m: RelayMetrics): Record<string, number> {
  return {
    messages: m.messages,
    seconds: round(m.seconds, 3),
    rate: round(m.rate, 0),
    cpuSeconds: round(m.cpuSeconds, 3),
    cpuPer100k: round(m.cpuPer100k, 3),
    ...(m.postgresCpuPer100k === undefined ? {} : { postgresCpuPer100k: round(m.postgresCpuPer100k, 3) }),
    ...(m.brokerCpuPer100k === undefined ? {} : { brokerCpuPer100k: round(m.brokerCpuPer100k, 3) }),
    roundTripsPerMessage: round(m.roundTripsPerMessage, 5),
    statementsPerMessage: round(m.statementsPerMessage, 5),
    roundTrips: m.roundTrips,
    statements: m.statements,
  }
}

/** The run's process + PostgreSQL + broker CPU seconds per 100k messages, when /proc was readable. */
function machineCpu(m: RelayMetrics): number | undefined {
  if (m.postgresCpuPer100k === undefined || m.brokerCpuPer100k === undefined) return undefined
  return m.cpuPer100k + m.postgresCpuPer100k + m.brokerCpuPer100k
}

function fmtOptional(value: number | undefined): string {
  return value === undefined ? '-' : fmt(value, 2)
}
