// Consumer throughput with the inbox against a bare consumer of the same client (issue 21).
// Usage: KAFKA_BROKERS=host:port node bench/consumer.ts [--messages=10000] [--partitions=4]
// Three runs on one topic, each with its own consumer group, reading the same 256-byte messages:
//   bare:           consume(), handler does nothing
//   bare + write:   consume(), handler writes one row with its own autocommit statement
//   inbox:          outbox.consume() on node-postgres, the same row inside the inbox transaction
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { consume } from '../src/consumer/consume.ts'
import type { KafkaConsumer } from '../src/consumer/kafka-consumer.ts'
import { defineTopic } from '../src/core/topic.ts'
import { createTopic, deleteTopic, produceRaw, uniqueName } from '../test/consumer/kafka.ts'

const { values } = parseArgs({
  options: { messages: { type: 'string', default: '10000' }, partitions: { type: 'string', default: '4' } },
})
const total = Number(values.messages)
const partitions = Number(values.partitions)
const brokers = (process.env.KAFKA_BROKERS ?? '').split(',').filter(Boolean)
if (brokers.length === 0) {
  console.error('set KAFKA_BROKERS (e.g. from `KAFKA_PORT=19592 npm run kafka start`)')
  process.exit(1)
}
const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const kafka = { brokers, clientId: 'k-entity-bench-consumer' }
const topic = uniqueName('ke-bench-consumer')
const schema = uniqueName('ke_bench_consumer').replaceAll('-', '_')
const pool = new pg.Pool({ connectionString: url, max: partitions + 2 })
const events = defineTopic<{ id: number; pad: string }>({ name: topic, key: (event) => String(event.id) })

async function timed(name: string, start: () => KafkaConsumer<{ id: number; pad: string }>): Promise<number> {
  const began = performance.now()
  const consumer = start()
  while (consumer.counts.handled < total) await new Promise((resolve) => setTimeout(resolve, 20))
  const seconds = (performance.now() - began) / 1000
  await consumer.close()
  const rate = total / seconds
  console.log(
    `${name.padEnd(14)} ${String(Math.round(rate)).padStart(7)} msg/s  (${total} in ${seconds.toFixed(2)} s)`,
  )
  return rate
}

try {
  await createTopic(brokers, topic, partitions)
  await pool.query(`CREATE SCHEMA "${schema}"`)
  await pool.query(`CREATE TABLE "${schema}".effects (id integer PRIMARY KEY)`)
  const outbox = createPgOutbox({ topics: { events }, schema, kafka })
  await outbox.migrateInbox(url)
  const pad = 'x'.repeat(256 - 30)
  const messages = []
  for (let id = 0; id < total; id++) messages.push({ key: String(id), value: JSON.stringify({ id, pad }) })
  await produceRaw(brokers, topic, messages)
  const common = { logger: false as const, maxWaitMs: 100 }
  const bare = await timed('bare', () =>
    consume(events, { ...common, kafka, groupId: uniqueName('bare'), handler: async () => {} }),
  )
  await pool.query(`TRUNCATE "${schema}".effects`)
  const write = await timed('bare + write', () =>
    consume(events, {
      ...common,
      kafka,
      groupId: uniqueName('write'),
      handler: async (message) => {
        await pool.query(`INSERT INTO "${schema}".effects (id) VALUES ($1)`, [
          (message.value as { id: number }).id,
        ])
      },
    }),
  )
  await pool.query(`TRUNCATE "${schema}".effects`)
  const inbox = await timed('inbox', () =>
    outbox.consume(events, {
      ...common,
      groupId: uniqueName('inbox'),
      db: pool,
      handler: async (message, client) => {
        await client.query(`INSERT INTO "${schema}".effects (id) VALUES ($1)`, [
          (message.value as { id: number }).id,
        ])
      },
    }),
  )
  console.log(
    `inbox / bare: ${(inbox / bare).toFixed(3)}x; inbox / bare + write: ${(inbox / write).toFixed(3)}x (${partitions} partitions, 256-byte messages)`,
  )
} finally {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
  await pool.end()
  await deleteTopic(brokers, topic)
}
