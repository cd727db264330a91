/**
 * k-entity demo: an order service that writes orders and their OrderCreated events in the same
 * transactions, rolls some back on purpose, relays the outbox to Kafka, reads the topic back and
 * checks that exactly the committed events arrived, in order per customer.
 *
 *   npm run demo                      # embedded PostgreSQL (PGlite), a Kafka broker started for it
 *   DATABASE_URL=postgres://... npm run demo   # your PostgreSQL instead
 *   KAFKA_BROKERS=127.0.0.1:9092 npm run demo -- --seconds 10 --db postgres
 */
import { randomBytes } from 'node:crypto'
import { userInfo } from 'node:os'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { type KafkaBroker, startKafkaBroker } from '../scripts/kafka-broker.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { openPgliteOutbox } from '../src/adapters/pglite/index.ts'
import { defineTopic, type OutboxRelay, type RelayEvent, type RelayOptions } from '../src/index.ts'
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
    writers: { type: 'string' },
    customers: { type: 'string', default: '20' },
    'rollback-rate': { type: 'string', default: '0.2' },
    db: { type: 'string' },
  },
})
const seconds = Number(args.seconds)
const customers = Number(args.customers)
const rollbackRate = Number(args['rollback-rate'])
const useDatabase = args.db ?? (process.env.DATABASE_URL ? 'postgres' : 'pglite')
if (useDatabase !== 'postgres' && useDatabase !== 'pglite')
  throw new Error(`--db must be postgres or pglite, got ${useDatabase}`)
const writers = Number(args.writers ?? 4)

interface OrderCreated {
  orderId: string
  customerId: string
  total: number
  seq: number
}

// 1. Map the topic once: name, key, headers, serializer (JSON by default), outbox on, and how
// Kafka should create it (partitions, configs): outbox.ensureTopics() creates it so.
const runId = randomBytes(3).toString('hex')
const orderCreated = defineTopic<OrderCreated>({
  name: `demo.orders.created.${runId}`,
  key: (event) => event.customerId,
  headers: (event) => ({ 'event-type': 'OrderCreated', ...trackingHeaders(event.orderId, event.seq) }),
  partitions: 6,
  // The broker's append time, so the demo's latency figures come from one clock.
  configs: { 'message.timestamp.type': 'LogAppendTime' },
})

const schema = 'k_entity_demo'
const topics = { orderCreated }

/** The two ways the demo runs: the same outbox API over a PostgreSQL server or over PGlite. */
interface DemoDatabase {
  label: string
  /** One business transaction: the order row and its event. */
  placeOrder(event: OrderCreated, rollBack: boolean): Promise<void>
  relay(options: RelayOptions): OutboxRelay
  ensureTopics(): Promise<unknown>
  counts(): Promise<{ orders: number; waiting: number }>
  close(): Promise<void>
}

const CREATE_ORDERS = `CREATE TABLE ${schema}.orders (id text PRIMARY KEY, customer_id text NOT NULL, total numeric NOT NULL)`
const INSERT_ORDER = `INSERT INTO ${schema}.orders (id, customer_id, total) VALUES ($1, $2, $3)`
const COUNTS = `SELECT (SELECT count(*) FROM ${schema}.orders)::int AS orders, (SELECT count(*) FROM ${schema}.outbox)::int AS waiting`

async function postgresDatabase(brokers: string[]): Promise<DemoDatabase> {
  const url = process.env.DATABASE_URL ?? `postgres://${userInfo().username}@127.0.0.1:5432/test`
  const outbox = createPgOutbox({ topics, schema, kafka: { brokers } })
  const pool = new pg.Pool({ connectionString: url, max: writers + 1 })
  await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  await outbox.migrate(url)
  await pool.query(CREATE_ORDERS)
  return {
    label: `PostgreSQL ${url.replace(/\/\/([^:@/]+):[^@/]+@/, '//$1:***@')}`,
    placeOrder: (event, rollBack) =>
      outbox.transaction(pool, async (client, producers) => {
        await client.query(INSERT_ORDER, [event.orderId, event.customerId, event.total])
        await producers.orderCreated.produce(event)
        if (rollBack) throw new PaymentDeclined()
      }),
    relay: (options) => outbox.relay({ connection: url, ...options }),
    ensureTopics: () => outbox.ensureTopics(),
    counts: async () => (await pool.query(COUNTS)).rows[0],
    close: async () => {
      await outbox.close()
      await pool.end()
    },
  }
}

async function pgliteDatabase(brokers: string[]): Promise<DemoDatabase> {
  const outbox = await openPgliteOutbox({ topics, schema, kafka: { brokers } })
  await outbox.db.exec(CREATE_ORDERS)
  return {
    label: 'PGlite (embedded PostgreSQL, in memory; set DATABASE_URL to use a server)',
    placeOrder: (event, rollBack) =>
      outbox.transaction(async (tx, producers) => {
        await tx.query(INSERT_ORDER, [event.orderId, event.customerId, event.total])
        await producers.orderCreated.produce(event)
        if (rollBack) throw new PaymentDeclined()
      }),
    relay: (options) => outbox.relay({ ...options, mode: 'single' }),
    ensureTopics: () => outbox.ensureTopics(),
    counts: async () => (await outbox.db.query<{ orders: number; waiting: number }>(COUNTS)).rows[0] as never,
    close: () => outbox.close(),
  }
}

class PaymentDeclined extends Error {}

async function main(): Promise<number> {
  let broker: KafkaBroker | undefined
  if (!process.env.KAFKA_BROKERS) broker = await startKafkaBroker()
  const brokers = process.env.KAFKA_BROKERS?.split(',') ?? [broker?.brokers as string]
  const database =
    useDatabase === 'postgres' ? await postgresDatabase(brokers) : await pgliteDatabase(brokers)
  console.log(
    `k-entity demo · ${database.label} · Kafka ${brokers.join(',')}${broker ? ' (started for the demo)' : ''}`,
  )
  try {
    await database.ensureTopics()

    // 2. Run the relay: polls the outbox, wakes at commit, deletes what Kafka acknowledged.
    const events = { delivered: 0, errors: 0 }
    const relay = database.relay({
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
          // A real service handles requests between transactions; yielding here does the same,
          // and PGlite (which answers without I/O) would otherwise starve the relay's socket.
          await new Promise((resolve) => setImmediate(resolve))
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
            await database.placeOrder(event, rollBack)
            commitTimes.set(event.orderId, Date.now())
            committed.push(tracked)
          } catch (error) {
            if (!(error instanceof PaymentDeclined)) throw error
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
    const counts = await database.counts()
    const latencies = consumed
      .map((m) => {
        const id = m.headers.find(([name]) => name === 'ke-check-id')?.[1]?.toString() ?? ''
        const committedAt = commitTimes.get(id)
        return committedAt === undefined ? undefined : Number(m.timestamp) - committedAt
      })
      .filter((ms): ms is number => ms !== undefined)
      .sort((a, b) => a - b)

    console.log('')
    console.log(
      `committed          ${committed.length} (${(committed.length / seconds).toFixed(0)} transactions/s; ${counts.orders} order rows)`,
    )
    console.log(`rolled back        ${rolledBack.length}`)
    console.log(`delivered          ${report.delivered}`)
    console.log(`lost               ${report.lost}`)
    console.log(`phantom            ${report.phantom}`)
    console.log(`duplicates         ${report.duplicates}`)
    console.log(`out-of-order       ${report.outOfOrder}`)
    console.log(`left in outbox     ${counts.waiting}`)
    console.log(`commit→Kafka p50   ${percentile(latencies, 0.5)} ms`)
    console.log(`commit→Kafka p99   ${percentile(latencies, 0.99)} ms`)
    console.log(`relay errors       ${events.errors}`)
    if (!report.ok) console.log(`\n${formatReport(report)}`)
    console.log(
      report.ok
        ? '\nOK: every committed event delivered, no rolled-back event delivered, order kept per customer.'
        : '\nFAILED',
    )
    return report.ok && counts.waiting === 0 ? 0 : 1
  } finally {
    await database.close()
    await broker?.stop()
  }
}

/** LogAppendTime makes the broker stamp each record when it is written: the delivery time. */
function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number
}

process.exitCode = await main()
