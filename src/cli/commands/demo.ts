import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { defineTopic } from '../../core/topic.ts'
import { readTopic } from '../../testing/read-topic.ts'
import { driverTarget, type Target, target } from '../database.ts'
import { brokersOf, probeKafka } from '../kafka-probe.ts'
import { note, print, printJson } from '../output.ts'
import { parse, positiveInteger, UsageError } from '../usage.ts'

export const DEMO_HELP = `Usage: k-entity demo [--url URL] [--brokers host:port,...] [--orders N]

Writes orders and their OrderCreated events in the same transactions, rolls every fifth one
back, relays the outbox to Kafka, reads the topic back and checks that exactly the committed
events arrived, in order per customer. It uses a schema of its own and a new topic.
  --url URL        postgres://... or a SQLite file (default DATABASE_URL, else a temporary
                   SQLite file)
  --brokers LIST   Kafka bootstrap brokers (default KAFKA_BROKERS; k-entity kafka start runs one)
  --orders N       orders to write (default 200)
  --schema NAME    schema of the demo's outbox (default k_entity_demo)
  --json           the result as JSON
  -h, --help       this help`

interface OrderCreated {
  orderId: string
  customerId: string
  seq: number
}

export async function demo(args: string[]): Promise<number> {
  const { values } = parse('demo', args, {
    url: { type: 'string' },
    brokers: { type: 'string' },
    orders: { type: 'string' },
    schema: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  })
  if (values.help) {
    print(DEMO_HELP)
    return 0
  }
  const orders = positiveInteger(values.orders, 'orders', 100_000) ?? 200
  const brokers = brokersOf(values.brokers)
  if (brokers === undefined) {
    throw new UsageError(
      'the demo needs Kafka: pass --brokers host:9092 or set KAFKA_BROKERS (k-entity kafka start runs one)',
    )
  }
  const problem = await probeKafka(brokers)
  if (problem !== undefined) {
    note(
      `k-entity: cannot reach Kafka at ${brokers.join(',')} (${problem}): start a broker (k-entity kafka start), or fix --brokers / KAFKA_BROKERS`,
    )
    return 1
  }
  let temporary: string | undefined
  let url = values.url ?? (process.env.DATABASE_URL || undefined)
  if (url === undefined) {
    temporary = mkdtempSync(join(tmpdir(), 'k-entity-demo-'))
    url = join(temporary, 'demo.db')
  }
  try {
    const t = target({ url, schema: values.schema ?? 'k_entity_demo' })
    if (t.database === 'mysql')
      throw new UsageError('the demo runs on PostgreSQL or SQLite; pass --url postgres://... or a file path')
    const orderCreated = defineTopic<OrderCreated>({
      name: `k-entity-demo-${randomBytes(4).toString('hex')}`,
      key: (event) => event.customerId,
      partitions: 3,
    })
    const committed =
      t.database === 'postgres'
        ? await writePostgres(t, brokers, orderCreated, orders)
        : await writeSqlite(t, brokers, orderCreated, orders)
    const consumed = await readTopic({
      brokers,
      topic: orderCreated.name,
      expectedCount: committed.length,
      timeoutMs: 60_000,
    })
    const seen = consumed.map((message) => JSON.parse(String(message.value)) as OrderCreated)
    const expected = new Set(committed.map((event) => event.orderId))
    const delivered = new Set(seen.map((event) => event.orderId))
    const lost = [...expected].filter((id) => !delivered.has(id)).length
    const phantom = [...delivered].filter((id) => !expected.has(id)).length
    const lastSeq = new Map<string, number>()
    let outOfOrder = 0
    for (const event of seen) {
      if ((lastSeq.get(event.customerId) ?? -1) > event.seq) outOfOrder++
      lastSeq.set(event.customerId, event.seq)
    }
    const result = {
      database: t.database,
      topic: orderCreated.name,
      written: orders,
      committed: committed.length,
      rolledBack: orders - committed.length,
      delivered: delivered.size,
      lost,
      phantom,
      outOfOrder,
      ok: lost === 0 && phantom === 0 && outOfOrder === 0,
    }
    if (values.json) printJson(result)
    else {
      print(
        `k-entity demo on ${t.database === 'postgres' ? `PostgreSQL at ${t.where}` : `SQLite ${t.where}`}, topic ${result.topic}`,
      )
      print(
        `committed     ${result.committed}\nrolled back   ${result.rolledBack}\ndelivered     ${result.delivered}\nlost          ${lost}\nphantom       ${phantom}\nout-of-order  ${outOfOrder}`,
      )
      print(
        result.ok
          ? 'OK: every committed event arrived once or more, in order per customer; no rolled-back one did'
          : 'FAILED: see the figures above',
      )
    }
    return result.ok ? 0 : 1
  } finally {
    if (temporary !== undefined) rmSync(temporary, { recursive: true, force: true })
  }
}

type Topic = ReturnType<typeof defineTopic<OrderCreated>>

function event(i: number): OrderCreated {
  return { orderId: `order-${i}`, customerId: `customer-${i % 7}`, seq: i }
}

async function writePostgres(
  t: Target,
  brokers: string[],
  orderCreated: Topic,
  orders: number,
): Promise<OrderCreated[]> {
  const { default: pg } = await import('pg')
  const { createPgOutbox } = await import('../../adapters/pg/index.ts')
  const outbox = createPgOutbox({ topics: { orderCreated }, schema: t.schema, kafka: { brokers } })
  await outbox.migrate(t.url)
  await outbox.ensureTopics()
  const pool = new pg.Pool({ connectionString: t.url, max: 2 })
  const committed: OrderCreated[] = []
  try {
    for (let i = 0; i < orders; i++) {
      const e = event(i)
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        await outbox.in(client).orderCreated.produce(e)
        // Every fifth order fails after its event was written: the event must never reach Kafka.
        if (i % 5 === 4) await client.query('ROLLBACK')
        else {
          await client.query('COMMIT')
          committed.push(e)
        }
      } finally {
        client.release()
      }
    }
    const relay = outbox.relay({ connection: t.url, logger: false })
    await relay.drain()
    await relay.stop()
    return committed
  } finally {
    await pool.end()
    await outbox.close()
  }
}

async function writeSqlite(
  t: Target,
  brokers: string[],
  orderCreated: Topic,
  orders: number,
): Promise<OrderCreated[]> {
  const { DatabaseSync } = await import('node:sqlite')
  const { createNodeSqliteOutbox } = await import('../../adapters/node-sqlite/index.ts')
  const outbox = createNodeSqliteOutbox({
    topics: { orderCreated },
    schema: t.schema,
    kafka: { brokers },
  })
  const db = new DatabaseSync(driverTarget(t))
  const committed: OrderCreated[] = []
  try {
    outbox.migrate(db)
    await outbox.ensureTopics()
    for (let i = 0; i < orders; i++) {
      const e = event(i)
      db.exec('BEGIN')
      outbox.in(db).orderCreated.produce(e)
      if (i % 5 === 4) db.exec('ROLLBACK')
      else {
        db.exec('COMMIT')
        committed.push(e)
      }
    }
    const relay = outbox.relay({ connection: db, logger: false })
    await relay.drain()
    await relay.stop()
    return committed
  } finally {
    db.close()
    await outbox.close()
  }
}
