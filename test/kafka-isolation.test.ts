import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { after, describe, it } from 'node:test'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createNodeSqliteOutbox } from '../src/adapters/node-sqlite/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { HELD_ATTEMPTS, type MessageTransport, type SendFailure } from '../src/core/seams.ts'
import { defineTopic, KEntityError, type OutboxRecord, type RelayEvent } from '../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  type TrackedMessage,
  trackingHeaders,
} from '../src/testing/index.ts'
import { KafkaTransport } from '../src/transports/kafka/index.ts'
import { dropDatabase, MYSQL_URL, withMysql } from './contract/mysql-support.ts'
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
const databases: string[] = []
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 })
const mysqlPool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 4 })
const directory = mkdtempSync(join(tmpdir(), 'ke-isolation-'))

/**
 * The real transport, except that records of the `failing` keys are answered as a partition
 * whose leader is moving would be (not sent; retryable; no attempt used) for the first `times`
 * sends that carry them, as @platformatic/kafka reports LEADER_NOT_AVAILABLE.
 */
class LeaderMovingTransport implements MessageTransport {
  readonly #inner: KafkaTransport
  readonly #failing: Set<string>
  #times: number
  constructor(failing: string[], times: number) {
    this.#inner = new KafkaTransport(kafka)
    this.#failing = new Set(failing)
    this.#times = times
  }

  async send(records: readonly OutboxRecord[]): Promise<void> {
    const hit = (r: OutboxRecord) => r.key !== null && this.#failing.has(r.key.toString())
    if (this.#times <= 0 || !records.some(hit)) return this.#inner.send(records)
    this.#times--
    const passed: number[] = []
    const failed: SendFailure[] = []
    records.forEach((record, index) => {
      if (!hit(record)) passed.push(index)
      else {
        const error = new KEntityError('KE_TRANSPORT_FAILED', 'LEADER_NOT_AVAILABLE (injected)', {
          retryable: true,
        })
        failed.push({ index, error, retryable: true, countsAsAttempt: false })
      }
    })
    try {
      await this.#inner.send(passed.map((i) => records[i] as OutboxRecord))
    } catch (error) {
      const inner = (error as { failed?: SendFailure[] }).failed
      if (inner === undefined) throw error
      for (const f of inner) failed.push({ ...f, index: passed[f.index] as number })
    }
    throw Object.assign(new KEntityError('KE_TRANSPORT_FAILED', 'LEADER_NOT_AVAILABLE (injected)'), {
      failed,
    })
  }

  close(): Promise<void> {
    return this.#inner.close()
  }
}

interface Keyed {
  id: string
  key: string
  seq: number
}

function keyedTopic(name: string) {
  return defineTopic<Keyed>({ name, key: (e) => e.key, headers: (e) => trackingHeaders(e.id, e.seq) })
}

/** Three keys, ten messages each, interleaved; per-key sequence in commit order. */
function keyedEvents(prefix: string): Keyed[] {
  return Array.from({ length: 30 }, (_, i) => ({
    id: `${prefix}-${i}`,
    key: `k${i % 3}`,
    seq: Math.floor(i / 3) + 1,
  }))
}

describe('a topic or message Kafka refuses is isolated to its own key', () => {
  after(async () => {
    await pool.end()
    await mysqlPool.end()
    for (const schema of schemas) await dropSchema(schema)
    for (const database of databases) await dropDatabase(database)
    rmSync(directory, { recursive: true, force: true })
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
  for (const dialect of ['postgres', 'mariadb', 'sqlite'] as const) {
    it(`${dialect}: messages held on their partition keep their attempts and their key blocked, then flow in order`, async (t) => {
      const topicName = uniqueName(`ke_iso_held_${dialect}`)
      await createTopic(topicName, 3)
      const transport = new LeaderMovingTransport(['k1'], 4)
      const topics = { events: keyedTopic(topicName) }
      const events = keyedEvents(dialect)
      const seen: RelayEvent[] = []
      const held: number[] = []
      const onEvent = (event: RelayEvent) => {
        seen.push(event)
      }
      let relay: { start(): Promise<void>; stop(): Promise<void> }
      let heldAttempts: () => Promise<number[]>
      let remaining: () => Promise<number>
      if (dialect === 'postgres') {
        const schema = uniqueName('ke_iso_held')
        schemas.push(schema)
        const outbox = createPgOutbox({ topics, schema, kafka: transport })
        await outbox.migrate(DATABASE_URL)
        await outbox.transaction(pool, (_c, tx) => tx.events.produceMany(events))
        relay = outbox.relay({ connection: DATABASE_URL, pollingInterval: 20, onEvent })
        heldAttempts = () =>
          withClient(async (c) =>
            (await c.query(`SELECT attempts FROM "${schema}".outbox WHERE attempts > 0`)).rows.map((r) =>
              Number(r.attempts),
            ),
          )
        remaining = () => countRows(schema)
      } else if (dialect === 'mariadb') {
        const database = uniqueName('ke_iso_held')
        databases.push(database)
        const outbox = createMysqlOutbox({ topics, schema: database, kafka: transport })
        await outbox.migrate(MYSQL_URL)
        await outbox.transaction(mysqlPool, (_c, tx) => tx.events.produceMany(events))
        relay = outbox.relay({ connection: MYSQL_URL, pollingInterval: 20, onEvent })
        const rows = async (sql: string) =>
          withMysql(async (c) => (await c.query(sql))[0] as Array<Record<string, unknown>>)
        heldAttempts = async () =>
          (await rows(`SELECT attempts FROM \`${database}\`.outbox WHERE attempts > 0`)).map((r) =>
            Number(r.attempts),
          )
        remaining = async () => Number((await rows(`SELECT COUNT(*) AS n FROM \`${database}\`.outbox`))[0]?.n)
      } else {
        const db = new DatabaseSync(join(directory, `${topicName}.db`))
        t.after(() => db.close())
        const outbox = createNodeSqliteOutbox({ topics, kafka: transport })
        outbox.migrate(db)
        await outbox.transaction(db, (_db, tx) => tx.events.produceMany(events))
        relay = outbox.relay({ connection: db, pollingInterval: 20, onEvent })
        heldAttempts = async () =>
          (
            db.prepare('SELECT attempts FROM k_entity_outbox WHERE attempts > 0').all() as Array<{
              attempts: number
            }>
          ).map((r) => Number(r.attempts))
        remaining = async () =>
          Number((db.prepare('SELECT COUNT(*) AS n FROM k_entity_outbox').get() as { n: number }).n)
      }
      t.after(() => relay.stop())
      await relay.start()
      await waitFor(() => seen.some((e) => e.type === 'held'), { what: 'a held batch' })
      held.push(...(await heldAttempts()))
      await waitFor(async () => (await remaining()) === 0, { what: 'outbox drained', timeout: 20_000 })
      await relay.stop()
      const consumed = await readTopic({ brokers, topic: topicName, expectedCount: events.length })
      const expected: TrackedMessage[] = events.map((e) => ({ id: e.id, key: e.key, seq: e.seq }))
      const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
      assert.ok(report.ok, formatReport(report))
      // While held, the head of key k1 is marked (attempts = HELD_ATTEMPTS + 0 counted); nothing else failed.
      assert.deepEqual(held, [HELD_ATTEMPTS])
      assert.equal(seen.filter((e) => e.type === 'message-failed').length, 0)
      assert.ok(seen.filter((e) => e.type === 'held').length >= 1)
      // k1's later messages did not overtake its held head: checked by report.outOfOrder above.
      t.diagnostic(
        `${dialect}: ${seen.filter((e) => e.type === 'held').length} held batches, duplicates ${report.duplicates}`,
      )
    })
  }
})
