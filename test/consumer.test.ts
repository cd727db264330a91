// Typed consumers against a real broker: deserializers, per-partition order, retries and dead
// letters that do not stall other partitions, graceful shutdown, and the inbox on PostgreSQL.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { consume } from '../src/consumer/consume.ts'
import type { ConsumedMessage } from '../src/consumer/message.ts'
import type { DeadMessage } from '../src/consumer/options.ts'
import { isKEntityError } from '../src/core/errors.ts'
import { bufferDeserializer, stringDeserializer, stringSerializer } from '../src/core/serializer.ts'
import { defineTopic, MESSAGE_ID_HEADER } from '../src/core/topic.ts'
import { brokers, createTopic, deleteTopic, produceRaw, uniqueName, waitFor } from './consumer/kafka.ts'

const list = brokers()
const kafka = { brokers: list ?? [], clientId: 'k-entity-consumer-test' }
const quiet = { logger: false as const, maxWaitMs: 100 }

interface Order {
  id: string
  key: string
  seq: number
}

describe('consume()', { skip: list === undefined ? 'KAFKA_BROKERS not set' : false }, () => {
  const topics: string[] = []
  const topicOf = async (prefix: string, partitions: number) => {
    const name = uniqueName(prefix)
    await createTopic(list as string[], name, partitions)
    topics.push(name)
    return name
  }
  after(async () => {
    for (const name of topics) await deleteTopic(list as string[], name)
  })

  it('hands typed messages with key, headers, partition and offset, in order per partition', async () => {
    const name = await topicOf('ke-consume-typed', 3)
    const orders = defineTopic<Order>({ name, key: (order) => order.key })
    const sent: Order[] = []
    for (let seq = 0; seq < 40; seq++)
      for (const key of ['a', 'b', 'c', 'd', 'e']) sent.push({ id: `${key}${seq}`, key, seq })
    await produceRaw(
      list as string[],
      name,
      sent.map((order) => ({ key: order.key, value: JSON.stringify(order), headers: { trace: order.id } })),
    )
    const seen: ConsumedMessage<Order>[] = []
    const consumer = consume(orders, {
      ...quiet,
      kafka,
      groupId: uniqueName('g'),
      handler: async (message) => {
        seen.push(message)
      },
    })
    try {
      await waitFor(() => seen.length >= sent.length, 30_000, 'every message')
    } finally {
      await consumer.close()
    }
    assert.equal(seen.length, sent.length)
    const lastOffset = new Map<number, bigint>()
    const lastSeq = new Map<string, number>()
    const partitionOfKey = new Map<string, number>()
    for (const message of seen) {
      const order = message.value as Order
      assert.equal(message.key?.toString(), order.key)
      assert.equal(message.headers.trace?.toString(), order.id)
      assert.deepEqual(
        message.headerList.map(([header, value]) => [header, value?.toString()]),
        [['trace', order.id]],
      )
      assert.equal(message.topic, name)
      assert.equal(message.attempt, 1)
      assert.ok((lastOffset.get(message.partition) ?? -1n) < message.offset, 'offsets rise per partition')
      lastOffset.set(message.partition, message.offset)
      assert.ok((lastSeq.get(order.key) ?? -1) < order.seq, `key ${order.key} in order`)
      lastSeq.set(order.key, order.seq)
      assert.equal(partitionOfKey.get(order.key) ?? message.partition, message.partition)
      partitionOfKey.set(order.key, message.partition)
    }
    assert.ok(new Set(partitionOfKey.values()).size > 1, 'the keys spread over several partitions')
    assert.equal(consumer.counts.handled, sent.length)
  })

  it('reads string and Buffer topics with their deserializers, tombstones as null, in a for-await loop', async () => {
    const name = await topicOf('ke-consume-string', 1)
    const text = defineTopic<string>({ name, serializer: stringSerializer })
    assert.equal(text.deserializer, stringDeserializer)
    const bytes = defineTopic<Buffer>({ name, deserializer: bufferDeserializer })
    await produceRaw(list as string[], name, [
      { key: 'k', value: 'plain text, not JSON' },
      { key: 'k', value: Buffer.from([0, 1, 2, 255]) },
      { key: 'k', value: null },
    ])
    const groupId = uniqueName('g')
    const values: (string | null)[] = []
    for await (const message of consume(text, { ...quiet, kafka, groupId })) {
      values.push(message.value)
      if (values.length === 3) break
    }
    assert.equal(values[0], 'plain text, not JSON')
    assert.equal(values[2], null)
    const raw: (Buffer | null)[] = []
    for await (const message of consume(bytes, { ...quiet, kafka, groupId: uniqueName('g') })) {
      raw.push(message.value)
      if (raw.length === 2) break
    }
    assert.deepEqual(raw[1], Buffer.from([0, 1, 2, 255]))
  })

  it('dead-letters a record that is not JSON without retrying it, and goes on', async () => {
    const name = await topicOf('ke-consume-badjson', 1)
    const json = defineTopic<{ n: number }>({ name })
    await produceRaw(list as string[], name, [
      { value: '{"n":1}' },
      { value: 'not json' },
      { value: '{"n":3}' },
    ])
    const handled: number[] = []
    const dead: DeadMessage<{ n: number }>[] = []
    const consumer = consume(json, {
      ...quiet,
      kafka,
      groupId: uniqueName('g'),
      handler: async (message) => {
        handled.push((message.value as { n: number }).n)
      },
      onDeadLetter: (message) => {
        dead.push(message)
      },
    })
    try {
      await waitFor(() => handled.length === 2 && dead.length === 1, 20_000, 'two handled, one dead')
    } finally {
      await consumer.close()
    }
    assert.deepEqual(handled, [1, 3])
    assert.equal(dead[0]?.offset, 1n)
    assert.equal(dead[0]?.attempts, 1)
    assert.equal(dead[0]?.message, undefined)
    assert.equal(dead[0]?.value?.toString(), 'not json')
    assert.ok(isKEntityError(dead[0]?.error, 'KE_SERIALIZATION_FAILED'))
  })

  it('retries a failing handler with backoff, then dead-letters it, while other partitions go on', async () => {
    const name = await topicOf('ke-consume-poison', 4)
    const orders = defineTopic<Order>({ name, key: (order) => order.key })
    const keys = ['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7']
    const sent: Order[] = [{ id: 'poison', key: 'k0', seq: 0 }]
    for (let seq = 1; seq <= 20; seq++) for (const key of keys) sent.push({ id: `${key}-${seq}`, key, seq })
    await produceRaw(
      list as string[],
      name,
      sent.map((order) => ({ key: order.key, value: JSON.stringify(order) })),
    )
    const handledAt = new Map<string, number>()
    const attempts: number[] = []
    const dead: DeadMessage<Order>[] = []
    let deadAt = 0
    const consumer = consume(orders, {
      ...quiet,
      kafka,
      groupId: uniqueName('g'),
      retry: { attempts: 4, initialDelayMs: 400, maxDelayMs: 1000 },
      handler: async (message) => {
        const order = message.value as Order
        if (order.id === 'poison') {
          attempts.push(message.attempt)
          throw new Error('this order is broken')
        }
        handledAt.set(order.id, Date.now())
      },
      onDeadLetter: (message) => {
        dead.push(message)
        deadAt = Date.now()
      },
    })
    try {
      await waitFor(() => handledAt.size === sent.length - 1 && dead.length === 1, 30_000, 'every message')
    } finally {
      await consumer.close()
    }
    assert.deepEqual(attempts, [1, 2, 3, 4])
    assert.equal(dead[0]?.attempts, 4)
    assert.equal(dead[0]?.message?.value?.id, 'poison')
    assert.equal(consumer.counts.retried, 3)
    assert.equal(consumer.counts.deadLettered, 1)
    // Same key (same partition): only after the poison message; other partitions: long before.
    const poisonPartition = dead[0]?.partition
    for (const [id, at] of handledAt) {
      if (id.startsWith('k0-')) assert.ok(at >= deadAt, `${id} waited for the message ahead of it`)
    }
    const otherPartitions = [...handledAt].filter(([id]) => !id.startsWith('k0-'))
    const early = otherPartitions.filter(([, at]) => at < deadAt)
    assert.ok(poisonPartition !== undefined)
    assert.ok(early.length > 0, 'other partitions were handled while the poison message was retried')
  })

  it('stops fetching at maxInFlightBytes and at maxInFlight while a handler is stuck, then handles everything', async () => {
    const name = await topicOf('ke-consume-bounded', 2)
    const payload = 'x'.repeat(10_000)
    const sent = Array.from({ length: 300 }, (_, seq) => ({
      id: `m${seq}`,
      key: `k${seq % 8}`,
      seq,
      payload,
    }))
    await produceRaw(
      list as string[],
      name,
      sent.map((order) => ({ key: order.key, value: JSON.stringify(order) })),
    )
    const orders = defineTopic<Order>({ name, key: (order) => order.key })
    for (const bound of [
      { maxInFlightBytes: 100_000, limit: (f: { bytes: number }) => f.bytes, most: 100_000 },
      { maxInFlight: 20, limit: (f: { records: number }) => f.records, most: 20 },
    ]) {
      let release: () => void = () => {}
      const stuck = new Promise<void>((resolve) => {
        release = resolve
      })
      let handled = 0
      const consumer = consume(orders, {
        ...quiet,
        kafka,
        groupId: uniqueName('g'),
        ...('maxInFlight' in bound
          ? { maxInFlight: bound.maxInFlight }
          : { maxInFlightBytes: bound.maxInFlightBytes }),
        handler: async () => {
          await stuck
          handled++
        },
      })
      try {
        await waitFor(() => consumer.inFlight.records > 0, 30_000, 'a first fetch')
        // Long enough for an unbounded consumer to fetch the whole topic (3 MB) several times over.
        let peak = 0
        for (let i = 0; i < 20; i++) {
          peak = Math.max(peak, bound.limit(consumer.inFlight))
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
        // Past the bound by at most one fetch: 64 KiB per partition, or 6 of these records each.
        const slack = 'maxInFlight' in bound ? 2 * 7 : 2 * 65_536 + 20_000
        assert.ok(peak >= bound.most / 2, `fetched up to the bound (peak ${peak})`)
        assert.ok(peak <= bound.most + slack, `stopped at the bound: peak ${peak}, bound ${bound.most}`)
        assert.equal(handled, 0)
        release()
        await waitFor(() => handled >= sent.length, 60_000, 'every message once released')
        assert.deepEqual(consumer.inFlight, { records: 0, bytes: 0 })
      } finally {
        release()
        await consumer.close()
      }
    }
  })

  it('shuts down gracefully: what was handled is committed, the next member gets exactly the rest', async () => {
    const name = await topicOf('ke-consume-shutdown', 3)
    const orders = defineTopic<Order>({ name, key: (order) => order.key })
    const sent: Order[] = []
    for (let seq = 0; seq < 100; seq++)
      for (const key of ['a', 'b', 'c', 'd']) sent.push({ id: `${key}${seq}`, key, seq })
    await produceRaw(
      list as string[],
      name,
      sent.map((order) => ({ key: order.key, value: JSON.stringify(order) })),
    )
    const groupId = uniqueName('g')
    const first: string[] = []
    const one = consume(orders, {
      ...quiet,
      kafka,
      groupId,
      maxInFlight: 20,
      handler: async (message) => {
        await new Promise((resolve) => setTimeout(resolve, 5))
        first.push((message.value as Order).id)
      },
    })
    await waitFor(() => first.length >= 60, 30_000, '60 handled')
    await one.close()
    const cut = first.length
    assert.ok(cut < sent.length, 'closed before the end')
    const second: string[] = []
    const two = consume(orders, {
      ...quiet,
      kafka,
      groupId,
      handler: async (message) => {
        second.push((message.value as Order).id)
      },
    })
    try {
      await waitFor(() => cut + second.length >= sent.length, 30_000, 'the rest')
      await new Promise((resolve) => setTimeout(resolve, 500))
    } finally {
      await two.close()
    }
    assert.equal(first.length, cut, 'nothing handled after close()')
    assert.deepEqual([...first, ...second].sort(), sent.map((order) => order.id).sort())
  })

  it('filter by headers: only matching records reach the handler, the rest are committed and counted, an unreadable skipped one is not dead-lettered', async () => {
    const name = await topicOf('ke-consume-filter', 2)
    const json = defineTopic<{ n: number }>({ name })
    const type = (value: string) => ({ 'event-type': value })
    await produceRaw(list as string[], name, [
      { key: 'a', value: '{"n":1}', headers: type('OrderCreated') },
      { key: 'a', value: '{"n":2}', headers: type('OrderCancelled') },
      { key: 'b', value: '{"n":3}', headers: type('OrderPaid') },
      { key: 'b', value: '{"n":4}' },
      { key: 'a', value: '{"n":5}', headers: type('ordercreated') },
      // Unreadable and filtered out: skipped, no dead letter.
      { key: 'b', value: 'not json', headers: type('Other') },
      // Unreadable and kept: dead-lettered as without a filter.
      { key: 'a', value: 'not json either', headers: type('OrderCreated') },
      { key: 'b', value: '{"n":8}', headers: { ...type('OrderPaid'), region: 'eu' } },
    ])
    const handled: number[] = []
    const dead: DeadMessage<{ n: number }>[] = []
    const groupId = uniqueName('g')
    const consumer = consume(json, {
      ...quiet,
      kafka,
      groupId,
      filter: { headers: { 'event-type': ['OrderCreated', Buffer.from('OrderPaid')] } },
      handler: async (message) => {
        handled.push((message.value as { n: number }).n)
      },
      onDeadLetter: (message) => {
        dead.push(message)
      },
    })
    try {
      await waitFor(
        () => consumer.counts.handled + consumer.counts.filtered + consumer.counts.deadLettered === 8,
        20_000,
        'eight records settled',
      )
    } finally {
      await consumer.close()
    }
    assert.deepEqual(
      handled.sort((x, y) => x - y),
      [1, 3, 8],
    )
    assert.equal(consumer.counts.filtered, 4, 'cancelled, no header, lower case, unreadable Other')
    assert.equal(dead.length, 1)
    assert.equal(dead[0]?.value?.toString(), 'not json either')
    // The skipped records' offsets were committed: the group's next member starts after them.
    await produceRaw(list as string[], name, [
      { key: 'a', value: '{"n":9}' },
      { key: 'b', value: '{"n":10}' },
    ])
    const next: number[] = []
    const second = consume(json, {
      ...quiet,
      kafka,
      groupId,
      handler: async (message) => {
        next.push((message.value as { n: number }).n)
      },
    })
    try {
      await waitFor(() => next.length >= 2, 20_000, 'the two new records')
      await new Promise((resolveWait) => setTimeout(resolveWait, 500))
    } finally {
      await second.close()
    }
    assert.deepEqual(
      next.sort((x, y) => x - y),
      [9, 10],
    )
  })

  it('filter predicate: sees the record before deserialization; a non-boolean answer dead-letters the record', async () => {
    const name = await topicOf('ke-consume-predicate', 1)
    const json = defineTopic<{ n: number }>({ name })
    await produceRaw(list as string[], name, [
      { key: 'keep', value: '{"n":1}' },
      { key: 'skip', value: '{"n":2}' },
      { key: 'skip', value: 'not json' },
      { key: 'weird', value: '{"n":4}' },
      { key: 'keep', value: '{"n":5}' },
    ])
    const seen: string[] = []
    const dead: DeadMessage<{ n: number }>[] = []
    const consumer = consume(json, {
      ...quiet,
      kafka,
      groupId: uniqueName('g'),
      retry: { attempts: 2, initialDelayMs: 10 },
      filter: (record) => {
        seen.push(record.value?.toString() ?? '')
        const key = record.key?.toString()
        return (key === 'weird' ? 'yes' : key === 'keep') as boolean
      },
      handler: async () => {},
      onDeadLetter: (message) => {
        dead.push(message)
      },
    })
    try {
      await waitFor(
        () => consumer.counts.handled + consumer.counts.filtered + consumer.counts.deadLettered === 5,
        20_000,
        'five records settled',
      )
    } finally {
      await consumer.close()
    }
    assert.equal(consumer.counts.handled, 2)
    assert.equal(consumer.counts.filtered, 2)
    assert.ok(seen.includes('not json'), 'the predicate got the raw bytes')
    assert.equal(dead.length, 1)
    assert.equal(dead[0]?.key?.toString(), 'weird')
    assert.equal(dead[0]?.attempts, 2)
    assert.ok(isKEntityError(dead[0]?.error, 'KE_INVALID_ARGUMENT'))
    assert.match(
      String((dead[0]?.error as Error | undefined)?.message),
      /must return true \(keep\) or false \(skip\)/,
    )
  })

  it('refuses bad options with what to do', () => {
    const orders = defineTopic<Order>({ name: 'ke-consume-options' })
    assert.throws(() => consume(orders, { kafka, groupId: '' }), /groupId/)
    assert.throws(() => consume(orders, { kafka, groupId: 'g', maxInFlight: 0 }), /maxInFlight/)
    assert.throws(
      () => consume(orders, { kafka, groupId: 'g', maxInFlightBytes: 100 }),
      /'maxInFlightBytes' must be an integer from 1024/,
    )
    assert.throws(() => consume(orders, { kafka, groupId: 'g', retry: { attempts: 0 } }), /retry.attempts/)
    assert.throws(() => consume({} as never, { kafka, groupId: 'g' }), /defineTopic/)
    const custom = defineTopic<number>({
      name: 'ke-x',
      serializer: { name: 'n', serialize: (n) => Buffer.from([n]) },
    })
    assert.throws(() => consume(custom, { kafka, groupId: 'g' }), /deserializer/)
    assert.throws(() => consume(orders, { groupId: 'g' } as never), /kafka/)
    const filterError = (filter: unknown, pattern: RegExp) =>
      assert.throws(
        () => consume(orders, { kafka, groupId: 'g', filter: filter as never }),
        (error: unknown) =>
          isKEntityError(error, 'KE_INVALID_ARGUMENT') && pattern.test((error as Error).message),
      )
    filterError('OrderCreated', /'filter' must be \{ headers:/)
    filterError({ header: { a: 'b' } }, /takes only 'headers'/)
    filterError({ headers: {} }, /'filter.headers' is empty/)
    filterError({ headers: { 'event-type': [] } }, /empty list/)
    filterError({ headers: { 'event-type': 42 } }, /must be a string, a Buffer or a list/)
    filterError({ headers: ['event-type'] }, /must be an object like/)
  })
})

describe('outbox.consume() with the inbox on PostgreSQL', {
  skip: list === undefined ? 'KAFKA_BROKERS not set' : false,
}, () => {
  const schema = uniqueName('ke_inbox').replaceAll('-', '_')
  const pool = new pg.Pool({
    connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
    max: 4,
  })
  const topicNames: string[] = []
  before(async () => {
    await pool.query(`CREATE SCHEMA "${schema}"`)
    await pool.query(`CREATE TABLE "${schema}".effects (id text PRIMARY KEY, n integer NOT NULL)`)
  })
  after(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await pool.end()
    for (const name of topicNames) await deleteTopic(list as string[], name)
  })

  it('applies each message once (a repeated message id is skipped) and dead-letters a failing one', async () => {
    const name = uniqueName('ke-inbox')
    await createTopic(list as string[], name, 2)
    topicNames.push(name)
    const events = defineTopic<{ id: string; fail?: boolean }>({
      name,
      key: (event) => event.id,
      messageId: true,
    })
    const outbox = createPgOutbox({ topics: { events }, schema, kafka })
    await outbox.migrateInbox(process.env.DATABASE_URL)
    await outbox.migrateInbox(process.env.DATABASE_URL)
    assert.match(outbox.inboxMigrationSql(), /_inbox/)
    const messages = []
    for (let i = 0; i < 30; i++) {
      const headers = { [MESSAGE_ID_HEADER]: `m-${i}` }
      messages.push({ key: `e${i % 5}`, value: JSON.stringify({ id: `e${i}` }), headers })
      // The relay sending the same outbox row twice: same message id, a new offset.
      if (i % 3 === 0) messages.push({ key: `e${i % 5}`, value: JSON.stringify({ id: `e${i}` }), headers })
    }
    messages.push({
      key: 'bad',
      value: JSON.stringify({ id: 'bad', fail: true }),
      headers: { [MESSAGE_ID_HEADER]: 'm-bad' },
    })
    await produceRaw(list as string[], name, messages)
    const consumer = outbox.consume(events, {
      ...quiet,
      groupId: uniqueName('g'),
      db: pool,
      retry: { attempts: 2, initialDelayMs: 50 },
      handler: async (message, client) => {
        const event = message.value as { id: string; fail?: boolean }
        await client.query(
          `INSERT INTO "${schema}".effects (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = effects.n + 1`,
          [event.id],
        )
        if (event.fail) throw new Error('cannot apply this one')
      },
    })
    try {
      await waitFor(
        () =>
          consumer.counts.handled + consumer.counts.duplicates + consumer.counts.deadLettered >=
          messages.length,
        30_000,
        'every message',
      )
    } finally {
      await consumer.close()
    }
    const effects = await pool.query(`SELECT id, n FROM "${schema}".effects ORDER BY id`)
    assert.equal(effects.rows.length, 30, 'the failing handler left no effect')
    assert.ok(effects.rows.every((row) => row.n === 1))
    assert.equal(consumer.counts.duplicates, 10)
    const dead = await pool.query(
      `SELECT topic, error, attempts, value FROM "${schema}".outbox_consumer_dead_letters`,
    )
    assert.equal(dead.rows.length, 1)
    assert.equal(dead.rows[0].error, 'cannot apply this one')
    assert.equal(dead.rows[0].attempts, 2)
    const inbox = await pool.query(`SELECT count(*)::int AS n FROM "${schema}".outbox_inbox`)
    assert.equal(inbox.rows[0].n, 31)
    await pool.query(
      `UPDATE "${schema}".outbox_inbox SET expires_at = now() - interval '1 second' WHERE message_key < 'id:m-2'`,
    )
    assert.equal(await outbox.purgeInbox(process.env.DATABASE_URL, { batchSize: 4 }), 12)
  })

  it('with a header filter: skipped records write no inbox row and no effect, the kept ones are applied once', async () => {
    const name = uniqueName('ke-inbox-filter')
    await createTopic(list as string[], name, 2)
    topicNames.push(name)
    const events = defineTopic<{ id: string }>({ name, key: (event) => event.id, messageId: true })
    const filterSchema = `${schema}_f`
    await pool.query(`CREATE SCHEMA "${filterSchema}"`)
    await pool.query(`CREATE TABLE "${filterSchema}".effects (id text PRIMARY KEY, n integer NOT NULL)`)
    try {
      const outbox = createPgOutbox({ topics: { events }, schema: filterSchema, kafka })
      await outbox.migrateInbox(process.env.DATABASE_URL)
      const messages = []
      for (let i = 0; i < 40; i++) {
        const headers = { [MESSAGE_ID_HEADER]: `m-${i}`, 'event-type': i % 4 === 0 ? 'Wanted' : 'Other' }
        messages.push({ key: `e${i % 5}`, value: JSON.stringify({ id: `e${i}` }), headers })
        if (i % 8 === 0) messages.push({ key: `e${i % 5}`, value: JSON.stringify({ id: `e${i}` }), headers })
      }
      // Unreadable, not wanted: no dead-letter row.
      messages.push({ key: 'x', value: 'not json', headers: { 'event-type': 'Other' } })
      await produceRaw(list as string[], name, messages)
      const consumer = outbox.consume(events, {
        ...quiet,
        groupId: uniqueName('g'),
        db: pool,
        filter: { headers: { 'event-type': 'Wanted' } },
        handler: async (message, client) => {
          await client.query(
            `INSERT INTO "${filterSchema}".effects (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = effects.n + 1`,
            [(message.value as { id: string }).id],
          )
        },
      })
      try {
        await waitFor(
          () =>
            consumer.counts.handled +
              consumer.counts.duplicates +
              consumer.counts.filtered +
              consumer.counts.deadLettered >=
            messages.length,
          30_000,
          'every message',
        )
      } finally {
        await consumer.close()
      }
      const effects = await pool.query(`SELECT id, n FROM "${filterSchema}".effects ORDER BY id`)
      assert.equal(effects.rows.length, 10)
      assert.ok(effects.rows.every((row) => row.n === 1))
      assert.equal(consumer.counts.handled, 10)
      assert.equal(consumer.counts.duplicates, 5)
      assert.equal(consumer.counts.filtered, 30 + 1)
      assert.equal(consumer.counts.deadLettered, 0)
      const inbox = await pool.query(`SELECT count(*)::int AS n FROM "${filterSchema}".outbox_inbox`)
      assert.equal(inbox.rows[0].n, 10, 'inbox rows only for the kept messages')
      const dead = await pool.query(
        `SELECT count(*)::int AS n FROM "${filterSchema}".outbox_consumer_dead_letters`,
      )
      assert.equal(dead.rows[0].n, 0)
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${filterSchema}" CASCADE`)
    }
  })

  it('two members of one group through rebalances: each message applied once, handled by both', async () => {
    const name = uniqueName('ke-inbox-rebalance')
    await createTopic(list as string[], name, 4)
    topicNames.push(name)
    const events = defineTopic<{ id: string }>({ name, key: (event) => event.id })
    const outbox = createPgOutbox({ topics: { events }, schema, kafka })
    await outbox.migrateInbox(process.env.DATABASE_URL)
    await pool.query(
      `CREATE TABLE "${schema}".rebalanced (id text PRIMARY KEY, n integer NOT NULL, member text NOT NULL)`,
    )
    const total = 1200
    const groupId = uniqueName('g')
    const member = (who: string) =>
      outbox.consume(events, {
        ...quiet,
        groupId,
        db: pool,
        sessionTimeoutMs: 6000,
        commitIntervalMs: 500,
        handler: async (message, client) => {
          await new Promise((resolve) => setTimeout(resolve, 2))
          await client.query(
            `INSERT INTO "${schema}".rebalanced (id, n, member) VALUES ($1, 1, $2) ON CONFLICT (id) DO UPDATE SET n = rebalanced.n + 1`,
            [(message.value as { id: string }).id, who],
          )
        },
      })
    const count = async () =>
      (await pool.query(`SELECT count(*)::int AS n FROM "${schema}".rebalanced`)).rows[0].n as number
    // About 10 s of traffic, so that the second member joins while messages still arrive.
    const producing = (async () => {
      for (let start = 0; start < total; start += 50) {
        const batch = []
        for (let i = start; i < start + 50; i++)
          batch.push({ key: `k${i % 31}`, value: JSON.stringify({ id: `e${i}` }) })
        await produceRaw(list as string[], name, batch)
        await new Promise((resolve) => setTimeout(resolve, 400))
      }
    })()
    const one = member('one')
    let two: ReturnType<typeof member> | undefined
    let done = 0
    try {
      await waitFor(() => one.counts.handled > 50, 20_000, 'the first member at work')
      two = member('two')
      const second = two
      await waitFor(() => second.counts.handled > 20, 30_000, 'the second member at work')
      await one.close()
      await producing
      const deadline = Date.now() + 30_000
      for (;;) {
        done = await count()
        if (done >= total || Date.now() > deadline) break
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
    } finally {
      await producing.catch(() => {})
      await one.close()
      await two?.close()
    }
    assert.equal(done, total)
    const { rows } = await pool.query(
      `SELECT max(n)::int AS max, count(DISTINCT member)::int AS members FROM "${schema}".rebalanced`,
    )
    assert.equal(rows[0].max, 1, 'no message applied twice')
    assert.equal(rows[0].members, 2)
  })
})

describe('outbox.consume() with the inbox on MySQL/MariaDB', {
  skip: list === undefined ? 'KAFKA_BROKERS not set' : false,
}, () => {
  const url = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
  const schema = uniqueName('ke_inbox').replaceAll('-', '_')
  const pool = mysql.createPool({ uri: url, connectionLimit: 4 })
  const topicNames: string[] = []
  before(async () => {
    await pool.query(`CREATE DATABASE \`${schema}\``)
    await pool.query(
      `CREATE TABLE \`${schema}\`.effects (id VARCHAR(64) PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB`,
    )
  })
  after(async () => {
    await pool.query(`DROP DATABASE IF EXISTS \`${schema}\``)
    await pool.end()
    for (const name of topicNames) await deleteTopic(list as string[], name)
  })

  it('applies each message once, skips a repeated message id, dead-letters a failing one, purges expired rows', async () => {
    const name = uniqueName('ke-inbox-my')
    await createTopic(list as string[], name, 2)
    topicNames.push(name)
    const events = defineTopic<{ id: string; fail?: boolean }>({ name, key: (event) => event.id })
    const outbox = createMysqlOutbox({ topics: { events }, schema, kafka })
    await outbox.migrateInbox(url)
    await outbox.migrateInbox(url)
    const messages = []
    for (let i = 0; i < 30; i++) {
      const message = {
        key: `e${i % 5}`,
        value: JSON.stringify({ id: `e${i}` }),
        headers: { [MESSAGE_ID_HEADER]: `m-${i}` },
      }
      messages.push(message)
      if (i % 3 === 0) messages.push(message)
    }
    messages.push({
      key: 'bad',
      value: JSON.stringify({ id: 'bad', fail: true }),
      headers: { [MESSAGE_ID_HEADER]: 'm-bad' },
    })
    await produceRaw(list as string[], name, messages)
    const consumer = outbox.consume(events, {
      ...quiet,
      groupId: uniqueName('g'),
      db: pool,
      retry: { attempts: 2, initialDelayMs: 50 },
      handler: async (message, connection) => {
        const event = message.value as { id: string; fail?: boolean }
        await connection.query(
          `INSERT INTO \`${schema}\`.effects (id, n) VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1`,
          [event.id],
        )
        if (event.fail) throw new Error('cannot apply this one')
      },
    })
    try {
      await waitFor(
        () =>
          consumer.counts.handled + consumer.counts.duplicates + consumer.counts.deadLettered >=
          messages.length,
        30_000,
        'every message',
      )
    } finally {
      await consumer.close()
    }
    const [effects] = await pool.query(`SELECT id, n FROM \`${schema}\`.effects`)
    assert.equal((effects as { n: number }[]).length, 30, 'the failing handler left no effect')
    assert.ok((effects as { n: number }[]).every((row) => row.n === 1))
    assert.equal(consumer.counts.duplicates, 10)
    const [dead] = await pool.query(`SELECT error, attempts FROM \`${schema}\`.outbox_consumer_dead_letters`)
    assert.deepEqual(
      (dead as { error: string; attempts: number }[]).map((row) => [row.error, row.attempts]),
      [['cannot apply this one', 2]],
    )
    await pool.query(
      `UPDATE \`${schema}\`.outbox_inbox SET expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND WHERE message_key < 'id:m-2'`,
    )
    assert.equal(await outbox.purgeInbox(url, { batchSize: 4 }), 12)
    const [left] = await pool.query(`SELECT count(*) AS n FROM \`${schema}\`.outbox_inbox`)
    assert.equal(Number((left as { n: number }[])[0]?.n), 19)
  })
})
