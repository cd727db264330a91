import type pg from 'pg'
import { createPgOutbox, type PgOutbox } from '../../src/adapters/pg/index.ts'
import { defineTopic } from '../../src/index.ts'
import type { TrackedMessage } from '../../src/testing/index.ts'
import { trackingHeaders } from '../../src/testing/index.ts'
import { createTopic, DATABASE_URL, dropSchema, kafkaBrokers, uniqueName, withClient } from './env.ts'

export interface OrderEvent {
  orderId: string
  customer: string
  seq: number
}

/** The workload's topic: keyed by customer, the tracking headers carry id and per-key sequence. */
export function orderTopic(name: string) {
  return defineTopic<OrderEvent>({
    name,
    key: (event) => event.customer,
    headers: (event) => ({ 'event-type': 'OrderCreated', ...trackingHeaders(event.orderId, event.seq) }),
  })
}

export interface WorkloadResult {
  committed: TrackedMessage[]
  rolledBack: TrackedMessage[]
  commitTimes: Map<string, number>
}

export interface WorkloadOptions {
  pool: pg.Pool
  outbox: PgOutbox<{ orders: ReturnType<typeof orderTopic> }>
  /** Business table, created by the caller: (id text primary key, customer text). */
  ordersTable: string
  transactions: number
  /** Writers run in parallel; each owns its keys so its sequence numbers are commit order. */
  writers: number
  keysPerWriter: number
  messagesPerTransaction?: number
  rollbackRate: number
  /** Stop producing after this many ms even if not all transactions ran. */
  durationMs?: number
  random?: () => number
}

/**
 * Business transactions that insert order rows and produce one event per order in the same
 * transaction, some rolled back on purpose. Returns what must and must not be delivered.
 */
export async function runOrderWorkload(options: WorkloadOptions): Promise<WorkloadResult> {
  const random = options.random ?? Math.random
  const perTransaction = options.messagesPerTransaction ?? 1
  const result: WorkloadResult = { committed: [], rolledBack: [], commitTimes: new Map() }
  const deadline =
    options.durationMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + options.durationMs
  let started = 0
  const writer = async (w: number) => {
    const seqs = new Map<string, number>()
    while (started < options.transactions && Date.now() < deadline) {
      const txNo = started++
      const events: OrderEvent[] = []
      for (let m = 0; m < perTransaction; m++) {
        const customer = `customer-${w}-${Math.floor(random() * options.keysPerWriter)}`
        const seq = (seqs.get(customer) ?? 0) + 1
        seqs.set(customer, seq)
        events.push({ orderId: `order-${txNo}-${m}`, customer, seq })
      }
      const rollback = random() < options.rollbackRate
      const tracked = events.map((e) => ({ id: e.orderId, key: e.customer, seq: e.seq }))
      try {
        await options.outbox.transaction(options.pool, async (client, topics) => {
          await client.query(
            `INSERT INTO ${options.ordersTable} (id, customer) SELECT * FROM unnest($1::text[], $2::text[])`,
            [events.map((e) => e.orderId), events.map((e) => e.customer)],
          )
          await topics.orders.produceMany(events)
          if (rollback) throw new RollbackOnPurpose()
        })
        const now = Date.now()
        for (const t of tracked) result.commitTimes.set(t.id, now)
        result.committed.push(...tracked)
      } catch (error) {
        if (!(error instanceof RollbackOnPurpose)) throw error
        result.rolledBack.push(...tracked)
      }
    }
  }
  await Promise.all(Array.from({ length: options.writers }, (_, w) => writer(w)))
  return result
}

export class RollbackOnPurpose extends Error {
  constructor() {
    super('rolled back on purpose')
  }
}

const createdSchemas: string[] = []

/**
 * A fresh schema with the outbox (topic `orders` mapped to a new Kafka topic) and an `orders`
 * business table, for the workload above. `dropOrderSchemas()` removes every one created.
 */
export async function orderOutbox(partitions: number, prefix = 'ke_orders', brokers = kafkaBrokers()) {
  const schema = uniqueName(prefix)
  const topicName = uniqueName(prefix.replace(/^ke_/, '')).replaceAll('_', '-')
  createdSchemas.push(schema)
  await createTopic(topicName, partitions, brokers)
  const outbox = createPgOutbox({ topics: { orders: orderTopic(topicName) }, schema, kafka: { brokers } })
  await outbox.migrate(DATABASE_URL)
  await withClient((c) =>
    c.query(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY, customer text NOT NULL)`),
  )
  return { schema, topicName, outbox, ordersTable: `"${schema}".orders` }
}

export async function dropOrderSchemas(): Promise<void> {
  for (const schema of createdSchemas.splice(0)) await dropSchema(schema)
}
