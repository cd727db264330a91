import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { Admin } from '@platformatic/kafka'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { createAdmin } from '../src/admin/index.ts'
import { ClaimFloor } from '../src/dialects/postgres/claim-floor.ts'
import { migrate, migrationScript } from '../src/dialects/postgres/migrate.ts'
import { PARK_MIN_ROWS, parkSql, unparkSql } from '../src/dialects/postgres/parking.ts'
import { RELAY_PLANNER_SETTINGS } from '../src/dialects/postgres/relay-store.ts'
import { claimSql } from '../src/dialects/postgres/sql.ts'
import {
  bufferSerializer,
  defineTopic,
  KEntityError,
  type MessageTransport,
  type OutboxRecord,
  type OutboxRelay,
} from '../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  readTracking,
  trackingHeaders,
} from '../src/testing/index.ts'
import { KafkaTransport } from '../src/transports/kafka/index.ts'
import { DATABASE_URL, dropSchema, uniqueName, waitFor, withClient } from './support/env.ts'

/**
 * Parking (src/dialects/postgres/parking.ts): the rows of a key waiting behind a retry are moved
 * to `<outbox>_parked` and come back once the waiting message is gone. First the statements on
 * rows set up by hand, then real relays against Kafka, reading the topic back to check each key's
 * order.
 */
const schemas: string[] = []
after(async () => {
  for (const schema of schemas) await dropSchema(schema)
})

async function migratedOutbox(prefix: string) {
  const schema = uniqueName(prefix)
  schemas.push(schema)
  const outbox = createPgOutbox({
    topics: { t: defineTopic({ name: 'park-test', serializer: bufferSerializer }) },
    schema,
  })
  await outbox.migrate(DATABASE_URL)
  return { schema, outbox, table: { schema, table: 'outbox' } }
}

/** `n` rows of `topic` with ordering hash `hash` (labels go in the topic column). */
const rows = (schema: string, topic: string, hash: number, n: number) =>
  `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash) SELECT '${topic}', 'k${hash}', 'v', ${hash} FROM generate_series(1, ${n})`

const counts = (schema: string) =>
  withClient(async (client) => {
    const result = await client.query(
      `SELECT (SELECT count(*) FROM "${schema}".outbox)::int AS outbox, (SELECT count(*) FROM "${schema}".outbox_parked)::int AS parked`,
    )
    return result.rows[0] as { outbox: number; parked: number }
  })

async function claimedTopics(
  table: { schema: string; table: string },
  concurrent: boolean,
  budget?: number,
): Promise<string[]> {
  return withClient(async (client) => {
    await client.query(RELAY_PLANNER_SETTINGS)
    await client.query('BEGIN')
    try {
      const sql = claimSql(
        table,
        10_000,
        concurrent,
        undefined,
        budget === undefined ? undefined : { maxBytes: budget },
        true,
      )
      return (await client.query(sql)).rows.map((row: { topic: string }) => row.topic)
    } finally {
      await client.query('ROLLBACK')
    }
  })
}

async function inTransaction(sql: string): Promise<pg.QueryResult> {
  return withClient(async (client) => {
    await client.query('BEGIN')
    const result = await client.query(sql)
    await client.query('COMMIT')
    return result
  })
}

describe('parking statements (PostgreSQL)', () => {
  it('parks the rows behind a long retry, holds back rows produced meanwhile, and brings them back in id order', async () => {
    const { schema, table } = await migratedOutbox('ke_park')
    await withClient(async (client) => {
      await client.query(
        `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash, attempts, available_at) VALUES ('f-waiting', 'k1', 'v', 1, 1, now() + interval '1 hour')`,
      )
      await client.query(rows(schema, 'behind', 1, 500))
      await client.query(rows(schema, 'other', 2, 50))
    })
    const parked = await inTransaction(parkSql(table, ''))
    assert.equal(parked.rowCount, 500)
    assert.deepEqual(await counts(schema), { outbox: 51, parked: 500 })

    // Produced while the key is parked: behind the parked rows.
    await withClient((client) => client.query(rows(schema, 'late', 1, 3)))
    const others = Array.from({ length: 50 }, () => 'other')
    for (const concurrent of [false, true]) {
      assert.deepEqual(await claimedTopics(table, concurrent), others)
      assert.deepEqual(await claimedTopics(table, concurrent, 1_000_000), others)
    }
    // Still waiting: nothing comes back.
    assert.equal((await inTransaction(unparkSql(table))).rows[0]?.unparked, 0)

    // The waiting message is gone (acknowledged, dead-lettered or deleted by hand): the parked
    // rows still hold back the late ones until they are back.
    await withClient((client) => client.query(`DELETE FROM "${schema}".outbox WHERE topic = 'f-waiting'`))
    for (const concurrent of [false, true]) assert.deepEqual(await claimedTopics(table, concurrent), others)
    assert.equal((await inTransaction(unparkSql(table))).rows[0]?.unparked, 500)
    assert.deepEqual(await counts(schema), { outbox: 553, parked: 0 })
    const order = await withClient(
      async (client) =>
        (await client.query(`SELECT topic FROM "${schema}".outbox WHERE ordering_hash = 1 ORDER BY id`)).rows,
    )
    assert.deepEqual(
      order.map((row: { topic: string }) => row.topic),
      [...Array(500).fill('behind'), 'late', 'late', 'late'],
    )
    const expected = [...Array(500).fill('behind'), ...others, 'late', 'late', 'late']
    for (const concurrent of [false, true]) {
      const claimed = await claimedTopics(table, concurrent)
      // The concurrent claim sums per key in its window, but never reorders a key.
      assert.deepEqual(
        claimed.filter((topic) => topic !== 'other'),
        expected.filter((topic) => topic !== 'other'),
      )
    }
  })

  it('parks nothing for a retry due soon, or for a key with few rows among the first ones', async () => {
    const { schema, table } = await migratedOutbox('ke_park')
    await withClient(async (client) => {
      await client.query(
        `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash, attempts, available_at) VALUES ('soon', 'k1', 'v', 1, 1, now() + interval '500 milliseconds')`,
      )
      await client.query(rows(schema, 'behind-soon', 1, 500))
      await client.query(
        `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash, attempts, available_at) VALUES ('sparse', 'k3', 'v', 3, 1, now() + interval '1 hour')`,
      )
      await client.query(rows(schema, 'other', 2, 2000))
      await client.query(rows(schema, 'behind-sparse', 3, PARK_MIN_ROWS))
    })
    assert.equal((await inTransaction(parkSql(table, ''))).rowCount, 0)
  })

  it('skips rows another session holds instead of waiting for them; a key stays in order', async () => {
    const { schema, table } = await migratedOutbox('ke_park')
    await withClient(async (client) => {
      await client.query(
        `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash, attempts, available_at) VALUES ('f-waiting', 'k1', 'v', 1, 1, now() + interval '1 hour')`,
      )
      await client.query(rows(schema, 'held', 1, 10))
      await client.query(rows(schema, 'behind', 1, 300))
    })
    const holder = new pg.Client({ connectionString: DATABASE_URL })
    await holder.connect()
    try {
      await holder.query('BEGIN')
      await holder.query(`SELECT id FROM "${schema}".outbox WHERE topic = 'held' FOR UPDATE`)
      await withClient(async (client) => {
        await client.query("SET statement_timeout = '5s'")
        await client.query('BEGIN')
        assert.equal((await client.query(parkSql(table, ''))).rowCount, 300)
        await client.query('COMMIT')
      })
      await holder.query('ROLLBACK')
    } finally {
      await holder.end()
    }
    await withClient((client) => client.query(`DELETE FROM "${schema}".outbox WHERE topic = 'f-waiting'`))
    // The held rows, older than every parked one, go first; the parked ones after them.
    assert.deepEqual(await claimedTopics(table, false), Array(10).fill('held'))
    await inTransaction(unparkSql(table))
    const claimed = await claimedTopics(table, false)
    assert.deepEqual(claimed, [...Array(10).fill('held'), ...Array(300).fill('behind')])
  })

  it('a session that dies in the middle of a park or an unpark loses nothing', async () => {
    const { schema, table } = await migratedOutbox('ke_park')
    await withClient(async (client) => {
      await client.query(
        `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash, attempts, available_at) VALUES ('f-waiting', 'k1', 'v', 1, 1, now() + interval '1 hour')`,
      )
      await client.query(rows(schema, 'behind', 1, 400))
    })
    const dying = async (sql: string) => {
      const client = new pg.Client({ connectionString: DATABASE_URL })
      await client.connect()
      client.on('error', () => {})
      await client.query('BEGIN')
      await client.query(sql)
      const pid = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0]?.pid as number
      // Killed before its COMMIT, as a relay whose process or connection dies.
      await withClient((killer) => killer.query('SELECT pg_terminate_backend($1)', [pid]))
      await client.end().catch(() => {})
    }
    await dying(parkSql(table, ''))
    assert.deepEqual(await counts(schema), { outbox: 401, parked: 0 })
    await inTransaction(parkSql(table, ''))
    await withClient((client) => client.query(`DELETE FROM "${schema}".outbox WHERE topic = 'f-waiting'`))
    await dying(unparkSql(table))
    assert.deepEqual(await counts(schema), { outbox: 0, parked: 400 })
  })

  it("the claim floor never passes a parked id: rows come back at or above every claim's start", async () => {
    const { schema, table } = await migratedOutbox('ke_park')
    await withClient(async (client) => {
      await client.query(
        `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash, attempts, available_at) VALUES ('f-waiting', 'k1', 'v', 1, 1, now() + interval '1 hour')`,
      )
      await client.query(rows(schema, 'behind', 1, 300))
      await client.query(rows(schema, 'other', 2, 50))
    })
    await inTransaction(parkSql(table, ''))
    // The waiting message is acknowledged: the outbox's lowest live id is now an 'other' row.
    await withClient((client) => client.query(`DELETE FROM "${schema}".outbox WHERE topic = 'f-waiting'`))
    const lowestParked = await withClient(
      async (client) =>
        (await client.query(`SELECT min(id)::text AS id FROM "${schema}".outbox_parked`)).rows[0]
          ?.id as string,
    )
    const floor = new ClaimFloor(table)
    floor.parked = true
    const session = new pg.Client({ connectionString: DATABASE_URL })
    await session.connect()
    try {
      // The floor waits for every transaction of the database that was running at a step.
      await waitFor(
        async () => {
          floor.noteDeleted(1)
          await floor.step((text) => session.query(text))
          return floor.value !== undefined
        },
        { timeout: 30_000, interval: 200, what: 'a claim floor' },
      )
      assert.equal(floor.value, lowestParked)
      await inTransaction(unparkSql(table))
      await session.query(RELAY_PLANNER_SETTINGS)
      await session.query('BEGIN')
      const claimed = (await session.query(claimSql(table, 1000, false, floor.value, undefined, true))).rows
      await session.query('ROLLBACK')
      assert.deepEqual(
        claimed.map((row: { topic: string }) => row.topic),
        [...Array(300).fill('behind'), ...Array(50).fill('other')],
      )
    } finally {
      await session.end()
    }
  })

  it('the migration adds the parked table to an existing install, once; stats and status count parked rows', async () => {
    const { schema, outbox, table } = await migratedOutbox('ke_park')
    // An install from before the parked table: schema version 2.
    await withClient(async (client) => {
      await client.query(`DROP TABLE "${schema}".outbox_parked`)
      await client.query(`DELETE FROM "${schema}".outbox_migrations WHERE version = 3`)
    })
    const applied = await withClient((client) => migrate(client, table))
    assert.deepEqual(applied, { applied: [3], current: 3 })
    assert.deepEqual(await withClient((client) => migrate(client, table)), { applied: [], current: 3 })
    assert.match(migrationScript(table), /CREATE TABLE IF NOT EXISTS "[^"]+"\."outbox_parked"/)

    await withClient(async (client) => {
      await client.query(
        `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash, attempts, available_at) VALUES ('f-waiting', 'k1', 'v', 1, 1, now() + interval '1 hour')`,
      )
      await client.query(rows(schema, 'behind', 1, 200))
    })
    await inTransaction(parkSql(table, ''))
    assert.deepEqual(await counts(schema), { outbox: 1, parked: 200 })
    assert.equal((await outbox.stats(DATABASE_URL)).pending, 201)
    const admin = createAdmin({ url: DATABASE_URL, schema })
    try {
      const status = await admin.status()
      assert.equal(status.pending, 201)
      assert.equal(status.exact, true)
      assert.equal(status.topics.find((topic) => topic.topic === 'behind')?.pending, 200)
    } finally {
      await admin.close?.()
    }
  })
})

// ---------------------------------------------------------------- with relays and Kafka

interface Event {
  id: string
  key: string
  seq: number
}

/**
 * The real Kafka transport; a record with failures left fails alone, as Kafka answers per record,
 * and the later records of its key in the batch are not sent (the relay leaves them untouched).
 */
class FailingRecords implements MessageTransport {
  readonly #kafka: KafkaTransport
  readonly failures = new Map<string, number>()
  constructor(brokers: string[]) {
    this.#kafka = new KafkaTransport({ brokers, autoCreateTopics: true })
  }
  async send(records: readonly OutboxRecord[]): Promise<void> {
    const blocked = new Set<string>()
    const failed: {
      index: number
      error: unknown
      retryable: true
      countsAsAttempt: true
      kafkaAnswered: true
    }[] = []
    const pass: OutboxRecord[] = []
    records.forEach((record, index) => {
      const key = record.key?.toString('utf8') ?? ''
      if (blocked.has(key)) return
      const id = readTracking(record.headers)?.id ?? ''
      const left = this.failures.get(id) ?? 0
      if (left > 0) {
        this.failures.set(id, left - 1)
        blocked.add(key)
        const error = new KEntityError('KE_TRANSPORT_FAILED', `injected failure for ${id}`, {
          retryable: true,
        })
        failed.push({ index, error, retryable: true, countsAsAttempt: true, kafkaAnswered: true })
        return
      }
      pass.push(record)
    })
    if (pass.length > 0) await this.#kafka.send(pass)
    if (failed.length > 0) throw Object.assign(new Error('injected per-record failure'), { failed })
  }
  close() {
    return this.#kafka.close()
  }
}

describe('parking with relays (PostgreSQL + Kafka)', () => {
  const brokers = (process.env.KAFKA_BROKERS ?? '').split(',')
  const pool = new pg.Pool({ connectionString: DATABASE_URL })
  after(() => pool.end())

  async function setUp(retry?: { maxAttempts: number; onExhausted: 'dead-letter' | 'block' }) {
    const topic = uniqueName('park').replaceAll('_', '-')
    const schema = uniqueName('ke_parkrelay')
    schemas.push(schema)
    const admin = new Admin({ clientId: 'k-entity-tests', bootstrapBrokers: brokers })
    await admin.createTopics({ topics: [topic], partitions: 3, replicas: 1 })
    await admin.close()
    const outbox = createPgOutbox({
      topics: {
        events: defineTopic<Event>({
          name: topic,
          key: (e) => e.key,
          headers: (e) => trackingHeaders(e.id, e.seq),
          ...(retry ? { retry } : {}),
        }),
      },
      schema,
      kafka: { brokers, autoCreateTopics: true },
    })
    await outbox.migrate(DATABASE_URL)
    return { topic, schema, outbox }
  }

  /** The waiting message of key `hot` first, `behind` rows of it next, then 100 of other keys. */
  function backlog(behind: number): Event[] {
    const all: Event[] = [{ id: 'hot-0', key: 'hot', seq: 0 }]
    for (let i = 1; i <= behind; i++) all.push({ id: `hot-${i}`, key: 'hot', seq: i })
    for (let i = 0; i < 100; i++) all.push({ id: `cold-${i}`, key: `cold-${i % 5}`, seq: i })
    return all
  }

  async function runUntilParked(schema: string, relays: OutboxRelay[]): Promise<void> {
    for (const relay of relays) await relay.start()
    await waitFor(async () => (await counts(schema)).parked > 0, { timeout: 30_000, what: 'rows parked' })
  }

  async function delivered(topic: string, expected: Event[], label: string) {
    const consumed = await readTopic({ brokers, topic, expectedCount: expected.length })
    const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, `${label}: ${formatReport(report)}`)
    assert.equal(report.lost, 0)
    assert.equal(report.outOfOrder, 0)
  }

  for (const mode of ['single', 'exclusive', 'concurrent'] as const) {
    it(`${mode}: a key parked behind a retry keeps its order, rows produced meanwhile included`, async (t) => {
      const { topic, schema, outbox } = await setUp()
      const all = backlog(1500)
      await outbox.transaction(pool, (_c, tx) => tx.events.produceMany(all))
      const transport = new FailingRecords(brokers)
      transport.failures.set('hot-0', 1)
      // Two relays in concurrent mode: the second sees rows the first parked.
      const relays = Array.from({ length: mode === 'concurrent' ? 2 : 1 }, () =>
        outbox.relay({
          connection: DATABASE_URL,
          kafka: transport,
          mode,
          retryBackoff: { initial: 6000, max: 6000 },
        }),
      )
      t.after(() => Promise.all(relays.map((relay) => relay.stop())))
      await runUntilParked(schema, relays)
      assert.ok((await outbox.stats(DATABASE_URL)).pending >= 1501, 'parked rows count as pending')
      const late = Array.from({ length: 50 }, (_, i) => ({ id: `hot-late-${i}`, key: 'hot', seq: 2000 + i }))
      await outbox.transaction(pool, (_c, tx) => tx.events.produceMany(late))
      await waitFor(async () => (await outbox.stats(DATABASE_URL)).pending === 0, {
        timeout: 60_000,
        what: 'the outbox drained',
      })
      for (const relay of relays) await relay.stop()
      assert.deepEqual(await counts(schema), { outbox: 0, parked: 0 })
      await delivered(topic, [...all, ...late], mode)
    })
  }

  it('dead-lettering the waiting message frees its parked rows; a replay goes last', async (t) => {
    const { topic, schema, outbox } = await setUp({ maxAttempts: 2, onExhausted: 'dead-letter' })
    const all = backlog(1500)
    await outbox.transaction(pool, (_c, tx) => tx.events.produceMany(all))
    const transport = new FailingRecords(brokers)
    transport.failures.set('hot-0', 2)
    const relay = outbox.relay({
      connection: DATABASE_URL,
      kafka: transport,
      retryBackoff: { initial: 6000, max: 6000 },
    })
    t.after(() => relay.stop())
    await runUntilParked(schema, [relay])
    await waitFor(async () => (await outbox.stats(DATABASE_URL)).pending === 0, { timeout: 60_000 })
    const dead = await outbox.deadLetters(DATABASE_URL).list()
    assert.deepEqual(
      dead.map((letter) => readTracking(letter.headers)?.id),
      ['hot-0'],
    )
    assert.equal(await outbox.deadLetters(DATABASE_URL).replay({ ids: [dead[0]?.id as string] }), 1)
    await waitFor(async () => (await outbox.stats(DATABASE_URL)).pending === 0, { timeout: 30_000 })
    await relay.stop()
    assert.deepEqual(await counts(schema), { outbox: 0, parked: 0 })
    // Without its first message, key 'hot' flowed on in order; the replayed one arrived last.
    const consumed = await readTopic({ brokers, topic, expectedCount: all.length })
    const observed = observedFromConsumed(consumed)
    const report = checkDelivery({
      expected: all.filter((e) => e.id !== 'hot-0'),
      observed: observed.filter((o) => o.id !== 'hot-0'),
    })
    assert.ok(report.ok, formatReport(report))
    const hot = observed.filter((o) => o.key === 'hot').map((o) => o.id)
    assert.equal(hot.at(-1), 'hot-0')
  })

  it("onExhausted 'block': the key stays parked through its retries and flows in order once the message goes", async (t) => {
    const { topic, schema, outbox } = await setUp({ maxAttempts: 1, onExhausted: 'block' })
    const all = backlog(1500)
    await outbox.transaction(pool, (_c, tx) => tx.events.produceMany(all))
    const transport = new FailingRecords(brokers)
    transport.failures.set('hot-0', 2)
    const relay = outbox.relay({
      connection: DATABASE_URL,
      kafka: transport,
      retryBackoff: { initial: 5000, max: 5000 },
    })
    t.after(() => relay.stop())
    await runUntilParked(schema, [relay])
    await waitFor(async () => (await outbox.stats(DATABASE_URL)).pending === 0, { timeout: 60_000 })
    await relay.stop()
    assert.equal(await outbox.deadLetters(DATABASE_URL).count(), 0)
    await delivered(topic, all, 'block')
  })
})
