import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { after, describe, it } from 'node:test'
import { setTimeout as sleep, setImmediate as yieldToRelay } from 'node:timers/promises'
import Database from 'better-sqlite3'
import { createBetterSqliteOutbox } from '../src/adapters/better-sqlite3/index.ts'
import { createNodeSqliteOutbox } from '../src/adapters/node-sqlite/index.ts'
import type { SqliteOutbox, SqliteOutboxOptions } from '../src/dialects/sqlite/sqlite-outbox.ts'
import {
  bufferSerializer,
  defineTopic,
  ErrorCodes,
  KEntityError,
  type OutboxRecord,
  type RelayEvent,
  type TopicMap,
} from '../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  type TrackedMessage,
} from '../src/testing/index.ts'
import { KafkaTransport } from '../src/transports/kafka/index.ts'
import { createTopic, kafkaBrokers, uniqueName, waitFor } from './support/env.ts'
import { type OrderEvent, orderTopic, RollbackOnPurpose } from './support/workload.ts'

const brokers = kafkaBrokers()
const directory = mkdtempSync(join(tmpdir(), 'ke-sqlite-'))

/** What differs between the two drivers: opening a file and the driver's own way to run a transaction. */
interface SqliteDb {
  exec(sql: string): void
  prepare(sql: string): { run(...values: never[]): unknown; all(...values: never[]): unknown[] }
  close(): void
}
interface DriverUnderTest<Db extends SqliteDb> {
  name: string
  open(file: string): Db
  create<M extends TopicMap>(options: SqliteOutboxOptions<M>): SqliteOutbox<M, Db>
  /** A synchronous transaction the way an app using this driver writes one. */
  syncTransaction(db: Db, fn: () => void): void
}

const betterSqlite3: DriverUnderTest<Database.Database> = {
  name: 'better-sqlite3',
  open: (file) => new Database(file),
  create: createBetterSqliteOutbox,
  syncTransaction: (db, fn) => db.transaction(fn)(),
}

const nodeSqlite: DriverUnderTest<DatabaseSync> = {
  name: 'node:sqlite',
  open: (file) => new DatabaseSync(file),
  create: createNodeSqliteOutbox,
  syncTransaction(db, fn) {
    db.exec('BEGIN')
    try {
      fn()
      db.exec('COMMIT')
    } catch (error) {
      db.exec('ROLLBACK')
      throw error
    }
  },
}

function count(db: SqliteDb, table: string): number {
  return Number((db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).all()[0] as { n: number }).n)
}

after(() => rmSync(directory, { recursive: true, force: true }))

for (const driver of [betterSqlite3, nodeSqlite] as DriverUnderTest<SqliteDb>[]) {
  describe(`SQLite outbox on ${driver.name} with a real Kafka broker`, () => {
    const handles: SqliteDb[] = []
    after(() => {
      for (const db of handles) db.close()
    })

    async function setup(partitions: number) {
      const file = join(directory, `${uniqueName('db')}.sqlite`)
      const db = driver.open(file)
      handles.push(db)
      db.exec('PRAGMA journal_mode = WAL')
      const topicName = uniqueName('orders').replaceAll('_', '-')
      await createTopic(topicName, partitions)
      const outbox = driver.create({
        topics: { orders: orderTopic(topicName) },
        kafka: { brokers, autoCreateTopics: true },
      })
      assert.deepEqual(outbox.migrate(db), { applied: [1], current: 1 })
      db.exec('CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL)')
      return { db, file, topicName, outbox }
    }

    it("atomicity: 500 of the driver's own transactions, 20% rolled back, relayed on the app's handle meanwhile", async (t) => {
      const { db, topicName, outbox } = await setup(3)
      const relay = outbox.relay({ connection: db, pollingInterval: 20 })
      // Stopped even when an assertion fails, or the open relay would keep the test process alive.
      t.after(() => relay.stop())
      await relay.start()
      const committed: TrackedMessage[] = []
      const rolledBack: TrackedMessage[] = []
      const seqs = new Map<string, number>()
      const insert = db.prepare('INSERT INTO orders (id, customer) VALUES (?, ?)')
      for (let i = 0; i < 500; i++) {
        const customer = `customer-${i % 7}`
        const seq = (seqs.get(customer) ?? 0) + 1
        seqs.set(customer, seq)
        const event = { orderId: `order-${i}`, customer, seq }
        const tracked = { id: event.orderId, key: customer, seq }
        try {
          driver.syncTransaction(db, () => {
            insert.run(...([event.orderId, customer] as never[]))
            outbox.in(db).orders.produce(event)
            if (i % 5 === 2) throw new RollbackOnPurpose()
          })
          committed.push(tracked)
        } catch (error) {
          if (!(error instanceof RollbackOnPurpose)) throw error
          rolledBack.push(tracked)
        }
        // The app's event loop keeps turning between requests; the relay runs in those gaps.
        if (i % 10 === 0) await yieldToRelay()
      }
      assert.equal(rolledBack.length, 100)
      const consumed = await readTopic({ brokers, topic: topicName, expectedCount: committed.length })
      await waitFor(() => count(db, 'k_entity_outbox') === 0, { what: 'the outbox to drain' })
      await relay.stop()
      const report = checkDelivery({
        expected: committed,
        forbidden: rolledBack,
        observed: observedFromConsumed(consumed),
      })
      assert.ok(report.ok, formatReport(report))
      assert.equal(report.phantom, 0)
      assert.equal(count(db, 'orders'), committed.length, 'business rows = commits')
    })

    it('per-key order: 5,000 messages over 50 keys on 8 partitions, async transactions, relay on its own handle', async (t) => {
      const { db, file, topicName, outbox } = await setup(8)
      // The relay opens the file itself, as a relay in a worker or another process would.
      const relay = outbox.relay({ connection: file, pollingInterval: 20, maxMessagesPerPoll: 500 })
      t.after(() => relay.stop())
      await relay.start()
      const committed: TrackedMessage[] = []
      await Promise.all(
        Array.from({ length: 5 }, async (_, w) => {
          const seqs = new Map<string, number>()
          for (let t = 0; t < 20; t++) {
            const events: OrderEvent[] = Array.from({ length: 50 }, (_, m) => {
              const customer = `customer-${w}-${(t * 50 + m) % 10}`
              const seq = (seqs.get(customer) ?? 0) + 1
              seqs.set(customer, seq)
              return { orderId: `order-${w}-${t}-${m}`, customer, seq }
            })
            await outbox.transaction(db, async (tx, topics) => {
              const insert = tx.prepare('INSERT INTO orders (id, customer) VALUES (?, ?)')
              for (const e of events) insert.run(...([e.orderId, e.customer] as never[]))
              // Work that awaits inside the transaction: other writers queue behind it.
              await sleep(1)
              topics.orders.produceMany(events)
            })
            committed.push(...events.map((e) => ({ id: e.orderId, key: e.customer, seq: e.seq })))
          }
        }),
      )
      assert.equal(committed.length, 5000)
      const consumed = await readTopic({ brokers, topic: topicName, expectedCount: 5000 })
      await waitFor(() => count(db, 'k_entity_outbox') === 0, { what: 'the outbox to drain' })
      await relay.stop()
      const report = checkDelivery({ expected: committed, observed: observedFromConsumed(consumed) })
      assert.ok(report.ok, formatReport(report))
      assert.equal(report.outOfOrder, 0)
      assert.equal(report.keysOnSeveralPartitions, 0)
    })

    it('keeps key, header and payload bytes exactly, including binary, tombstones and null keys', async (t) => {
      const db = driver.open(':memory:')
      handles.push(db)
      const jsonName = uniqueName('json').replaceAll('_', '-')
      const binName = uniqueName('bin').replaceAll('_', '-')
      const json = defineTopic<unknown>({ name: jsonName, key: (m) => (m as { k: string }).k })
      const binary = defineTopic<Uint8Array>({ name: binName, serializer: bufferSerializer })
      const outbox = driver.create({
        topics: { json, binary },
        schema: 'edge',
        table: 'events',
        kafka: { brokers, autoCreateTopics: true },
      })
      outbox.migrate(db)
      const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
      const binaryKey = Buffer.from([0, 1, 0xff, 0x80, 0, 0x27])
      await outbox.transaction(db, (_db, topics) => {
        topics.json.produce(
          { k: 'ключ-🔑', text: 'Grüße \u0000 "q"' },
          { headers: { trace: 'ž', "it's": '' } },
        )
        topics.json.produce(null, { key: 'tomb' })
        topics.binary.produce(allBytes, { key: binaryKey, headers: { bin: allBytes } })
        topics.binary.produce(Buffer.from('no key'))
      })
      assert.equal(count(db, 'edge_events'), 4)
      const relay = outbox.relay({ connection: db })
      t.after(() => relay.stop())
      assert.equal(await relay.drain(), 4)
      await relay.stop()
      const [jsonRead, binRead] = await Promise.all([
        readTopic({ brokers, topic: jsonName, expectedCount: 2 }),
        readTopic({ brokers, topic: binName, expectedCount: 2 }),
      ])
      assert.deepEqual(jsonRead[0]?.key, Buffer.from('ключ-🔑'))
      assert.deepEqual(JSON.parse(jsonRead[0]?.value?.toString() ?? ''), {
        k: 'ключ-🔑',
        text: 'Grüße \u0000 "q"',
      })
      assert.deepEqual(jsonRead[0]?.headers, [
        ['trace', Buffer.from('ž')],
        ["it's", Buffer.alloc(0)],
      ])
      assert.equal(jsonRead[1]?.value, null)
      const withKey = binRead.find((m) => m.key !== null)
      assert.deepEqual(withKey?.key, binaryKey)
      assert.deepEqual(withKey?.value, allBytes)
      assert.deepEqual(withKey?.headers, [['bin', allBytes]])
      assert.deepEqual(binRead.find((m) => m.key === null)?.value, Buffer.from('no key'))
      assert.equal(count(db, 'edge_events'), 0)
    })

    it('single relay only: exclusive and concurrent modes and a second relay are refused, saying why', async (t) => {
      const { db, file, outbox } = await setup(1)
      for (const mode of ['exclusive', 'concurrent'] as const) {
        assert.throws(
          () => outbox.relay({ connection: db, mode }),
          (error: unknown) => {
            assert.equal((error as KEntityError).code, ErrorCodes.INVALID_ARGUMENT)
            assert.match((error as Error).message, /single writer.*one relay/s)
            return true
          },
        )
      }
      const first = outbox.relay({ connection: db })
      t.after(() => first.stop())
      assert.equal(await first.runOnce(), 0)
      // Another handle on the same file is the same outbox.
      const second = outbox.relay({ connection: file })
      t.after(() => second.stop())
      await assert.rejects(second.runOnce(), { code: ErrorCodes.RELAY_RUNNING })
      await first.stop()
      assert.equal(await second.runOnce(), 0)
      await second.stop()
      assert.throws(() => outbox.relay({ connection: ':memory:' }), { code: ErrorCodes.INVALID_ARGUMENT })
      assert.throws(() => outbox.relay({ connection: {} as never }), { code: ErrorCodes.INVALID_ARGUMENT })
      assert.throws(() => outbox.relay(undefined as never), { code: ErrorCodes.INVALID_ARGUMENT })
    })

    it('refuses to produce outside a transaction, rejects bad input before writing, rolls back with the transaction', async () => {
      const { db, outbox } = await setup(1)
      const event = { orderId: 'o', customer: 'c', seq: 1 }
      assert.throws(
        () => outbox.in(db).orders.produce(event),
        (error: unknown) => {
          assert.equal((error as KEntityError).code, ErrorCodes.NO_TRANSACTION)
          assert.match((error as Error).message, /transaction/)
          return true
        },
      )
      assert.throws(() => outbox.in({} as never), { code: ErrorCodes.INVALID_ARGUMENT })
      assert.throws(
        () =>
          driver.syncTransaction(db, () => outbox.in(db).orders.produceMany([event, { bad: 1n } as never])),
        { code: ErrorCodes.SERIALIZATION_FAILED },
      )
      await assert.rejects(
        outbox.transaction(db, (_db, topics) => {
          topics.orders.produce(event)
          throw new RollbackOnPurpose()
        }),
        RollbackOnPurpose,
      )
      assert.throws(
        () => driver.create({ topics: { audit: defineTopic({ name: 'audit', outbox: false }) } }),
        /outbox: false/,
      )
      assert.equal(count(db, 'k_entity_outbox'), 0)
      assert.deepEqual(outbox.migrate(db), { applied: [], current: 1 })
      assert.match(outbox.migrationSql(), /CREATE TABLE "k_entity_outbox"/)
    })

    it('a message Kafka refuses for good is dead-lettered with its error, the rest of its key follows; list, replay, purge, stats', async (t) => {
      const { db, file, topicName, outbox } = await setup(2)
      const kafka = new KafkaTransport({ brokers, autoCreateTopics: true })
      const refusing = {
        async send(records: readonly OutboxRecord[]) {
          if (records.some((r) => r.value?.toString().includes('"poison"'))) {
            throw new KEntityError(ErrorCodes.TRANSPORT_FAILED, 'record too large (simulated)', {
              retryable: false,
            })
          }
          await kafka.send(records)
        },
        close: () => kafka.close(),
      }
      const events = [
        { orderId: 'before', customer: 'k', seq: 1 },
        { orderId: 'poison', customer: 'k', seq: 2 },
        { orderId: 'after', customer: 'k', seq: 3 },
        { orderId: 'elsewhere', customer: 'j', seq: 1 },
      ]
      await outbox.transaction(db, (_db, topics) => topics.orders.produceMany(events))
      const failures: RelayEvent[] = []
      const relay = outbox.relay({
        connection: db,
        kafka: refusing,
        onEvent: (e) => {
          if (e.type === 'message-failed') failures.push(e)
        },
      })
      t.after(() => relay.stop())
      while ((await relay.runOnce()) > 0);
      await relay.stop()
      const consumed = await readTopic({ brokers, topic: topicName, expectedCount: 3 })
      const report = checkDelivery({
        expected: events
          .filter((e) => e.orderId !== 'poison')
          .map((e) => ({ id: e.orderId, key: e.customer, seq: e.seq })),
        forbidden: [{ id: 'poison' }],
        observed: observedFromConsumed(consumed),
      })
      assert.ok(report.ok, formatReport(report))
      assert.equal(failures.length, 1)
      assert.equal(count(db, 'k_entity_outbox'), 0)
      assert.deepEqual(await outbox.stats(db), {
        pending: 0,
        retrying: 0,
        deadLetters: 1,
        oldestPendingMs: 0,
      })
      const deadLetters = outbox.deadLetters(file)
      const [dead] = await deadLetters.list({ topic: topicName })
      assert.equal(await deadLetters.count(), 1)
      assert.match(dead?.value?.toString() ?? '', /"poison"/)
      assert.deepEqual(dead?.key, Buffer.from('k'))
      assert.equal(dead?.attempts, 1)
      assert.match(dead?.errors[0]?.error ?? '', /record too large/)
      await assert.rejects(deadLetters.replay({}), { code: ErrorCodes.INVALID_ARGUMENT })
      assert.equal(await deadLetters.replay({ ids: [dead?.id as string] }), 1)
      assert.equal(count(db, 'k_entity_outbox'), 1)
      const again = outbox.relay({ connection: db, kafka: refusing })
      t.after(() => again.stop())
      await again.runOnce()
      await again.stop()
      assert.equal(await deadLetters.purge({ topic: topicName }), 1)
      assert.deepEqual(await outbox.stats(db), {
        pending: 0,
        retrying: 0,
        deadLetters: 0,
        oldestPendingMs: 0,
      })
    })
  })
}
