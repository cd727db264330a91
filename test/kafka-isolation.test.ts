import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { defineTopic, type RelayEvent } from '../src/index.ts'
import { readTopic } from '../src/testing/index.ts'
import {
  countRows,
  createTopic,
  DATABASE_URL,
  dropSchema,
  kafkaBrokers,
  uniqueName,
  waitFor,
  withClient,
} from './support/env.ts'

const brokers = kafkaBrokers()
/** The library's default: a send creates no topic. */
const kafka = { brokers, autoCreateTopics: false }
const schemas: string[] = []
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 })

describe('a topic or message Kafka refuses is isolated to its own key', () => {
  after(async () => {
    await pool.end()
    for (const schema of schemas) await dropSchema(schema)
  })

  it('a missing topic at the head of the outbox holds back only its own messages; created later, they flow', async (t) => {
    const missing = uniqueName('ke_iso_missing')
    const healthy = uniqueName('ke_iso_healthy')
    await createTopic(healthy, 3)
    const schema = uniqueName('ke_iso')
    schemas.push(schema)
    const outbox = createPgOutbox({
      topics: {
        missing: defineTopic<{ id: number }>({
          name: missing,
          key: (m) => `m${m.id}`,
          retry: { maxAttempts: 50 },
        }),
        healthy: defineTopic<{ id: number }>({ name: healthy, key: (m) => `h${m.id % 7}` }),
      },
      schema,
      kafka,
    })
    await outbox.migrate(DATABASE_URL)
    // Three messages of three keys for the missing topic first, in their own transaction, so
    // they are the oldest rows: every claim starts with them.
    await outbox.transaction(pool, (_client, topics) =>
      topics.missing.produceMany([{ id: 1 }, { id: 2 }, { id: 3 }]),
    )
    await outbox.transaction(pool, (_client, topics) =>
      topics.healthy.produceMany(Array.from({ length: 20 }, (_, id) => ({ id }))),
    )
    const events: RelayEvent[] = []
    const relay = outbox.relay({
      connection: DATABASE_URL,
      pollingInterval: 50,
      retryBackoff: { initial: 100, max: 500 },
      onEvent: (event) => events.push(event),
    })
    t.after(() => relay.stop())
    const started = performance.now()
    await relay.start()
    const consumed = await readTopic({ brokers, topic: healthy, expectedCount: 20, timeoutMs: 10_000 })
    const deliveredInMs = performance.now() - started
    assert.equal(consumed.length, 20)
    assert.deepEqual(
      consumed.map((m) => JSON.parse(String(m.value)).id).sort((a: number, b: number) => a - b),
      Array.from({ length: 20 }, (_, id) => id),
    )
    assert.ok(deliveredInMs < 5000, `the 20 healthy messages took ${Math.round(deliveredInMs)} ms`)
    t.diagnostic(`20 healthy messages read back ${Math.round(deliveredInMs)} ms after the relay started`)
    await waitFor(async () => (await countRows(schema)) === 3, { what: 'only the missing topic left' })
    // The missing topic is the topic's own failure: its messages use attempts, per its policy.
    await waitFor(
      () => events.filter((e) => e.type === 'message-failed' && e.topic === missing).length >= 6,
      { what: 'two failed attempts per missing-topic message' },
    )
    const failed = events.filter((e) => e.type === 'message-failed')
    for (const event of failed) {
      assert.equal(event.topic, missing)
      assert.equal(event.deadLettered, false)
      assert.match(event.error, new RegExp(`Kafka topic '${missing}' does not exist`))
    }
    const attempts = await withClient(async (client) => {
      const { rows } = await client.query(`SELECT attempts FROM "${schema}".outbox ORDER BY id`)
      return rows.map((r) => Number(r.attempts))
    })
    assert.equal(attempts.length, 3)
    for (const count of attempts) assert.ok(count >= 1 && count < 50, `attempts ${count}`)
    assert.equal(await outbox.deadLetters(DATABASE_URL).count(), 0)
    // Created now, the topic lets them through on their next retry.
    await createTopic(missing, 1)
    const late = await readTopic({ brokers, topic: missing, expectedCount: 3, timeoutMs: 15_000 })
    assert.deepEqual(late.map((m) => JSON.parse(String(m.value)).id).sort(), [1, 2, 3])
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'outbox emptied' })
  })

  it('a row with a reserved topic name inserted by SQL is dead-lettered; the relay goes on', async (t) => {
    const healthy = uniqueName('ke_iso_after_bad')
    await createTopic(healthy, 2)
    const schema = uniqueName('ke_iso_bad')
    schemas.push(schema)
    const outbox = createPgOutbox({
      topics: { healthy: defineTopic<number>({ name: healthy }) },
      schema,
      kafka,
    })
    await outbox.migrate(DATABASE_URL)
    await withClient((client) =>
      client.query(`INSERT INTO "${schema}".outbox (topic, value) VALUES ('__consumer_offsets', 'x'::bytea)`),
    )
    await outbox.transaction(pool, (_client, topics) =>
      topics.healthy.produceMany(Array.from({ length: 10 }, (_, i) => i)),
    )
    const relay = outbox.relay({ connection: DATABASE_URL, pollingInterval: 50 })
    t.after(() => relay.stop())
    await relay.start()
    const consumed = await readTopic({ brokers, topic: healthy, expectedCount: 10 })
    assert.equal(consumed.length, 10)
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'outbox emptied' })
    assert.deepEqual(
      (await outbox.deadLetters(DATABASE_URL).list()).map((d) => d.topic),
      ['__consumer_offsets'],
    )
    assert.equal(relay.isRunning, true)
  })
})
