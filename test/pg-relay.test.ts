import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { murmur2 } from '@platformatic/kafka'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { bufferSerializer, defineTopic } from '../src/index.ts'
import { checkDelivery, formatReport, observedFromConsumed, readTopic } from '../src/testing/index.ts'
import { countRows, DATABASE_URL, dropSchema, kafkaBrokers, uniqueName } from './support/env.ts'
import { dropOrderSchemas, orderOutbox, runOrderWorkload } from './support/workload.ts'

const brokers = kafkaBrokers()
const schemas: string[] = []
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 })

describe('relay to a real Kafka broker', () => {
  after(async () => {
    await pool.end()
    await dropOrderSchemas()
    for (const schema of schemas) await dropSchema(schema)
  })

  it('atomicity: 1,000 transactions, 20% rolled back, only committed ones delivered, outbox emptied', async (t) => {
    const { schema, topicName, outbox, ordersTable } = await orderOutbox(3, 'ke_relay')
    const relay = outbox.relay({ connection: DATABASE_URL, pollingInterval: 50 })
    // Stopped even when an assertion fails, or the open relay would keep the test process alive.
    t.after(() => relay.stop())
    await relay.start()
    const workload = await runOrderWorkload({
      pool,
      outbox,
      ordersTable,
      transactions: 1000,
      writers: 8,
      keysPerWriter: 5,
      rollbackRate: 0.2,
    })
    assert.ok(workload.rolledBack.length > 100, `expected ~200 rollbacks, got ${workload.rolledBack.length}`)
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: workload.committed.length })
    await relay.stop()
    const report = checkDelivery({
      expected: workload.committed,
      forbidden: workload.rolledBack,
      observed: observedFromConsumed(consumed),
    })
    assert.ok(report.ok, formatReport(report))
    assert.equal(report.delivered, workload.committed.length)
    assert.equal(report.phantom, 0)
    assert.equal(await countRows(schema), 0, 'outbox table must be empty after delivery')
    assert.equal(
      await countRows(schema, 'orders'),
      workload.committed.length,
      'business rows = committed transactions',
    )
  })

  it('per-key order: 10,000 messages over 50 keys on 8 partitions, Java-compatible partitioning', async (t) => {
    const { schema, topicName, outbox, ordersTable } = await orderOutbox(8, 'ke_relay')
    const relay = outbox.relay({ connection: DATABASE_URL, pollingInterval: 50, maxMessagesPerPoll: 500 })
    t.after(() => relay.stop())
    await relay.start()
    const workload = await runOrderWorkload({
      pool,
      outbox,
      ordersTable,
      transactions: 200,
      messagesPerTransaction: 50,
      writers: 5,
      keysPerWriter: 10,
      rollbackRate: 0,
    })
    assert.equal(workload.committed.length, 10_000)
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: 10_000 })
    await relay.stop()
    const report = checkDelivery({ expected: workload.committed, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
    assert.equal(report.outOfOrder, 0)
    assert.equal(report.keysOnSeveralPartitions, 0)
    for (const message of consumed.slice(0, 500)) {
      // Java's DefaultPartitioner: toPositive(murmur2(key)) % partitions.
      const expected = (murmur2(message.key as Buffer) & 0x7fffffff) % 8
      assert.equal(message.partition, expected, `key ${message.key} landed on ${message.partition}`)
    }
    assert.equal(await countRows(schema), 0)
  })

  it('keeps key, header and payload bytes exactly, including non-ASCII, binary, tombstones and null keys', async (t) => {
    const schema = uniqueName('ke_bytes')
    schemas.push(schema)
    const jsonName = uniqueName('json').replaceAll('_', '-')
    const binName = uniqueName('bin').replaceAll('_', '-')
    const json = defineTopic<unknown>({
      name: jsonName,
      key: (m) => (m as { k: string }).k,
      headers: { static: 'yes' },
    })
    const binary = defineTopic<Uint8Array>({ name: binName, serializer: bufferSerializer })
    const outbox = createPgOutbox({
      topics: { json, binary },
      schema,
      kafka: { brokers, autoCreateTopics: true },
    })
    await outbox.migrate(DATABASE_URL)
    const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
    const binaryKey = Buffer.from([0, 1, 0xff, 0x80, 0])
    await outbox.transaction(pool, async (_client, topics) => {
      await topics.json.produce(
        { k: 'ключ-🔑-ü', text: 'Grüße, 世界 \u0000 "quoted"' },
        { headers: { trace: 'ž' } },
      )
      await topics.json.produce(null, { key: 'tomb' })
      await topics.binary.produce(allBytes, {
        key: binaryKey,
        headers: { bin: allBytes, empty: Buffer.alloc(0) },
      })
      await topics.binary.produce(Buffer.from('no key'))
    })
    const relay = outbox.relay({ connection: DATABASE_URL })
    t.after(() => relay.stop())
    assert.equal(await relay.drain(), 4)
    await relay.stop()
    const [jsonRead, binRead] = await Promise.all([
      readTopic({ brokers, topic: jsonName, expectedCount: 2 }),
      readTopic({ brokers, topic: binName, expectedCount: 2 }),
    ])
    const [first, tombstone] = jsonRead
    assert.deepEqual(first?.key, Buffer.from('ключ-🔑-ü'))
    assert.deepEqual(JSON.parse(first?.value?.toString('utf8') ?? ''), {
      k: 'ключ-🔑-ü',
      text: 'Grüße, 世界 \u0000 "quoted"',
    })
    assert.deepEqual(first?.headers, [
      ['static', Buffer.from('yes')],
      ['trace', Buffer.from('ž')],
    ])
    assert.deepEqual(tombstone?.key, Buffer.from('tomb'))
    assert.equal(tombstone?.value, null)
    const withKey = binRead.find((m) => m.key !== null)
    const noKey = binRead.find((m) => m.key === null)
    assert.deepEqual(withKey?.key, binaryKey)
    assert.deepEqual(withKey?.value, allBytes)
    assert.deepEqual(withKey?.headers, [
      ['bin', allBytes],
      ['empty', Buffer.alloc(0)],
    ])
    assert.deepEqual(noKey?.value, Buffer.from('no key'))
    assert.equal(await countRows(schema), 0)
  })

  it('sends topics mapped with outbox: false straight to Kafka, without a transaction', async (t) => {
    const topicName = uniqueName('direct').replaceAll('_', '-')
    const outbox = createPgOutbox({
      topics: { audit: defineTopic<string>({ name: topicName, outbox: false }) },
      schema: uniqueName('ke_direct'),
      kafka: { brokers, autoCreateTopics: true },
    })
    const client = new pg.Client({ connectionString: DATABASE_URL })
    t.after(() => client.end().catch(() => {}))
    t.after(() => outbox.close())
    await client.connect()
    await outbox.in(client).audit.produce('sent at once', { key: 'k' })
    await client.end()
    await outbox.close()
    const read = await readTopic({ brokers, topic: topicName, expectedCount: 1 })
    assert.deepEqual(
      read.map((m) => m.value?.toString()),
      ['sent at once'],
    )
  })

  it('relays messages that were already waiting when the relay starts', async (t) => {
    const { schema, topicName, outbox, ordersTable } = await orderOutbox(2, 'ke_relay')
    const workload = await runOrderWorkload({
      pool,
      outbox,
      ordersTable,
      transactions: 50,
      writers: 1,
      keysPerWriter: 3,
      rollbackRate: 0,
    })
    assert.equal(await countRows(schema), 50)
    const relay = outbox.relay({ connection: DATABASE_URL, pollingInterval: 60_000 })
    t.after(() => relay.stop())
    await relay.start()
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: 50 })
    await relay.stop()
    const report = checkDelivery({ expected: workload.committed, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
    assert.equal(await countRows(schema), 0)
  })
})
