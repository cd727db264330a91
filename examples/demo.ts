/**
 * k-entity demo: an order service that writes orders and their OrderCreated events in the same
 * transactions, rolls some back on purpose, relays the outbox to Kafka, reads the topic back and
 * checks that exactly the committed events arrived, in order per customer.
 *
 *   npm run demo                      # local PostgreSQL, a Kafka broker started for the demo
 *   DATABASE_URL=... KAFKA_BROKERS=... npm run demo -- --seconds 10
 */
import { randomBytes } from 'node:crypto'
import { userInfo } from 'node:os'
import { parseArgs } from 'node:util'
import { Admin } from '@platformatic/kafka'
import pg from 'pg'
import { type KafkaBroker, startKafkaBroker } from '../scripts/kafka-broker.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { defineTopic, type RelayEvent } from '../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  type TrackedMessage,
  trackingHeaders,
} from '../src/testing/index.ts'

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    writers: { type: 'string', default: '4' },
    customers: { type: 'string', default: '20' },
    'rollback-rate': { type: 'string', default: '0.2' },
  },
})
const seconds = Number(args.seconds)
const writers = Number(args.writers)
const customers = Number(args.customers)
const rollbackRate = Number(args['rollback-rate'])

interface OrderCreated {
  orderId: string
  customerId: string
  total: number
  seq: number
}

// 1. Map the topic once: name, key, headers, serializer (JSON by default), outbox on.
const runId = randomBytes(3).toString('hex')
const orderCreated = defineTopic<OrderCreated>({
  name: `demo.orders.created.${runId}`,
  key: (event) => event.customerId,
  headers: (event) => ({ 'event-type': 'OrderCreated', ...trackingHeaders(event.orderId, event.seq) }),
})

async function main(): Promise<number> {
  const databaseUrl = process.env.DATABASE_URL ?? `postgres://${userInfo().username}@127.0.0.1:5432/test`
  let broker: KafkaBroker | undefined
  if (!process.env.KAFKA_BROKERS) broker = await startKafkaBroker()
  const brokers = process.env.KAFKA_BROKERS?.split(',') ?? [broker?.brokers as string]
  console.log(
    `k-entity demo · PostgreSQL ${redact(databaseUrl)} · Kafka ${brokers.join(',')}${broker ? ' (started for the demo)' : ''}`,
  )

  const schema = 'k_entity_demo'
  const outbox = createPgOutbox({ topics: { orderCreated }, schema, kafka: { brokers } })
  const pool = new pg.Pool({ connectionString: databaseUrl, max: writers + 1 })
  try {
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
    await outbox.migrate(databaseUrl)
    await pool.query(
      `CREATE TABLE ${schema}.orders (id text PRIMARY KEY, customer_id text NOT NULL, total numeric NOT NULL)`,
    )
    await createTopic(brokers, orderCreated.name)

    // 2. Run the relay: polls the outbox, wakes at commit, deletes what Kafka acknowledged.
    const events = { delivered: 0, errors: 0 }
    const relay = outbox.relay({
      connection: databaseUrl,
      mode: 'single',
      pollingInterval: 1000,
      maxMessagesPerPoll: 500,
      onEvent: (event: RelayEvent) => {
        if (event.type === 'delivered') events.delivered += event.count
        if (event.type === 'error') events.errors++
      },
    })
    await relay.start()

    // 3. Business transactions: the order row and its event commit or roll back together.
    const committed: TrackedMessage[] = []
    const rolledBack: TrackedMessage[] = []
    const commitTimes = new Map<string, number>()
    const deadline = Date.now() + seconds * 1000
    let orderNo = 0
    await Promise.all(
      Array.from({ length: writers }, async (_, writer) => {
        const seqs = new Map<string, number>()
        while (Date.now() < deadline) {
          // Each writer owns its customers, so its own order is the commit order per key.
          const customerId = `customer-${writer}-${orderNo % Math.max(1, Math.floor(customers / writers))}`
          const seq = (seqs.get(customerId) ?? 0) + 1
          seqs.set(customerId, seq)
          const event: OrderCreated = {
            orderId: `order-${orderNo++}`,
            customerId,
            total: 10 + (orderNo % 90),
            seq,
          }
          const tracked = { id: event.orderId, key: customerId, seq }
          const rollBack = Math.random() < rollbackRate
          try {
            await outbox.transaction(pool, async (client, topics) => {
              await client.query(
                `INSERT INTO ${schema}.orders (id, customer_id, total) VALUES ($1, $2, $3)`,
                [event.orderId, event.customerId, event.total],
              )
              await topics.orderCreated.produce(event)
              if (rollBack) throw new Error('payment declined')
            })
            commitTimes.set(event.orderId, Date.now())
            committed.push(tracked)
          } catch (error) {
            if (!rollBack) throw error
            rolledBack.push(tracked)
          }
        }
      }),
    )

    // 4. Read the topic back and check it.
    const consumed = await readTopic({
      brokers,
      topic: orderCreated.name,
      expectedCount: committed.length,
      timeoutMs: 60_000,
    })
    await relay.stop()
    const report = checkDelivery({
      expected: committed,
      forbidden: rolledBack,
      observed: observedFromConsumed(consumed),
    })
    const { rows } = await pool.query(
      `SELECT (SELECT count(*) FROM ${schema}.orders)::int AS orders, (SELECT count(*) FROM ${schema}.outbox)::int AS waiting`,
    )
    const latencies = consumed
      .filter((m) => m.headers.some(([name]) => name === 'ke-check-id'))
      .map((m) => {
        const id = m.headers.find(([name]) => name === 'ke-check-id')?.[1]?.toString() ?? ''
        return Number(m.timestamp) - (commitTimes.get(id) ?? Number(m.timestamp))
      })
      .sort((a, b) => a - b)

    console.log('')
    console.log(
      `committed          ${committed.length} (${(committed.length / seconds).toFixed(0)} transactions/s; ${rows[0].orders} order rows)`,
    )
    console.log(`rolled back        ${rolledBack.length}`)
    console.log(`delivered          ${report.delivered}`)
    console.log(`lost               ${report.lost}`)
    console.log(`phantom            ${report.phantom}`)
    console.log(`duplicates         ${report.duplicates}`)
    console.log(`out-of-order       ${report.outOfOrder}`)
    console.log(`left in outbox     ${rows[0].waiting}`)
    console.log(`commit→Kafka p50   ${percentile(latencies, 0.5)} ms`)
    console.log(`commit→Kafka p99   ${percentile(latencies, 0.99)} ms`)
    console.log(`relay errors       ${events.errors}`)
    if (!report.ok) console.log(`\n${formatReport(report)}`)
    console.log(
      report.ok
        ? '\nOK: every committed event delivered, no rolled-back event delivered, order kept per customer.'
        : '\nFAILED',
    )
    return report.ok ? 0 : 1
  } finally {
    await outbox.close()
    await pool.end()
    await broker?.stop()
  }
}

/** LogAppendTime makes the broker stamp each record when it is written: the delivery time. */
async function createTopic(brokers: string[], name: string): Promise<void> {
  const admin = new Admin({ clientId: 'k-entity-demo', bootstrapBrokers: brokers })
  try {
    await admin.createTopics({
      topics: [name],
      partitions: 6,
      replicas: 1,
      configs: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }],
    })
  } finally {
    await admin.close()
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number
}

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]+@/, '//$1:***@')
}

process.exitCode = await main()
