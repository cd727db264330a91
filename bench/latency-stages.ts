// Scenario 3's LISTEN row, split into stages, with an earlier relay run alternately beside this
// one, and the raw producer's own latency for single small sends at the same rate (the floor).
//
// Usage: node bench/latency-stages.ts [--before <rev>] [--reps 3] [--duration-ms 5000] [--rate 1000]
//          [--config 'label|<rev>|{"listen":true}' ...] [--raw]
// A config's <rev> is `after` (this checkout, uncommitted changes included), `before` (--before's
// revision) or any git revision.
// Env: KAFKA_BROKERS (else a broker with Kafka's server JVM settings is started), DATABASE_URL.
//
// An earlier revision's relay (its src/) is run by this checkout's bench code, in a tree under
// $TMPDIR (git archive of src/, this bench/, a link to node_modules). The writers always run
// this checkout's outbox, so a change on the writers' side is not compared by it.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { type KafkaBroker, startKafkaBroker } from '../scripts/kafka-broker.ts'
import { createTopic, DATABASE_URL, deleteTopics, loadAverage, Resources, topicName } from './lib/env.ts'
import { rawProducer, toKafkaMessage, warmupBatch, warmupRecord } from './lib/kafka.ts'
import { measureLatency } from './lib/latency.ts'
import type { StageBreakdown } from './lib/latency-stages.ts'
import { type Distribution, distribution, round, sleep, wallNow } from './lib/stats.ts'
import { benchRecords } from './lib/workload.ts'

const ROOT = resolve(import.meta.dirname, '..')

function log(message: string): void {
  process.stderr.write(`${message}\n`)
}

interface Config {
  label: string
  /** `after`, `before` or a git revision. */
  tree: string
  relayOptions: Record<string, unknown>
}

function parseConfig(text: string): Config {
  const [label, tree, options] = text.split('|')
  if (!label || !tree) throw new Error(`--config must be 'label|<rev>|{...}', got ${text}`)
  return { label, tree, relayOptions: options ? (JSON.parse(options) as Record<string, unknown>) : {} }
}

/** This checkout's bench/ over `rev`'s src/, sharing node_modules: only the relay differs. */
function beforeTree(rev: string): string {
  const commit = execFileSync('git', ['rev-parse', '--verify', `${rev}^{commit}`], { cwd: ROOT })
    .toString()
    .trim()
  const dir = join(tmpdir(), 'k-entity-latency-before', commit.slice(0, 12))
  if (!existsSync(join(dir, 'src'))) {
    mkdirSync(dir, { recursive: true })
    execFileSync(
      'sh',
      ['-c', `git archive ${commit} src scripts package.json tsconfig.json | tar -x -C '${dir}'`],
      {
        cwd: ROOT,
      },
    )
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'))
  }
  // Always this checkout's bench code, so both sides are measured the same way.
  cpSync(join(ROOT, 'bench'), join(dir, 'bench'), { recursive: true })
  return dir
}

const ms = (value: number) => (Number.isFinite(value) ? value.toFixed(1) : String(value))
const pair = (d: Distribution) => `${ms(d.p50)}/${ms(d.p99)}`

/**
 * The floor: single-message sends of the bench's records at `rate` (open loop, each one on its
 * own, as many in flight as the producer takes), latency from its scheduled time to its ack.
 */
async function rawFloor(
  brokers: string[],
  warmupTopic: string,
  topic: string,
  rate: number,
  durationMs: number,
) {
  const producer = rawProducer(brokers)
  try {
    await producer.send({ messages: [toKafkaMessage(warmupRecord(warmupTopic))] })
    for (let batch = 0; batch < 10; batch++) {
      await producer.send({ messages: warmupBatch(warmupTopic, batch).map(toKafkaMessage) })
    }
    const total = Math.round((rate * durationMs) / 1000)
    const records = benchRecords(topic, 'raw', 0, total).map(toKafkaMessage)
    const latencies: number[] = []
    const pending: Promise<void>[] = []
    const t0 = wallNow() + 20
    for (let i = 0; i < total; i++) {
      const due = t0 + (i * 1000) / rate
      const wait = due - wallNow()
      if (wait >= 1) await sleep(wait)
      pending.push(
        producer.send({ messages: [records[i] as ReturnType<typeof toKafkaMessage>] }).then(() => {
          latencies.push(wallNow() - due)
        }),
      )
    }
    await Promise.all(pending)
    return distribution(latencies)
  } finally {
    await producer.close()
  }
}

function stageLine(stages: StageBreakdown | undefined): string {
  if (stages === undefined) return 'stages: not joined'
  const t = stages.tail
  return [
    `wait ${pair(stages.wait)}`,
    `claim ${pair(stages.claim)}`,
    `gap ${pair(stages.gap)}`,
    `send ${pair(stages.send)}`,
    `| slowest 1%: wait ${ms(t.wait)} claim ${ms(t.claim)} gap ${ms(t.gap)} send ${ms(t.send)}`,
    `| batch ${ms(stages.batchSize.p50)}/${ms(stages.batchSize.max)} msgs, delete ${pair(stages.deleteMs)}, idle ${pair(stages.idleBetweenBatches)}`,
    `| loop delay p99 ${ms(stages.loopDelay.p99)} max ${ms(stages.loopDelay.max)}, gc ${stages.gc.count}x max ${ms(stages.gc.maxMs)}`,
  ].join(' ')
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      before: { type: 'string' },
      reps: { type: 'string', default: '3' },
      'duration-ms': { type: 'string', default: '5000' },
      rate: { type: 'string', default: '1000' },
      config: { type: 'string', multiple: true },
      raw: { type: 'boolean', default: false },
    },
  })
  const reps = Number(values.reps)
  const durationMs = Number(values['duration-ms'])
  const rate = Number(values.rate)
  const configs = (values.config ?? []).map(parseConfig)
  if (configs.length === 0) {
    if (values.before !== undefined) configs.push(parseConfig('before listen|before|{"listen":true}'))
    configs.push(parseConfig('after listen|after|{"listen":true}'))
  }
  if (configs.some((c) => c.tree === 'before') && values.before === undefined)
    throw new Error('--before <rev> is needed')
  const workers = new Map<string, string>()
  for (const { tree } of configs) {
    if (tree === 'after' || workers.has(tree)) continue
    workers.set(
      tree,
      join(beforeTree(tree === 'before' ? (values.before as string) : tree), 'bench/lib/worker.ts'),
    )
  }
  let broker: KafkaBroker | undefined
  let brokers: string[]
  if (process.env.KAFKA_BROKERS) brokers = process.env.KAFKA_BROKERS.split(',')
  else {
    broker = await startKafkaBroker({ jvm: 'server' })
    brokers = [broker.brokers]
  }
  const warmupTopic = topicName('warmup')
  const results: Record<
    string,
    {
      total: Distribution
      stages: StageBreakdown | undefined
      load: string
      achieved: number
      cpu: number | undefined
      roundTrips: number | undefined
    }[]
  > = {}
  const raws: { latency: Distribution; load: string }[] = []
  try {
    await createTopic(brokers, warmupTopic)
    const ctx = {
      full: false,
      brokers,
      databaseUrl: DATABASE_URL,
      features: undefined as never,
      warmupTopic,
      log,
    }
    log(`latency stages at ${rate} msg/s, ${durationMs} ms per run, ${reps} reps; load ${loadAverage()}`)
    for (let rep = 0; rep < reps; rep++) {
      // Alternating order, so neither side always runs first after the other's leftovers.
      const order = rep % 2 === 0 ? configs : [...configs].reverse()
      for (const config of order) {
        const res = new Resources(brokers)
        try {
          const loadBefore = loadAverage()
          const run = await measureLatency(ctx, res, {
            label: config.label,
            rate,
            durationMs,
            connections: 4,
            placement: 'child',
            relayOptions: config.relayOptions,
            stages: true,
            ...(config.tree === 'after' ? {} : { workerModule: workers.get(config.tree) as string }),
          })
          const entry = {
            total: run.latency,
            stages: run.stages,
            load: loadBefore,
            achieved: run.achievedRate,
            cpu: run.relayCpuPercent,
            roundTrips: run.roundTripsPerMessage,
          }
          const runs = results[config.label] ?? []
          runs.push(entry)
          results[config.label] = runs
          log(
            `rep ${rep + 1} ${config.label}: p50/p99 ${pair(run.latency)} ms, achieved ${Math.round(run.achievedRate)}/s, acked ${run.acknowledged}/${run.committed}, load ${loadBefore}${run.errors.length ? `, errors: ${run.errors.slice(0, 3).join('; ')}` : ''}`,
          )
          log(`  ${stageLine(run.stages)}`)
        } finally {
          await res.release()
        }
      }
      if (values.raw) {
        const topic = topicName('rawfloor')
        await createTopic(brokers, topic)
        try {
          const loadBefore = loadAverage()
          const latency = await rawFloor(brokers, warmupTopic, topic, rate, durationMs)
          raws.push({ latency, load: loadBefore })
          log(`rep ${rep + 1} raw producer, single sends: p50/p99 ${pair(latency)} ms, load ${loadBefore}`)
        } finally {
          await deleteTopics(brokers, [topic])
        }
      }
    }
    console.log(
      `\n| configuration | run | achieved msg/s | p50 ms | p99 ms | wait p50/p99 | claim p50/p99 | send p50/p99 | relay CPU | PG round trips/msg | load (1/5/15 min) |`,
    )
    console.log('|---|---|---|---|---|---|---|---|---|---|---|')
    for (const [label, runs] of Object.entries(results)) {
      runs.forEach((r, i) => {
        const s = r.stages
        console.log(
          `| ${label} | ${i + 1} | ${Math.round(r.achieved)} | ${ms(r.total.p50)} | ${ms(r.total.p99)} | ${s ? pair(s.wait) : '-'} | ${s ? pair(s.claim) : '-'} | ${s ? pair(s.send) : '-'} | ${r.cpu === undefined ? '-' : `${Math.round(r.cpu)}%`} | ${r.roundTrips === undefined ? '-' : r.roundTrips.toFixed(3)} | ${r.load} |`,
        )
      })
    }
    for (const [i, r] of raws.entries()) {
      console.log(
        `| raw producer, single sends | ${i + 1} | - | ${ms(r.latency.p50)} | ${ms(r.latency.p99)} | - | - | - | - | - | ${r.load} |`,
      )
    }
    console.log(
      JSON.stringify({
        rate,
        durationMs,
        results: Object.fromEntries(
          Object.entries(results).map(([label, runs]) => [
            label,
            runs.map((r) => ({
              achieved: Math.round(r.achieved),
              p50: round(r.total.p50),
              p99: round(r.total.p99),
              cpu: r.cpu === undefined ? null : round(r.cpu, 1),
              roundTrips: r.roundTrips === undefined ? null : round(r.roundTrips, 3),
              load: r.load,
            })),
          ]),
        ),
        raw: raws.map((r) => ({ p50: round(r.latency.p50), p99: round(r.latency.p99), load: r.load })),
      }),
    )
  } finally {
    await deleteTopics(brokers, [warmupTopic])
    await broker?.stop()
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    log(error instanceof Error ? (error.stack ?? error.message) : String(error))
    process.exit(1)
  },
)
