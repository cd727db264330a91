// What the TypeORM, MikroORM, Prisma and PGlite adapters do beyond the shared adapter contract
// (test/contract/harness-*.ts): how each data layer's own transaction features interact with the
// outbox, and PGlite's in-process relay. Real PostgreSQL, real PGlite, real Kafka throughout.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { PGlite } from '@electric-sql/pglite'
import { EntitySchema, MikroORM } from '@mikro-orm/postgresql'
import pg from 'pg'
import { DataSource, EntitySchema as TypeOrmEntitySchema } from 'typeorm'
import { createPrismaClient, type TestPrismaClient } from '../prisma/client.ts'
import { createMikroOrmOutbox } from '../src/adapters/mikro-orm/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { createPgliteOutbox, openPgliteOutbox, type PgliteOutbox } from '../src/adapters/pglite/index.ts'
import { createPrismaOutbox, type PrismaTransactionClient } from '../src/adapters/prisma/index.ts'
import { createTypeOrmOutbox } from '../src/adapters/typeorm/index.ts'
import {
  bufferSerializer,
  defineTopic,
  ErrorCodes,
  type MessageTransport,
  type OutboxRecord,
  type TopicProducers,
} from '../src/index.ts'
import { checkDelivery, formatReport, observedFromConsumed, readTopic } from '../src/testing/index.ts'
import { createKafkaTransport } from '../src/transports/kafka/index.ts'
import { outerRollbackCase } from './contract/adapter-contract.ts'
import { mikroOrmHarness } from './contract/harness-mikro-orm.ts'
import { pgliteHarness, sharedPgliteDatabase } from './contract/harness-pglite.ts'
import { prismaHarness } from './contract/harness-prisma.ts'
import { typeormHarness } from './contract/harness-typeorm.ts'
import { createTopic, DATABASE_URL, dropSchema, kafkaBrokers, uniqueName, withClient } from './support/env.ts'
import { orderTopic, RollbackOnPurpose } from './support/workload.ts'

const brokers = kafkaBrokers()
const schemas: string[] = []

after(async () => {
  for (const schema of schemas) await dropSchema(schema)
})

function freshSchema(prefix: string): string {
  const schema = uniqueName(prefix)
  schemas.push(schema)
  return schema
}

function freshTopic(prefix: string): string {
  return uniqueName(prefix).replaceAll('_', '-')
}

function hasCode(code: string) {
  return (error: unknown) => {
    assert.equal((error as { code?: unknown }).code, code, String(error))
    return true
  }
}

async function pgScalar(sql: string): Promise<number> {
  return withClient(async (client) => (await client.query(sql)).rows[0].n as number)
}

/**
 * Messages whose bytes are easy to mangle on the way into the outbox: non-ASCII JSON, a tombstone,
 * binary keys and headers with every byte value, empty values, no key. Each adapter must store
 * exactly the row the pg adapter stores for them.
 */
const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
const sampleTopics = {
  json: defineTopic<{ k: string; text: string } | null>({
    name: 'ke-sample-json',
    key: (m) => m?.k,
    headers: { static: 'yes' },
  }),
  binary: defineTopic<Uint8Array>({ name: 'ke-sample-binary', serializer: bufferSerializer }),
}

async function produceSamples(topics: TopicProducers<typeof sampleTopics>): Promise<void> {
  await topics.json.produce(
    { k: 'ключ-🔑', text: 'Grüße, 世界 "quoted" \\ \u0001' },
    { headers: { trace: 'ž' } },
  )
  await topics.json.produce(null, { key: 'tomb' })
  await topics.binary.produceMany([allBytes, Buffer.alloc(0)], {
    key: Buffer.from([0, 0xff, 0x80, 0]),
    headers: { bin: allBytes, empty: Buffer.alloc(0), none: null },
  })
  await topics.binary.produce(Buffer.from('no key'))
}

interface StoredRow {
  topic: string
  key: Buffer | null
  value: Buffer | null
  headers: unknown
  ordering_hash: number | null
}

const STORED_COLUMNS = 'topic, key, value, headers, ordering_hash'

function normalise(rows: Record<string, unknown>[]): StoredRow[] {
  const bytes = (v: unknown) => (v === null ? null : Buffer.from(v as Uint8Array))
  return rows.map((row) => ({
    topic: row.topic as string,
    key: bytes(row.key),
    value: bytes(row.value),
    headers: row.headers,
    ordering_hash: row.ordering_hash as number | null,
  }))
}

async function pgStoredRows(schema: string): Promise<StoredRow[]> {
  return withClient(async (client) =>
    normalise((await client.query(`SELECT ${STORED_COLUMNS} FROM "${schema}".outbox ORDER BY id`)).rows),
  )
}

/** The reference: the rows the node-postgres adapter stores for the samples. */
let referenceRows: StoredRow[] = []

before(async () => {
  const schema = freshSchema('ke_orm_ref')
  const outbox = createPgOutbox({ topics: sampleTopics, schema })
  await outbox.migrate(DATABASE_URL)
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
  await outbox.transaction(pool, (_client, topics) => produceSamples(topics))
  await pool.end()
  referenceRows = await pgStoredRows(schema)
  assert.equal(referenceRows.length, 5)
})

describe('savepoints', () => {
  outerRollbackCase(typeormHarness, brokers)
  outerRollbackCase(mikroOrmHarness, brokers)
  outerRollbackCase(prismaHarness, brokers)
  outerRollbackCase(pgliteHarness, brokers)
})

describe('TypeORM adapter', () => {
  interface Order {
    id: string
    customer: string
  }
  const schema = freshSchema('ke_typeorm')
  const Orders = new TypeOrmEntitySchema<Order>({
    name: 'Order',
    tableName: 'orders',
    schema,
    columns: { id: { type: 'text', primary: true }, customer: { type: 'text' } },
  })
  const dataSource = new DataSource({ type: 'postgres', url: DATABASE_URL, entities: [Orders], poolSize: 4 })
  const outbox = createTypeOrmOutbox({ topics: sampleTopics, schema })

  before(async () => {
    await dataSource.initialize()
    await outbox.migrate(dataSource)
    await withClient((c) =>
      c.query(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY, customer text NOT NULL)`),
    )
  })
  after(() => dataSource.destroy())

  it('stores exactly the rows the pg adapter stores, saved entities alongside', async () => {
    await outbox.transaction(dataSource, async (manager, topics) => {
      await manager.save(Orders, { id: 'o-1', customer: 'amy' })
      await produceSamples(topics)
    })
    assert.deepEqual(await pgStoredRows(schema), referenceRows)
    assert.equal(await pgScalar(`SELECT count(*)::int AS n FROM "${schema}".orders`), 1)
    await withClient((c) => c.query(`DELETE FROM "${schema}".outbox`))
  })

  it('runs the transaction at the isolation level asked for', async () => {
    const level = await outbox.transaction(
      dataSource,
      async (manager) =>
        (await manager.query('SHOW transaction_isolation'))[0].transaction_isolation as string,
      { isolationLevel: 'SERIALIZABLE' },
    )
    assert.equal(level, 'serializable')
  })

  it('refuses what is not the EntityManager of a postgres DataSource, saying what to pass', async () => {
    assert.throws(() => outbox.in(dataSource as never), hasCode(ErrorCodes.INVALID_ARGUMENT))
    assert.throws(() => outbox.in(null as never), /EntityManager of a TypeORM transaction/)
    const sqlite = new DataSource({ type: 'better-sqlite3', database: ':memory:' })
    assert.throws(() => outbox.in(sqlite.manager), /type 'postgres'/)
    await assert.rejects(outbox.migrate(sqlite), /type 'postgres'/)
    await assert.rejects(
      outbox.transaction({} as never, async () => {}),
      hasCode(ErrorCodes.INVALID_ARGUMENT),
    )
  })
})

describe('MikroORM adapter', () => {
  interface Order {
    id: string
    customer: string
  }
  const Orders = new EntitySchema<Order>({
    name: 'Order',
    tableName: 'orders',
    properties: { id: { type: 'string', primary: true }, customer: { type: 'string' } },
  })
  const schema = freshSchema('ke_mikro')
  const outbox = createMikroOrmOutbox({ topics: sampleTopics, schema })
  let orm: MikroORM
  const count = (table: string) => pgScalar(`SELECT count(*)::int AS n FROM "${schema}".${table}`)
  const clear = () => withClient((c) => c.query(`TRUNCATE "${schema}".outbox, "${schema}".orders`))

  before(async () => {
    orm = await MikroORM.init({ clientUrl: DATABASE_URL, schema, entities: [Orders], pool: { max: 4 } })
    await outbox.migrate(orm)
    await withClient((c) =>
      c.query(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY, customer text NOT NULL)`),
    )
  })
  after(() => orm.close())

  it('stores exactly the rows the pg adapter stores; persisted entities are flushed in the same commit', async () => {
    await outbox.transaction(orm.em.fork(), async (em, topics) => {
      em.persist(em.create(Orders, { id: 'o-1', customer: 'amy' }))
      await produceSamples(topics)
    })
    assert.deepEqual(await pgStoredRows(schema), referenceRows)
    assert.equal(await count('orders'), 1)
    await clear()
  })

  it('a message produced before a flush that fails does not survive', async () => {
    await withClient((c) => c.query(`INSERT INTO "${schema}".orders VALUES ('taken', 'someone')`))
    await assert.rejects(
      outbox.transaction(orm.em.fork(), async (em, topics) => {
        await topics.json.produce({ k: 'k', text: 'before the flush' })
        em.persist(em.create(Orders, { id: 'taken', customer: 'amy' }))
      }),
      /duplicate key/,
    )
    // The app swallows the failed flush and returns normally: PostgreSQL still refuses to commit.
    await outbox
      .transaction(orm.em.fork(), async (em, topics) => {
        await topics.json.produce({ k: 'k', text: 'before the flush' })
        em.persist(em.create(Orders, { id: 'taken', customer: 'amy' }))
        await em.flush().catch(() => {})
      })
      .catch(() => {})
    assert.equal(await count('outbox'), 0)
    assert.equal(await count('orders'), 1)
    await clear()
  })

  it('entities and messages of a rolled-back nested transactional are both discarded', async () => {
    await outbox.transaction(orm.em.fork(), async (em, topics) => {
      em.persist(em.create(Orders, { id: 'kept', customer: 'amy' }))
      await topics.json.produce({ k: 'amy', text: 'kept' })
      await assert.rejects(
        em.transactional(async (inner) => {
          inner.persist(inner.create(Orders, { id: 'discarded', customer: 'bea' }))
          await outbox.in(inner).json.produce({ k: 'bea', text: 'discarded' })
          throw new RollbackOnPurpose()
        }),
        RollbackOnPurpose,
      )
    })
    const ids = await withClient(async (c) =>
      (await c.query(`SELECT id FROM "${schema}".orders ORDER BY id`)).rows.map((r) => r.id),
    )
    assert.deepEqual(ids, ['kept'])
    assert.equal(await count('outbox'), 1)
    await clear()
  })

  it('refuses what is not a PostgreSQL EntityManager, and an em outside em.transactional()', async () => {
    assert.throws(() => outbox.in({} as never), hasCode(ErrorCodes.INVALID_ARGUMENT))
    await assert.rejects(outbox.in(orm.em.fork()).json.produce(null), /em\.transactional/)
    await assert.rejects(outbox.migrate(42 as never), hasCode(ErrorCodes.INVALID_ARGUMENT))
  })
})

describe('Prisma adapter', () => {
  const schema = freshSchema('ke_prisma')
  const outbox = createPrismaOutbox({ topics: sampleTopics, schema })
  let prisma: TestPrismaClient

  before(async () => {
    await outbox.migrate(DATABASE_URL)
    await withClient((c) =>
      c.query(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY, customer text NOT NULL)`),
    )
    prisma = await createPrismaClient(DATABASE_URL, schema)
  })
  after(() => prisma.$disconnect())

  it('stores exactly the rows the pg adapter stores (bytea and jsonb arrays through the driver adapter)', async () => {
    await outbox.transaction(prisma, async (tx, topics) => {
      await tx.order.create({ data: { id: 'o-1', customer: 'amy' } })
      await produceSamples(topics)
    })
    assert.deepEqual(await pgStoredRows(schema), referenceRows)
    assert.equal(await prisma.order.count(), 1)
    await withClient((c) => c.query(`TRUNCATE "${schema}".outbox, "${schema}".orders`))
  })

  it('accepts only the interactive-transaction client, in the types and at runtime', async (t) => {
    // @ts-expect-error the root PrismaClient runs each raw query in a transaction of its own
    const producers = outbox.in(prisma)
    await assert.rejects(producers.json.produce(null), /root PrismaClient/)
    await assert.rejects(
      outbox.in(prisma as unknown as PrismaTransactionClient).json.produce(null),
      hasCode(ErrorCodes.NO_TRANSACTION),
    )
    assert.throws(() => outbox.in({} as never), hasCode(ErrorCodes.INVALID_ARGUMENT))
    const relay = outbox.relay({ connection: prisma as never, kafka: { brokers, autoCreateTopics: true } })
    t.after(() => relay.stop())
    await assert.rejects(relay.runOnce(), /connection string/)
    await relay.stop()
    assert.equal(await pgScalar(`SELECT count(*)::int AS n FROM "${schema}".outbox`), 0)
  })

  it('outbox.transaction() on a transaction client is a savepoint of the outer transaction', async () => {
    await outbox.transaction(prisma, async (tx, topics) => {
      await topics.json.produce({ k: 'outer', text: 'kept' })
      await assert.rejects(
        outbox.transaction(tx, async (inner, innerTopics) => {
          await inner.order.create({ data: { id: 'discarded', customer: 'bea' } })
          await innerTopics.json.produce({ k: 'inner', text: 'discarded' })
          throw new RollbackOnPurpose()
        }),
        RollbackOnPurpose,
      )
    })
    assert.equal(await pgScalar(`SELECT count(*)::int AS n FROM "${schema}".outbox`), 1)
    assert.equal(await prisma.order.count(), 0)
    await withClient((c) => c.query(`TRUNCATE "${schema}".outbox, "${schema}".orders`))
  })
})

describe('the ORM adapters tell the database from `db`', () => {
  const invalid = (message: RegExp) => (error: unknown) => {
    hasCode(ErrorCodes.INVALID_ARGUMENT)(error)
    assert.match(String((error as Error).message), message)
    return true
  }

  it('PostgreSQL handles make PostgreSQL outboxes; handles of other databases are refused, naming what to use', async () => {
    // None of these connect: the database is read from the handle's configuration.
    const dataSource = new DataSource({ type: 'postgres', url: DATABASE_URL })
    assert.equal(createTypeOrmOutbox({ db: dataSource, topics: sampleTopics }).database, 'postgres')
    const sqlite = new DataSource({ type: 'better-sqlite3', database: ':memory:' })
    assert.throws(
      () => createTypeOrmOutbox({ db: sqlite, topics: sampleTopics }),
      invalid(/the DataSource is of type the string "better-sqlite3"; k-entity's TypeORM adapter covers/),
    )
    assert.throws(
      () => createTypeOrmOutbox({ db: dataSource.manager as never, topics: sampleTopics }),
      invalid(/'db' must be the app's TypeORM DataSource/),
    )

    const orm = new MikroORM({
      clientUrl: DATABASE_URL,
      entities: [],
      discovery: { warnWhenNoEntities: false },
    })
    assert.equal(createMikroOrmOutbox({ db: orm, topics: sampleTopics }).database, 'postgres')
    assert.equal(createMikroOrmOutbox({ db: orm.em, topics: sampleTopics }).database, 'postgres')
    // An em of a driver the adapter does not speak (MikroORM's SQLite platform, by its class name).
    const SqlitePlatform = class SqlitePlatform {}
    const sqliteEm = {
      getTransactionContext: () => undefined,
      getPlatform: () => new SqlitePlatform(),
      getConnection: () => ({}),
      isInTransaction: () => false,
    }
    assert.throws(
      () => createMikroOrmOutbox({ db: sqliteEm as never, topics: sampleTopics }),
      invalid(/the EntityManager uses SqlitePlatform; k-entity's MikroORM adapter covers/),
    )

    const prisma = await createPrismaClient(DATABASE_URL, 'public')
    try {
      assert.equal(createPrismaOutbox({ db: prisma, topics: sampleTopics }).database, 'postgres')
    } finally {
      await prisma.$disconnect()
    }
    const sqliteClient = {
      _activeProvider: 'sqlite',
      $connect: async () => {},
      $transaction: async () => {},
      $executeRawUnsafe: async () => 0,
    }
    assert.throws(
      () => createPrismaOutbox({ db: sqliteClient as never, topics: sampleTopics }),
      invalid(/the Prisma client is for the string "sqlite"; k-entity's Prisma adapter covers/),
    )
    await assert.rejects(
      createPrismaOutbox({ topics: sampleTopics }).transaction(sqliteClient as never, async () => {}),
      invalid(/this outbox is for PostgreSQL but the Prisma client is for the string "sqlite"/),
    )
  })
})

describe('PGlite adapter', () => {
  let db: PGlite
  const schema = uniqueName('ke_pglite')
  const topicName = freshTopic('pglite')
  const topics = { orders: orderTopic(topicName) }
  let outbox: PgliteOutbox<typeof topics>
  const count = async (table = 'outbox') =>
    (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".${table}`)).rows[0]?.n

  before(async () => {
    db = await sharedPgliteDatabase()
    outbox = createPgliteOutbox({ db, topics, schema, kafka: { brokers, autoCreateTopics: true } })
    await outbox.migrate()
    await createTopic(topicName, 2, brokers)
  })
  after(() => db.exec(`DROP SCHEMA "${schema}" CASCADE`))

  it('stores exactly the rows the pg adapter stores', async () => {
    const sampleSchema = uniqueName('ke_pglite_samples')
    const samples = createPgliteOutbox({ db, topics: sampleTopics, schema: sampleSchema })
    await samples.migrate()
    await samples.transaction((_tx, producers) => produceSamples(producers))
    const rows = await db.query<Record<string, unknown>>(
      `SELECT ${STORED_COLUMNS} FROM "${sampleSchema}".outbox ORDER BY id`,
    )
    assert.deepEqual(normalise(rows.rows), referenceRows)
    await db.exec(`DROP SCHEMA "${sampleSchema}" CASCADE`)
  })

  it('refuses relay modes and options that make no sense on an embedded database', () => {
    assert.throws(() => outbox.relay({ mode: 'exclusive' as never }), /'single' on PGlite/)
    assert.throws(() => outbox.relay({ connection: db } as never), /does not apply to PGlite/)
    assert.throws(() => createPgliteOutbox({ db: DATABASE_URL as never, topics }), /PGlite database/)
  })

  it('admits one relay per database at a time', async () => {
    const first = outbox.relay()
    const second = outbox.relay()
    try {
      assert.equal(await first.runOnce(), 0)
      await assert.rejects(second.runOnce(), hasCode(ErrorCodes.RELAY_RUNNING))
      await first.stop()
      assert.equal(await second.runOnce(), 0)
    } finally {
      await first.stop()
      await second.stop()
    }
  })

  it('never holds a transaction while waiting for Kafka: the app commits while a send is pending', async (t) => {
    let releaseSend: () => void = () => {}
    const sendGate = new Promise<void>((resolve) => {
      releaseSend = resolve
    })
    let sending: () => void = () => {}
    const sendStarted = new Promise<void>((resolve) => {
      sending = resolve
    })
    const kafka = createKafkaTransport({ brokers, autoCreateTopics: true })
    // The real producer, held back until the test lets it go: a broker that answers slowly.
    const slowKafka: MessageTransport = {
      async send(records: readonly OutboxRecord[]) {
        sending()
        await sendGate
        await kafka.send(records)
      },
      close: () => kafka.close(),
    }
    const relay = outbox.relay({ kafka: slowKafka, pollingInterval: 50 })
    t.after(() => relay.stop())
    await relay.start()
    try {
      await outbox.transaction(async (tx, producers) => {
        await tx.exec(`CREATE TABLE IF NOT EXISTS "${schema}".orders (id text PRIMARY KEY, customer text)`)
        await producers.orders.produce({ orderId: 'first', customer: 'ann', seq: 1 })
      })
      await sendStarted
      const started = performance.now()
      const committed = outbox.transaction(async (tx, producers) => {
        await tx.query(`INSERT INTO "${schema}".orders VALUES ('second', 'ann')`)
        await producers.orders.produce({ orderId: 'second', customer: 'ann', seq: 2 })
      })
      // Had the relay kept a transaction open across the send, this commit would wait for the gate.
      const blocked = new Promise((resolve) => setTimeout(resolve, 5000, 'blocked'))
      assert.notEqual(await Promise.race([committed, blocked]), 'blocked', 'the app waited for the relay')
      const waited = performance.now() - started
      assert.ok(waited < 1000, `the app waited ${Math.round(waited)} ms for the relay`)
      releaseSend()
      const consumed = await readTopic({ brokers, topic: topicName, expectedCount: 2 })
      const report = checkDelivery({
        expected: [
          { id: 'first', key: 'ann', seq: 1 },
          { id: 'second', key: 'ann', seq: 2 },
        ],
        observed: observedFromConsumed(consumed),
      })
      assert.ok(report.ok, formatReport(report))
    } finally {
      releaseSend()
      await relay.stop()
    }
    assert.equal(await count(), 0)
  })

  it('wakes on commit of any db.transaction() that produced, without the outbox helper', async (t) => {
    const topic = freshTopic('pglite-wake')
    await createTopic(topic, 1, brokers)
    const wakeOutbox = createPgliteOutbox({
      db,
      topics: { orders: orderTopic(topic) },
      schema,
      kafka: { brokers, autoCreateTopics: true },
    })
    const produce = (orderId: string, seq: number) =>
      db.transaction(async (tx) => {
        await wakeOutbox.in(tx).orders.produce({ orderId, customer: 'bob', seq })
      })
    await produce('before-start', 1)
    let delivered: () => void = () => {}
    const firstBatch = new Promise<void>((resolve) => {
      delivered = resolve
    })
    const relay = wakeOutbox.relay({
      pollingInterval: 60_000,
      onEvent: (event) => event.type === 'delivered' && delivered(),
    })
    t.after(() => relay.stop())
    await relay.start()
    try {
      // After its first batch the relay sleeps for the polling interval: a minute.
      await firstBatch
      await produce('woken', 2)
      const consumed = await readTopic({
        brokers,
        topic,
        expectedCount: 2,
        idleTimeoutMs: 10_000,
        timeoutMs: 15_000,
      })
      assert.deepEqual(
        consumed.map((record) => JSON.parse(record.value?.toString('utf8') ?? 'null').orderId),
        ['before-start', 'woken'],
      )
    } finally {
      await relay.stop()
    }
  })

  it('a claim inside a bare BEGIN on the shared session sees no uncommitted message', async () => {
    const [insert] = outbox.outbox.dialect.insert(outbox.outbox.table, [
      topics.orders.toRecord({ orderId: 'phantom', customer: 'cid', seq: 1 }),
    ])
    assert.ok(insert)
    const relay = outbox.relay()
    try {
      await db.exec('BEGIN')
      await db.query(insert.text, insert.values)
      assert.equal(await relay.runOnce(), 0, 'nothing claimed while the bare transaction is open')
      await db.exec('ROLLBACK')
      assert.equal(await relay.runOnce(), 0)
    } finally {
      await relay.stop()
    }
    assert.equal(await count(), 0)
  })

  it('handles ids beyond 2^53, which PGlite returns as BigInt', async () => {
    await db.exec(`ALTER TABLE "${schema}".outbox ALTER COLUMN id RESTART WITH 9007199254740993`)
    await outbox.transaction(async (_tx, producers) => {
      await producers.orders.produce({ orderId: 'big-id', customer: 'dan', seq: 1 })
    })
    const relay = outbox.relay()
    try {
      assert.equal(await relay.drain(), 1)
    } finally {
      await relay.stop()
    }
    assert.equal(await count(), 0)
  })

  it('openPgliteOutbox keeps a directory-backed database, and its messages, across a restart', async (t) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'k-entity-pglite-'))
    const topic = freshTopic('pglite-dir')
    await createTopic(topic, 1, brokers)
    const dirTopics = { orders: orderTopic(topic) }
    try {
      const first = await openPgliteOutbox({
        topics: dirTopics,
        dataDir,
        kafka: { brokers, autoCreateTopics: true },
      })
      await first.transaction(async (_tx, producers) => {
        await producers.orders.produce({ orderId: 'survivor', customer: 'eve', seq: 1 })
      })
      await first.close()
      assert.equal(first.db.closed, true, 'close() closes the database openPgliteOutbox created')
      const second = await openPgliteOutbox({
        topics: dirTopics,
        dataDir,
        kafka: { brokers, autoCreateTopics: true },
      })
      try {
        const relay = second.relay()
        t.after(() => relay.stop())
        assert.equal(await relay.drain(), 1)
        await relay.stop()
      } finally {
        await second.close()
      }
      const consumed = await readTopic({ brokers, topic, expectedCount: 1 })
      assert.deepEqual(consumed[0]?.key, Buffer.from('eve'))
    } finally {
      await rm(dataDir, { recursive: true, force: true })
    }
  })
})
