// The benchmark's messages: 256-byte values over 64 keys, each carrying the delivery checker's
// tracking headers, and fast pre-filling of the outbox through the library's own write path.
import pg from 'pg'
import { createPgOutbox, type PgOutbox } from '../../src/adapters/pg/index.ts'
import { defineTopic, type OutboxRecord } from '../../src/index.ts'
import { type TrackedMessage, trackingHeaders } from '../../src/testing/index.ts'
import { DATABASE_URL } from './env.ts'

export const PAYLOAD_BYTES = 256
export const KEYS = 64
/** Messages per pre-fill transaction. */
export const PREFILL_CHUNK = 1000
/** Claims a relay worker runs (and rolls back) before its clock starts, to warm the driver. */
export const WARMUP_CLAIMS = 10

export interface BenchMessage {
  id: string
  key: string
  seq: number
  body: Buffer
}

/**
 * Message `i` of a run: keys round-robin over 64, so `seq` (position within its key) grows with
 * `i`, which is also insert order: the checker's per-key order is id order.
 */
export function benchMessage(prefix: string, i: number): BenchMessage {
  // Printable bytes, so the peer (which stores JSON) carries exactly the same value as text.
  const body = Buffer.alloc(PAYLOAD_BYTES, 0x21 + (i % 90))
  body.write(`${prefix}-${i}`, 0, 'latin1')
  return { id: `${prefix}-${i}`, key: `key-${i % KEYS}`, seq: Math.floor(i / KEYS), body }
}

export function tracked(message: BenchMessage): TrackedMessage {
  return { id: message.id, key: message.key, seq: message.seq }
}

export function trackedRange(prefix: string, from: number, to: number): TrackedMessage[] {
  const list: TrackedMessage[] = []
  for (let i = from; i < to; i++)
    list.push({ id: `${prefix}-${i}`, key: `key-${i % KEYS}`, seq: Math.floor(i / KEYS) })
  return list
}

export function benchTopic(name: string) {
  return defineTopic<BenchMessage>({
    name,
    key: (message) => message.key,
    headers: (message) => trackingHeaders(message.id, message.seq),
    serializer: { name: 'bench-body', serialize: (message) => message.body },
  })
}

export type BenchOutbox = PgOutbox<{ bench: ReturnType<typeof benchTopic> }>

/** `extra`: outbox options that may not exist in every version (e.g. `notify`), passed through. */
export function benchOutbox(
  schema: string,
  topic: string,
  brokers: string[],
  extra: Record<string, unknown> = {},
): BenchOutbox {
  return createPgOutbox({ topics: { bench: benchTopic(topic) }, schema, kafka: { brokers }, ...extra })
}

/** The records the relay would send for messages `from..to` (for the raw producer baseline). */
export function benchRecords(topic: string, prefix: string, from: number, to: number): OutboxRecord[] {
  const definition = benchTopic(topic)
  const records: OutboxRecord[] = []
  for (let i = from; i < to; i++) records.push(definition.toRecord(benchMessage(prefix, i)))
  return records
}

/**
 * Inserts messages `from..to` with `produceMany` in transactions of 1000, on `connections`
 * sessions in parallel (keep 1 when per-key order is checked later: parallel chunks interleave
 * keys). Returns the elapsed ms (not part of any measurement).
 */
export async function prefill(
  outbox: BenchOutbox,
  prefix: string,
  from: number,
  to: number,
  connections = 1,
): Promise<number> {
  const started = performance.now()
  let next = from
  const worker = async () => {
    const client = new pg.Client({
      connectionString: DATABASE_URL,
      application_name: 'k-entity-bench-prefill',
    })
    await client.connect()
    try {
      const producers = outbox.in(client)
      for (;;) {
        const start = next
        if (start >= to) return
        const end = Math.min(to, start + PREFILL_CHUNK)
        next = end
        const messages: BenchMessage[] = []
        for (let i = start; i < end; i++) messages.push(benchMessage(prefix, i))
        await client.query('BEGIN')
        try {
          await producers.bench.produceMany(messages)
          await client.query('COMMIT')
        } catch (error) {
          await client.query('ROLLBACK').catch(() => {})
          throw error
        }
      }
    } finally {
      await client.end()
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, connections) }, worker))
  return performance.now() - started
}

export async function outboxCount(schema: string, client?: pg.Client): Promise<number> {
  const run = async (c: pg.Client) =>
    Number((await c.query(`SELECT count(*)::int AS n FROM "${schema}".outbox`)).rows[0]?.n ?? 0)
  if (client) return run(client)
  const own = new pg.Client({ connectionString: DATABASE_URL })
  await own.connect()
  try {
    return await run(own)
  } finally {
    await own.end()
  }
}

/** BEGIN, `work`, COMMIT on a client of `pool`: the plain transaction the write path is compared with. */
export async function pooledTransaction(
  pool: pg.Pool,
  work: (client: pg.PoolClient) => Promise<unknown>,
): Promise<void> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    await work(client)
    await client.query('COMMIT')
  } finally {
    client.release()
  }
}
