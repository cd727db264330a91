// `npm run bench` (short mode, a few minutes, run in CI so it cannot rot) and
// `npm run bench:full` (the numbers for BENCHMARKS.md).
//
// Usage: node bench/run.ts [--full] [--only=throughput,latency|1,3]
// Env: KAFKA_BROKERS (use that broker instead of starting one), DATABASE_URL.
// Prints one table per scenario and the targets, and writes bench-results/<timestamp>.json and
// bench-results/latest.json.
import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { type KafkaBroker, startKafkaBroker } from '../scripts/kafka-broker.ts'
import type { BenchContext, Scenario } from './lib/context.ts'
import { createTopic, DATABASE_URL, deleteTopics, machineInfo, topicName } from './lib/env.ts'
import { detectFeatures } from './lib/features.ts'
import { formatTable, type RunReport, type ScenarioResult, targetsTable, writeReport } from './lib/report.ts'
import { backlog } from './scenarios/backlog.ts'
import { latency } from './scenarios/latency.ts'
import { peer } from './scenarios/peer.ts'
import { scaling } from './scenarios/scaling.ts'
import { throughput } from './scenarios/throughput.ts'
import { writePath } from './scenarios/write-path.ts'

const SCENARIOS: Scenario[] = [throughput, writePath, latency, backlog, scaling, peer]

function log(message: string): void {
  process.stderr.write(`${message}\n`)
}

function selectScenarios(only: string | undefined): Scenario[] {
  if (only === undefined) return SCENARIOS
  const wanted = only.split(',').map((name) => name.trim().toLowerCase())
  const selected = SCENARIOS.filter(
    (scenario) => wanted.includes(scenario.id) || wanted.includes(String(scenario.number)),
  )
  const known = new Set(SCENARIOS.flatMap((scenario) => [scenario.id, String(scenario.number)]))
  const unknown = wanted.filter((name) => !known.has(name))
  if (unknown.length > 0 || selected.length === 0) {
    throw new Error(
      `--only: unknown scenario ${unknown.join(', ') || only}; choose from ${SCENARIOS.map((s) => `${s.number}|${s.id}`).join(', ')}`,
    )
  }
  return selected
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      full: { type: 'boolean', default: false },
      only: { type: 'string' },
      profile: { type: 'string' },
      help: { type: 'boolean' },
    },
  })
  if (values.help) {
    log('usage: node bench/run.ts [--full] [--only=<scenario>[,<scenario>...]] [--profile=<dir>]')
    log(`scenarios: ${SCENARIOS.map((s) => `${s.number}|${s.id}`).join(', ')}`)
    return 0
  }
  const full = values.full === true
  if (values.profile !== undefined) {
    // Read by every worker process (bench/lib/worker.ts), which profiles its timed span.
    const dir = resolve(values.profile)
    mkdirSync(dir, { recursive: true })
    process.env.K_ENTITY_BENCH_PROFILE = dir
    log(`CPU profiles of each worker's timed span go to ${dir} (open them in Chrome DevTools)`)
  }
  const scenarios = selectScenarios(values.only)
  const startedAt = new Date()
  const features = detectFeatures()
  let broker: KafkaBroker | undefined
  let brokers: string[]
  if (process.env.KAFKA_BROKERS) {
    brokers = process.env.KAFKA_BROKERS.split(',')
  } else {
    // Kafka's own JVM defaults, not the light test profile: latency would measure its compiler.
    broker = await startKafkaBroker({ jvm: 'server' })
    brokers = [broker.brokers]
  }
  const results: ScenarioResult[] = []
  const warmupTopic = topicName('warmup')
  try {
    await createTopic(brokers, warmupTopic)
    const ctx: BenchContext = { full, brokers, databaseUrl: DATABASE_URL, features, warmupTopic, log }
    const machine = await machineInfo()
    log(
      `k-entity bench (${full ? 'full' : 'short'} mode): ${machine.nproc} CPUs, ${machine.memoryGiB} GiB, PostgreSQL ${machine.postgres}, Kafka ${machine.kafka}, Node ${machine.node}, load ${machine.loadAverage}`,
    )
    log(
      `relay features: concurrent mode ${features.concurrent ? 'yes' : 'no'}, wake-up ${features.wakeUpOption ?? 'no'}`,
    )
    for (const scenario of scenarios) {
      log(`\n== ${scenario.number}. ${scenario.title}`)
      const began = performance.now()
      let result: ScenarioResult
      try {
        result = await scenario.run(ctx)
      } catch (error) {
        const message = error instanceof Error ? (error.stack ?? error.message) : String(error)
        log(`scenario ${scenario.id} failed: ${message}`)
        result = {
          id: scenario.id,
          title: scenario.title,
          tables: [],
          targets: [{ name: 'scenario ran', target: 'no error', measured: 'failed', met: false }],
          data: {},
          error: message,
        }
      }
      result.durationS = Math.round((performance.now() - began) / 100) / 10
      results.push(result)
      for (const table of result.tables) console.log(`\n${formatTable(table)}`)
      log(`(${scenario.id}: ${result.durationS} s)`)
    }
    console.log(`\n${formatTable(targetsTable(results))}`)
    const report: RunReport = {
      version: 1,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      mode: full ? 'full' : 'short',
      command: `node bench/run.ts ${process.argv.slice(2).join(' ')}`.trim(),
      machine: { ...machine, sharedMachineNote: process.env.BENCH_MACHINE_NOTE ?? null },
      features: { ...features },
      scenarios: results,
    }
    const path = await writeReport(report)
    log(`\nresults: ${path} (and bench-results/latest.json)`)
    return results.some((result) => result.error !== undefined) ? 1 : 0
  } finally {
    await deleteTopics(brokers, [warmupTopic])
    await broker?.stop()
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    log(error instanceof Error ? (error.stack ?? error.message) : String(error))
    process.exit(1)
  },
)
