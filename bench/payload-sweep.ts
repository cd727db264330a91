// Payload sweep (issue 19): relay throughput in MB/s and the relay process's peak RSS against its
// byte budget (`maxBytesPerPoll`), for payloads of 256 B, 64 KB and 1 MB.
//
// Usage: node bench/payload-sweep.ts [--mb=<backlog MB per case>]   (`npm run bench:full` runs it)
// Needs about 8 x --mb (default 128) of free disk for PostgreSQL and Kafka.
// Env: KAFKA_BROKERS (use that broker instead of starting one), DATABASE_URL.
//
// Per case: a fresh PostgreSQL outbox is filled with a backlog of random (incompressible)
// payloads over 64 keys through the producer, then a relay with default options (pipelined,
// 500 messages a poll) and the case's budget drains it in a process of its own, so its RSS is the
// relay's alone. That process samples its RSS every 10 ms from just before `start()` (the
// baseline: Node, the drivers and connected clients) until the last message was acknowledged;
// "peak over baseline" is what the batches cost. Throughput counts key + value bytes.
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { bufferSerializer, defineTopic, RELAY_DEFAULTS } from '../src/index.ts'
import { createTopic, DATABASE_URL, deleteTopics, machineInfo, topicName } from './lib/env.ts'
import { benchBrokers } from './lib/kafka.ts'

const MiB = 1024 * 1024
const KEYS = 64

interface Case {
  payload: number
  label: string
  budget: number
  /** Bytes of payload in the backlog. */
  backlog: number
}

interface RelayReport {
  messages: number
  bytes: number
  seconds: number
  baselineRss: number
  peakRss: number
  maxRss: number
}

function log(message: string): void {
  process.stderr.write(`${message}\n`)
}

if (process.argv[2] === '--relay') {
  await relayProcess()
} else {
  await main()
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { mb: { type: 'string', default: '128' } } })
  const backlogBytes = Number(values.mb) * MiB
  if (!Number.isFinite(backlogBytes) || backlogBytes <= 0)
    throw new Error(`--mb must be a positive number, got ${values.mb}`)
  const cases: Case[] = [
    { payload: 256, label: '256 B', budget: RELAY_DEFAULTS.maxBytesPerPoll, backlog: backlogBytes / 8 },
    { payload: 64 * 1024, label: '64 KB', budget: RELAY_DEFAULTS.maxBytesPerPoll, backlog: backlogBytes },
    // Just under a topic's default largest message (1,000,000 bytes of key, value and headers).
    { payload: 999_000, label: '1 MB', budget: RELAY_DEFAULTS.maxBytesPerPoll, backlog: backlogBytes },
    // The same with a backlog 8 times larger: the peak must not grow with the backlog.
    { payload: 999_000, label: '1 MB', budget: RELAY_DEFAULTS.maxBytesPerPoll, backlog: 8 * backlogBytes },
    { payload: 999_000, label: '1 MB', budget: 4 * MiB, backlog: 8 * backlogBytes },
    // No case without an effective budget: 500 messages of 1 MB make one produce request of
    // about 500 MB, which a broker with default settings (socket.request.max.bytes 100 MB) drops,
    // so the relay retries it forever (see bench/results/2026-12-06-payload-sweep.md).
  ]
  const kafka = await benchBrokers()
  const brokers = kafka.brokers
  const machine = await machineInfo()
  log(
    `payload sweep: ${machine.nproc} CPUs, ${machine.memoryGiB} GiB, PostgreSQL ${machine.postgres}, Kafka ${machine.kafka}, Node ${machine.node}, load ${machine.loadAverage}; backlog ${values.mb} MB per case (256 B: 1/8 of it; 1 MB: also 8 times it)`,
  )
  const rows: string[] = []
  try {
    for (const c of cases) {
      const count = Math.max(1, Math.round(c.backlog / c.payload))
      const report = await runCase(brokers, c, count)
      const mb = report.bytes / 1e6
      const over = report.peakRss - report.baselineRss
      const row = `| ${c.label} | ${fmt(c.budget / MiB)} MiB | ${report.messages} | ${fmt(mb)} | ${fmt(report.seconds, 2)} | ${fmt(mb / report.seconds, 1)} | ${fmt(report.messages / report.seconds)} | ${fmt(report.baselineRss / MiB)} | ${fmt(report.peakRss / MiB)} | ${fmt(over / MiB)} | ${fmt(over / c.budget, 2)} |`
      rows.push(row)
      log(row)
    }
  } finally {
    await kafka.stop()
  }
  console.log(
    '| payload | maxBytesPerPoll | messages | MB relayed | s | MB/s | msg/s | baseline RSS MiB | peak RSS MiB | peak over baseline MiB | over baseline / budget |',
  )
  console.log('|---|---|---|---|---|---|---|---|---|---|---|')
  for (const row of rows) console.log(row)
}

function fmt(value: number, digits = 0): string {
  return value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
}

async function runCase(brokers: string[], c: Case, count: number): Promise<RelayReport> {
  const schema = `ke_sweep_${process.pid}_${c.payload}_${c.budget}`
  const topic = topicName(`sweep-${c.payload}`)
  // Kafka takes a produce request per partition as one record batch: with 1 MB messages, a batch
  // of several must pass the broker's default 1 MiB limit, so the topic allows 64 MiB.
  await createTopic(brokers, topic, { 'max.message.bytes': String(64 * MiB) })
  const outbox = createPgOutbox({
    topics: { t: defineTopic<Uint8Array>({ name: topic, serializer: bufferSerializer }) },
    schema,
  })
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 })
  try {
    await outbox.migrate(DATABASE_URL)
    const perTransaction = Math.max(1, Math.floor((4 * MiB) / c.payload))
    const began = performance.now()
    for (let written = 0; written < count; ) {
      const n = Math.min(perTransaction, count - written)
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        const topics = outbox.in(client)
        for (let i = 0; i < n; i++)
          await topics.t.produce(randomBytes(c.payload), { key: `key-${(written + i) % KEYS}` })
        await client.query('COMMIT')
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {})
        throw error
      } finally {
        client.release()
      }
      written += n
    }
    log(
      `${c.label}, budget ${c.budget / MiB} MiB: ${count} messages written in ${fmt((performance.now() - began) / 1000, 1)} s`,
    )
    return await new Promise<RelayReport>((resolve, reject) => {
      const child = fork(import.meta.filename, ['--relay'], {
        env: {
          ...process.env,
          SWEEP_SCHEMA: schema,
          SWEEP_TOPIC: topic,
          SWEEP_BUDGET: String(c.budget),
          SWEEP_COUNT: String(count),
          KAFKA_BROKERS: brokers.join(','),
        },
      })
      child.on('message', (message) => resolve(message as RelayReport))
      child.on('error', reject)
      child.on('exit', (code) => {
        if (code !== 0) reject(new Error(`relay process exited with ${code}`))
      })
    })
  } finally {
    await outbox.close()
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {})
    await pool.end()
    await deleteTopics(brokers, [topic]).catch(() => {})
  }
}

async function relayProcess(): Promise<void> {
  const schema = process.env.SWEEP_SCHEMA as string
  const topic = process.env.SWEEP_TOPIC as string
  const budget = Number(process.env.SWEEP_BUDGET)
  const count = Number(process.env.SWEEP_COUNT)
  const brokers = (process.env.KAFKA_BROKERS as string).split(',')
  const outbox = createPgOutbox({
    topics: { t: defineTopic<Uint8Array>({ name: topic, serializer: bufferSerializer }) },
    schema,
    kafka: { brokers },
  })
  let delivered = 0
  let done: () => void = () => {}
  const finished = new Promise<void>((resolve) => {
    done = resolve
  })
  const relay = outbox.relay({
    connection: DATABASE_URL,
    maxBytesPerPoll: budget,
    logger: false,
    onEvent: (event) => {
      if (event.type === 'delivered') {
        delivered += event.count
        if (delivered >= count) done()
      }
      if (event.type === 'error')
        process.stderr.write(`relay error (${event.stage}): ${String(event.error)}\n`)
    },
  })
  const sizes = await new pg.Client({ connectionString: DATABASE_URL })
  await sizes.connect()
  const bytes = Number(
    (
      await sizes.query(
        `SELECT coalesce(sum(coalesce(octet_length(key), 0) + coalesce(octet_length(value), 0)), 0)::text AS bytes FROM "${schema}".outbox`,
      )
    ).rows[0].bytes,
  )
  await sizes.end()
  globalThis.gc?.()
  const baselineRss = process.memoryUsage.rss()
  let peakRss = baselineRss
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss())
  }, 10)
  const began = performance.now()
  await relay.start()
  await finished
  const seconds = (performance.now() - began) / 1000
  clearInterval(sampler)
  peakRss = Math.max(peakRss, process.memoryUsage.rss())
  await relay.stop()
  await outbox.close()
  const report: RelayReport = {
    messages: delivered,
    bytes,
    seconds,
    baselineRss,
    peakRss,
    maxRss: process.resourceUsage().maxRSS * 1024,
  }
  process.send?.(report)
  process.disconnect?.()
}
