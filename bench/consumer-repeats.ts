// The inbox consumer when some messages come twice, as a relay's resend after a fault sends them
// (same ke-message-id, a later offset): a batch holding one fails on the inbox's primary key and
// is handled again in parts (src/consumer/failed-batch.ts).
// Usage: [KAFKA_BROKERS=host:port] node bench/consumer-repeats.ts [--rate=0.001] [--messages=50000]
//          [--reps=3] [--root=<another checkout, to run its code side by side>]
// Each message is repeated with probability --rate, its copy 1-49 messages later; 4 partitions,
// 256-byte messages, PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test),
// the default batchSize and maxInFlight. A run is timed from the first handled message until every
// copy was handled or skipped. With --root, that checkout's consumer runs too, alternating with
// this one's (the checkout needs its node_modules).
import { randomInt } from 'node:crypto'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createTopic, deleteTopic, produceRaw, uniqueName } from '../test/consumer/kafka.ts'
import { loadAverage } from './lib/env.ts'
import { benchBrokers } from './lib/kafka.ts'
import { midpointMedian, minMax } from './lib/stats.ts'

const { values } = parseArgs({
  options: {
    rate: { type: 'string', default: '0.001' },
    messages: { type: 'string', default: '50000' },
    reps: { type: 'string', default: '3' },
    root: { type: 'string' },
  },
})
const rate = Number(values.rate)
const total = Number(values.messages)
const reps = Number(values.reps)
if (
  !(rate >= 0 && rate <= 1) ||
  !Number.isInteger(total) ||
  total < 1 ||
  !Number.isInteger(reps) ||
  reps < 1
) {
  console.error('--rate must be 0-1, --messages and --reps positive integers')
  process.exit(1)
}
const roots = [resolve(import.meta.dirname, '..'), ...(values.root ? [resolve(values.root)] : [])]
const broker = await benchBrokers()
const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const pool = new pg.Pool({ connectionString: url, max: 6 })
const topic = uniqueName('ke-bench-repeats')
const schema = uniqueName('ke_bench_repeats').replaceAll('-', '_')

/** What this bench uses of an outbox loaded from a checkout (typed by neither side's sources). */
interface CheckoutOutbox {
  consume(
    topic: unknown,
    options: object,
  ): { counts: { handled: number; duplicates: number; batches: number }; close(): Promise<void> }
}

type Sent = { key: string; value: string; headers: { [name: string]: string } }
const pad = 'x'.repeat(200)
const record = (id: number): Sent => ({
  key: String(id),
  value: JSON.stringify({ id, pad }),
  headers: { 'ke-message-id': `m-${id}` },
})
const records: Sent[] = []
const copies = new Map<number, number[]>()
for (let id = 0; id < total; id++) {
  records.push(record(id))
  if (Math.random() < rate) {
    const at = id + randomInt(1, 50)
    copies.set(at, [...(copies.get(at) ?? []), id])
  }
  for (const again of copies.get(id) ?? []) records.push(record(again))
}

try {
  console.log(`consumer-repeats: load ${loadAverage()}`)
  await createTopic(broker.brokers, topic, 4)
  await produceRaw(broker.brokers, topic, records)
  await pool.query(`CREATE SCHEMA "${schema}"`)
  const rates = new Map<string, number[]>(roots.map((root) => [root, []]))
  // Each checkout's outbox, made (and its inbox migrated) once.
  const outboxes = new Map<string, { outbox: CheckoutOutbox; events: unknown }>()
  for (const root of roots) {
    const { createPgOutbox } = await import(`${root}/src/adapters/pg/index.ts`)
    const { defineTopic } = await import(`${root}/src/core/topic.ts`)
    const events = defineTopic({ name: topic })
    const outbox = createPgOutbox({ topics: { events }, schema, kafka: { brokers: broker.brokers } })
    await outbox.migrateInbox(url)
    outboxes.set(root, { outbox, events })
  }
  for (let rep = 0; rep < reps; rep++) {
    for (const root of rep % 2 === 0 ? roots : [...roots].reverse()) {
      const { outbox, events } = outboxes.get(root) as { outbox: CheckoutOutbox; events: unknown }
      await pool.query(`TRUNCATE "${schema}".outbox_inbox`)
      let began: number | undefined
      const consumer = outbox.consume(events, {
        groupId: uniqueName('g'),
        logger: false,
        maxWaitMs: 100,
        db: pool,
        handler: async () => {
          began ??= performance.now()
        },
      })
      const deadline = Date.now() + 600_000
      while (consumer.counts.handled + consumer.counts.duplicates < records.length) {
        if (Date.now() > deadline) throw new Error(`${root}: not done in 600 s`)
        await new Promise((resolveWait) => setTimeout(resolveWait, 5))
      }
      const perSecond = records.length / ((performance.now() - (began ?? 0)) / 1000)
      const { handled, duplicates, batches } = consumer.counts
      await consumer.close()
      rates.get(root)?.push(perSecond)
      console.log(
        `  ${root}: ${Math.round(perSecond)} msg/s; handled ${handled}, skipped ${duplicates}, ${batches} batches`,
      )
    }
  }
  console.log(
    `${total} messages + ${records.length - total} repeated (rate ${rate}), ${reps} reps, load ${loadAverage()}:`,
  )
  for (const [root, xs] of rates)
    console.log(`  ${root}: ${Math.round(midpointMedian(xs))} msg/s (${minMax(xs, 0)})`)
} finally {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {})
  await pool.end()
  await deleteTopic(broker.brokers, topic).catch(() => {})
  await broker.stop()
}
