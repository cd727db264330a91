// The inbox's batches against a real broker and real databases: a batch's inbox rows go in as one
// multi-row INSERT, so one message handled before makes the whole batch fail; each message of it
// must then be handled alone, the repeat skipped and every other one applied exactly once, with
// the outbox rows its handler produced (held until COMMIT by node-postgres's transaction()).
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import type { KafkaConsumer } from '../src/consumer/kafka-consumer.ts'
import type { ConsumedMessage } from '../src/consumer/message.ts'
import type { TopicProducers } from '../src/core/outbox.ts'
import { defineTopic, MESSAGE_ID_HEADER, type Topic } from '../src/core/topic.ts'
import { brokers, createTopic, deleteTopic, produceRaw, uniqueName, waitFor } from './consumer/kafka.ts'

const list = brokers()
const kafka = { brokers: list ?? [], clientId: 'k-entity-consumer-batch-test' }
const quiet = { logger: false as const, maxWaitMs: 100 }
const skip = list === undefined ? 'KAFKA_BROKERS not set' : false

type Event = { id: string }
type Topics = { events: Topic<Event> }
type Start = (
  groupId: string,
  handler: (message: ConsumedMessage<Event>, topics: TopicProducers<Topics>) => Promise<void>,
) => KafkaConsumer<Event>

const message = (i: number) => ({
  key: 'one-key',
  value: JSON.stringify({ id: `e${i}` }),
  headers: { [MESSAGE_ID_HEADER]: `m-${i}` },
})

/**
 * e3 is handled by a first member; a second member of the group then gets e0-e19 (e3 again, a new
 * offset, the same message id) in batches of 10 on one partition. Returns the handler calls of
 * the second member, each with the transaction it ran in.
 */
async function scenario(name: string, start: Start): Promise<{ id: string; tx: object }[]> {
  await createTopic(list as string[], name, 1)
  const groupId = uniqueName('g')
  await produceRaw(list as string[], name, [message(3)])
  const first = start(groupId, async (consumed, topics) => {
    await topics.events.produce({ id: (consumed.value as Event).id })
  })
  try {
    await waitFor(() => first.counts.handled === 1, 30_000, 'e3 handled by the first member')
  } finally {
    await first.close()
  }
  const all = []
  for (let i = 0; i < 20; i++) all.push(message(i))
  await produceRaw(list as string[], name, all)
  const calls: { id: string; tx: object }[] = []
  const second = start(groupId, async (consumed, topics) => {
    // The producers are made per transaction: their identity tells the transactions apart.
    calls.push({ id: (consumed.value as Event).id, tx: topics })
    await topics.events.produce({ id: (consumed.value as Event).id })
  })
  try {
    await waitFor(
      () => second.counts.handled + second.counts.duplicates >= 20,
      30_000,
      'the 20 messages of the second member',
    )
  } finally {
    await second.close()
  }
  assert.equal(second.counts.duplicates, 1, 'e3 recognised as handled before')
  assert.equal(second.counts.handled, 19)
  assert.equal(second.counts.deadLettered, 0)
  assert.deepEqual(
    calls.map((call) => call.id),
    Array.from({ length: 20 }, (_, i) => `e${i}`).filter((id) => id !== 'e3'),
    'every other message handled once, in order; the repeat never reached the handler',
  )
  const perTx = new Map<object, number>()
  for (const call of calls) perTx.set(call.tx, (perTx.get(call.tx) ?? 0) + 1)
  assert.ok(
    [...perTx.values()].some((n) => n >= 2),
    'messages of one fetch were handled in a shared transaction (a batch)',
  )
  return calls
}

describe('the inbox batch with a message handled before, on PostgreSQL', { skip }, () => {
  const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
  const schema = uniqueName('ke_inbox_batch').replaceAll('-', '_')
  const pool = new pg.Pool({ connectionString: url, max: 4 })
  const name = uniqueName('ke-inbox-batch-pg')
  after(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await pool.end()
    await deleteTopic(list as string[], name)
  })

  it('skips the repeat and applies every other message of its batch exactly once', async () => {
    const events = defineTopic<Event>({ name, key: (event) => event.id })
    const outbox = createPgOutbox({ topics: { events }, schema, kafka })
    await outbox.migrate(url)
    await outbox.migrateInbox(url)
    await scenario(name, (groupId, handler) =>
      outbox.consume(events, {
        ...quiet,
        groupId,
        db: pool,
        batchSize: 10,
        handler: (consumed, _client, topics) => handler(consumed, topics),
      }),
    )
    const inbox = await pool.query(
      `SELECT message_key, count(*)::int AS n FROM "${schema}".outbox_inbox GROUP BY message_key`,
    )
    assert.equal(inbox.rows.length, 20)
    assert.ok(inbox.rows.every((row) => row.n === 1))
    const produced = await pool.query(`SELECT convert_from(value, 'UTF8') AS payload FROM "${schema}".outbox`)
    const ids = produced.rows.map((row) => (JSON.parse(row.payload) as Event).id).sort()
    assert.deepEqual(ids, Array.from({ length: 20 }, (_, i) => `e${i}`).sort(), 'one outbox row per message')
  })
})

describe('the inbox batch with a message handled before, on MySQL/MariaDB', { skip }, () => {
  const url = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
  const schema = uniqueName('ke_inbox_batch').replaceAll('-', '_')
  const pool = mysql.createPool({ uri: url, connectionLimit: 4 })
  const name = uniqueName('ke-inbox-batch-my')
  after(async () => {
    await pool.query(`DROP DATABASE IF EXISTS \`${schema}\``)
    await pool.end()
    await deleteTopic(list as string[], name)
  })

  it('skips the repeat and applies every other message of its batch exactly once', async () => {
    const events = defineTopic<Event>({ name, key: (event) => event.id })
    const outbox = createMysqlOutbox({ topics: { events }, schema, kafka })
    await outbox.migrate(url)
    await outbox.migrateInbox(url)
    await scenario(name, (groupId, handler) =>
      outbox.consume(events, {
        ...quiet,
        groupId,
        db: pool,
        batchSize: 10,
        handler: (consumed, _connection, topics) => handler(consumed, topics),
      }),
    )
    const [inbox] = await pool.query(
      `SELECT message_key, count(*) AS n FROM \`${schema}\`.outbox_inbox GROUP BY message_key`,
    )
    assert.equal((inbox as { n: number }[]).length, 20)
    assert.ok((inbox as { n: number }[]).every((row) => Number(row.n) === 1))
    const [produced] = await pool.query(
      `SELECT CONVERT(value USING utf8mb4) AS payload FROM \`${schema}\`.outbox`,
    )
    const ids = (produced as { payload: string }[]).map((row) => (JSON.parse(row.payload) as Event).id).sort()
    assert.deepEqual(ids, Array.from({ length: 20 }, (_, i) => `e${i}`).sort(), 'one outbox row per message')
  })
})

describe('an inbox backlog with failing batches, on MySQL/MariaDB', { skip }, () => {
  const url = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
  const schema = uniqueName('ke_inbox_early').replaceAll('-', '_')
  const pool = mysql.createPool({ uri: url, connectionLimit: 4 })
  const name = uniqueName('ke-inbox-early-my')
  after(async () => {
    await pool.query(`DROP DATABASE IF EXISTS \`${schema}\``)
    await pool.end()
    await deleteTopic(list as string[], name)
  })

  it('applies every message once and in offset order when batches fail and fall back to one by one', async () => {
    const events = defineTopic<Event>({ name, key: (event) => event.id })
    const outbox = createMysqlOutbox({ topics: { events }, schema, kafka })
    await outbox.migrateInbox(url)
    // AUTO_INCREMENT numbers the effects in the order their INSERTs ran: a batch whose handlers
    // ran before the failed batch before it had been applied one by one would show up out of order.
    await pool.query(
      `CREATE TABLE \`${schema}\`.effects (seq BIGINT AUTO_INCREMENT PRIMARY KEY, id VARCHAR(20) NOT NULL) ENGINE=InnoDB`,
    )
    await createTopic(list as string[], name, 1)
    const total = 120
    await produceRaw(
      list as string[],
      name,
      Array.from({ length: total }, (_, i) => message(i)),
    )
    const failing = new Set(['e25', 'e71'])
    const consumer = outbox.consume(events, {
      ...quiet,
      groupId: uniqueName('g'),
      db: pool,
      batchSize: 10,
      handler: async (consumed, connection) => {
        const id = (consumed.value as Event).id
        await connection.query(`INSERT INTO \`${schema}\`.effects (id) VALUES (?)`, [id])
        // Fails its batch once; handled alone it succeeds.
        if (failing.delete(id)) throw new Error(`${id} fails its batch`)
      },
    })
    try {
      await waitFor(() => consumer.counts.handled >= total, 60_000, `the ${total} messages`)
    } finally {
      await consumer.close()
    }
    const [rows] = await pool.query(`SELECT id FROM \`${schema}\`.effects ORDER BY seq`)
    assert.deepEqual(
      (rows as { id: string }[]).map((row) => row.id),
      Array.from({ length: total }, (_, i) => `e${i}`),
      'every effect once, in offset order',
    )
    assert.equal(consumer.counts.duplicates, 0)
    assert.equal(failing.size, 0, 'both failing messages were met')
  })
})
