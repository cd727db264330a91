// What the TypeORM, MikroORM and Prisma adapters for MySQL/MariaDB do beyond the shared adapter
// contract (test/contract-mysql.test.ts): the rows they store, how each data layer's own
// transaction features meet the outbox, the handles they refuse (wrong database, root handle,
// a transaction the server ended) without writing anything, and the `mariadb` session the Prisma
// adapter relays with. Real MariaDB throughout; Kafka is replaced by in-process transports.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { EntitySchema, MikroORM } from '@mikro-orm/mysql'
import { MikroORM as PostgresMikroORM } from '@mikro-orm/postgresql'
import mysql from 'mysql2/promise'
import { DataSource, EntitySchema as TypeOrmEntitySchema } from 'typeorm'
import { createPrismaClient } from '../prisma/client.ts'
import { createPrismaMysqlClient, type TestPrismaClient } from '../prisma/mysql-client.ts'
import { createMikroOrmOutbox } from '../src/adapters/mikro-orm/index.ts'
import { createMikroOrmMysqlOutbox } from '../src/adapters/mikro-orm/mysql.ts'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { openMysql2Session } from '../src/adapters/mysql2/session.ts'
import { createPrismaOutbox } from '../src/adapters/prisma/index.ts'
import { openMariadbSession } from '../src/adapters/prisma/mariadb-session.ts'
import { createPrismaMysqlOutbox, type PrismaTransactionClient } from '../src/adapters/prisma/mysql.ts'
import { createTypeOrmOutbox } from '../src/adapters/typeorm/index.ts'
import { createTypeOrmMysqlOutbox } from '../src/adapters/typeorm/mysql.ts'
import type { MysqlSession } from '../src/dialects/mysql/index.ts'
import {
  bufferSerializer,
  defineTopic,
  ErrorCodes,
  KEntityError,
  type MessageTransport,
  type OutboxRecord,
  type TopicProducers,
} from '../src/index.ts'
import { outerRollbackCase } from './contract/adapter-contract.ts'
import { mikroOrmMysqlHarness } from './contract/harness-mikro-orm-mysql.ts'
import { prismaMysqlHarness } from './contract/harness-prisma-mysql.ts'
import { typeormMysqlHarness } from './contract/harness-typeorm-mysql.ts'
import { countMysqlRows, dropDatabase, MYSQL_URL, withMysql } from './contract/mysql-support.ts'
import { DATABASE_URL, uniqueName } from './support/env.ts'
import { RollbackOnPurpose } from './support/workload.ts'

const databases: string[] = []

after(async () => {
  for (const database of databases) await dropDatabase(database)
})

function freshDatabase(prefix: string): string {
  const database = uniqueName(prefix)
  databases.push(database)
  return database
}

function hasCode(code: string, message?: RegExp) {
  return (error: unknown) => {
    assert.equal((error as { code?: unknown }).code, code, String(error))
    if (message) assert.match(String((error as Error).message), message)
    return true
  }
}

async function createOrders(database: string): Promise<void> {
  await withMysql((c) =>
    c.query(
      `CREATE TABLE \`${database}\`.orders (id VARCHAR(100) PRIMARY KEY, customer VARCHAR(200) NOT NULL) ENGINE=InnoDB`,
    ),
  )
}

async function orderIds(database: string): Promise<string[]> {
  return withMysql(async (c) => {
    const [rows] = await c.query(`SELECT id FROM \`${database}\`.orders ORDER BY id`)
    return (rows as { id: string }[]).map((row) => row.id)
  })
}

async function clear(database: string): Promise<void> {
  await withMysql(async (c) => {
    await c.query(`DELETE FROM \`${database}\`.outbox`)
    await c.query(`DELETE FROM \`${database}\`.orders`)
  })
}

/**
 * Messages whose bytes are easy to mangle on the way into the outbox: non-ASCII JSON, a tombstone,
 * binary keys and headers with every byte value, empty values, no key. Each adapter must store
 * exactly the rows the mysql2 adapter stores for them.
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
    key: Buffer.from([0, 0xff, 0x80, 0, 0x5c, 0x27]),
    headers: { bin: allBytes, empty: Buffer.alloc(0), none: null },
  })
  await topics.binary.produce(Buffer.from('no key'))
}

async function storedRows(database: string): Promise<unknown[]> {
  return withMysql(async (c) => {
    const [rows] = await c.query(
      `SELECT topic, \`key\`, value, CAST(headers AS CHAR) AS headers, ordering_hash FROM \`${database}\`.outbox ORDER BY id`,
    )
    return rows as unknown[]
  })
}

/** The reference: the rows the mysql2 adapter stores for the samples. */
let referenceRows: unknown[] = []

before(async () => {
  const database = freshDatabase('ke_my_orm_ref')
  const outbox = createMysqlOutbox({ topics: sampleTopics, schema: database })
  await outbox.migrate(MYSQL_URL)
  const pool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 1 })
  await outbox.transaction(pool, (_connection, topics) => produceSamples(topics))
  await pool.end()
  referenceRows = await storedRows(database)
  assert.equal(referenceRows.length, 5)
})

const sample = { k: 'k', text: 'must not be stored' }

describe('savepoints', () => {
  outerRollbackCase(typeormMysqlHarness, ['127.0.0.1:9092'])
  outerRollbackCase(mikroOrmMysqlHarness, ['127.0.0.1:9092'])
  outerRollbackCase(prismaMysqlHarness, ['127.0.0.1:9092'])
})

describe('TypeORM adapter on MariaDB (DataSource type mariadb)', () => {
  interface Order {
    id: string
    customer: string
  }
  const database = freshDatabase('ke_my_typeorm')
  const Orders = new TypeOrmEntitySchema<Order>({
    name: 'Order',
    tableName: 'orders',
    database,
    columns: {
      id: { type: 'varchar', length: 100, primary: true },
      customer: { type: 'varchar', length: 200 },
    },
  })
  // On the server's default database: the outbox's database is created by migrate() below.
  const dataSource = new DataSource({ type: 'mariadb', url: MYSQL_URL, entities: [Orders], poolSize: 4 })
  const outbox = createTypeOrmMysqlOutbox({ topics: sampleTopics, schema: database })

  before(async () => {
    await dataSource.initialize()
    assert.deepEqual((await outbox.migrate(dataSource)).applied, [1])
    await createOrders(database)
  })
  after(() => dataSource.destroy())

  it('stores exactly the rows the mysql2 adapter stores, saved entities alongside', async () => {
    await outbox.transaction(dataSource, async (manager, topics) => {
      await manager.save(Orders, { id: 'o-1', customer: 'amy' })
      await produceSamples(topics)
    })
    assert.deepEqual(await storedRows(database), referenceRows)
    assert.deepEqual(await orderIds(database), ['o-1'])
    await clear(database)
  })

  it('a transaction begun by hand on a query runner is accepted; after its commit the manager is refused', async () => {
    const runner = dataSource.createQueryRunner()
    try {
      await runner.startTransaction()
      await outbox.in(runner.manager).json.produce({ k: 'k', text: 'by hand' })
      await runner.commitTransaction()
      await assert.rejects(outbox.in(runner.manager).json.produce(sample), hasCode(ErrorCodes.NO_TRANSACTION))
    } finally {
      await runner.release()
    }
    assert.equal(await countMysqlRows(database), 1)
    await clear(database)
  })

  it('refuses a manager whose transaction the server ended behind TypeORM, writing nothing', async () => {
    await outbox.transaction(dataSource, async (manager, topics) => {
      await manager.save(Orders, { id: 'lost', customer: 'amy' })
      // What a deadlock does: the server rolls back; TypeORM still believes the transaction open.
      await manager.query('ROLLBACK')
      await assert.rejects(
        topics.json.produce(sample),
        hasCode(ErrorCodes.NO_TRANSACTION, /ended by the server|transaction/),
      )
    })
    assert.equal(await countMysqlRows(database), 0)
    assert.deepEqual(await orderIds(database), [])
  })

  it('refuses the root manager and what is not the manager of a mysql/mariadb DataSource, naming the adapter', async () => {
    await assert.rejects(
      outbox.in(dataSource.manager).json.produce(sample),
      hasCode(ErrorCodes.NO_TRANSACTION),
    )
    assert.throws(() => outbox.in(null as never), /EntityManager of a TypeORM transaction/)
    const postgres = new DataSource({ type: 'postgres', url: DATABASE_URL })
    assert.throws(
      () => outbox.in(postgres.manager),
      hasCode(
        ErrorCodes.INVALID_ARGUMENT,
        /type 'mysql' or 'mariadb', this one is the string "postgres"; use k-entity\/typeorm/,
      ),
    )
    await assert.rejects(outbox.migrate(postgres), /use k-entity\/typeorm \(createTypeOrmOutbox\)/)
    await assert.rejects(outbox.stats(dataSource.manager as never), /not an EntityManager/)
    await assert.rejects(
      outbox.transaction({} as never, async () => {}),
      hasCode(ErrorCodes.INVALID_ARGUMENT),
    )
    await assert.rejects(outbox.transaction(dataSource, 'fn' as never), hasCode(ErrorCodes.INVALID_ARGUMENT))
    await assert.rejects(outbox.migrate(42 as never), hasCode(ErrorCodes.INVALID_ARGUMENT))
    assert.equal(await countMysqlRows(database), 0)
  })
})

describe('MikroORM adapter on MySQL/MariaDB', () => {
  interface Order {
    id: string
    customer: string
  }
  const database = freshDatabase('ke_my_mikro')
  const Orders = new EntitySchema<Order>({
    name: 'Order',
    tableName: 'orders',
    properties: { id: { type: 'string', primary: true }, customer: { type: 'string' } },
  })
  const outbox = createMikroOrmMysqlOutbox({ topics: sampleTopics, schema: database })
  let orm: MikroORM

  before(async () => {
    assert.deepEqual((await outbox.migrate(MYSQL_URL)).applied, [1])
    await createOrders(database)
    orm = await MikroORM.init({
      clientUrl: MYSQL_URL,
      dbName: database,
      entities: [Orders],
      pool: { max: 4 },
    })
    // Through the MikroORM instance: the migration's connection is opened from its settings.
    assert.deepEqual(await outbox.migrate(orm), { applied: [], current: 1 })
  })
  after(() => orm.close())

  it('stores exactly the rows the mysql2 adapter stores; persisted entities are flushed in the same commit', async () => {
    await outbox.transaction(orm.em.fork(), async (em, topics) => {
      em.persist(em.create(Orders, { id: 'o-1', customer: 'amy' }))
      await produceSamples(topics)
    })
    assert.deepEqual(await storedRows(database), referenceRows)
    assert.deepEqual(await orderIds(database), ['o-1'])
    await clear(database)
  })

  it('a message produced before a flush that fails is rolled back with it, even if the app swallows the error', async () => {
    await withMysql((c) => c.query(`INSERT INTO \`${database}\`.orders VALUES ('taken', 'someone')`))
    await assert.rejects(
      outbox.transaction(orm.em.fork(), async (em, topics) => {
        await topics.json.produce({ k: 'k', text: 'before the flush' })
        em.persist(em.create(Orders, { id: 'taken', customer: 'amy' }))
      }),
      /Duplicate entry/,
    )
    // MySQL would commit after a swallowed error, but the failed entity stays in the unit of work:
    // transactional()'s own flush fails again and rolls back.
    await assert.rejects(
      outbox.transaction(orm.em.fork(), async (em, topics) => {
        await topics.json.produce({ k: 'k', text: 'before the flush' })
        em.persist(em.create(Orders, { id: 'taken', customer: 'amy' }))
        await em.flush().catch(() => {})
      }),
      /Duplicate entry/,
    )
    assert.equal(await countMysqlRows(database), 0)
    assert.deepEqual(await orderIds(database), ['taken'])
    await clear(database)
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
    assert.deepEqual(await orderIds(database), ['kept'])
    assert.equal(await countMysqlRows(database), 1)
    await clear(database)
  })

  it('refuses an em whose transaction the server ended behind MikroORM, writing nothing', async () => {
    await outbox.transaction(orm.em.fork(), async (em, topics) => {
      await em.insert(Orders, { id: 'lost', customer: 'amy' })
      await em.execute('ROLLBACK')
      await assert.rejects(
        topics.json.produce(sample),
        hasCode(ErrorCodes.NO_TRANSACTION, /ended by the server/),
      )
    })
    assert.equal(await countMysqlRows(database), 0)
    assert.deepEqual(await orderIds(database), [])
  })

  it('refuses an em outside em.transactional() and what is not a MySQL EntityManager, naming the adapter', async () => {
    await assert.rejects(
      outbox.in(orm.em.fork()).json.produce(sample),
      hasCode(ErrorCodes.NO_TRANSACTION, /em\.transactional/),
    )
    await assert.rejects(outbox.in(orm.em).json.produce(sample), hasCode(ErrorCodes.NO_TRANSACTION))
    assert.throws(() => outbox.in({} as never), hasCode(ErrorCodes.INVALID_ARGUMENT))
    // Never connects: MikroORM connects on init() or on the first query.
    const postgres = new PostgresMikroORM({
      clientUrl: DATABASE_URL,
      entities: [],
      discovery: { warnWhenNoEntities: false },
    })
    assert.throws(
      () => outbox.in(postgres.em.fork() as never),
      hasCode(
        ErrorCodes.INVALID_ARGUMENT,
        /uses PostgreSqlPlatform; use k-entity\/mikro-orm \(createMikroOrmOutbox\)/,
      ),
    )
    await assert.rejects(
      outbox.migrate(postgres as never),
      /use k-entity\/mikro-orm \(createMikroOrmOutbox\)/,
    )
    await assert.rejects(outbox.migrate(42 as never), hasCode(ErrorCodes.INVALID_ARGUMENT))
    await assert.rejects(
      outbox.transaction(null as never, async () => {}),
      hasCode(ErrorCodes.INVALID_ARGUMENT),
    )
    assert.equal(await countMysqlRows(database), 0)
  })
})

describe('Prisma adapter on MySQL/MariaDB (@prisma/adapter-mariadb)', () => {
  const database = freshDatabase('ke_my_prisma')
  const outbox = createPrismaMysqlOutbox({ topics: sampleTopics, schema: database })
  let prisma: TestPrismaClient

  before(async () => {
    assert.deepEqual((await outbox.migrate(MYSQL_URL)).applied, [1])
    await createOrders(database)
    prisma = await createPrismaMysqlClient(MYSQL_URL, database)
  })
  after(() => prisma.$disconnect())

  it('stores exactly the rows the mysql2 adapter stores (bytes as prepared-statement parameters)', async () => {
    await outbox.transaction(prisma, async (tx, topics) => {
      await tx.order.create({ data: { id: 'o-1', customer: 'amy' } })
      await produceSamples(topics)
    })
    assert.deepEqual(await storedRows(database), referenceRows)
    assert.equal(await prisma.order.count(), 1)
    await clear(database)
  })

  it('accepts only the interactive-transaction client, in the types and at runtime', async () => {
    // @ts-expect-error the root PrismaClient runs each raw query in a transaction of its own
    const producers = outbox.in(prisma)
    await assert.rejects(
      producers.json.produce(sample),
      hasCode(ErrorCodes.NO_TRANSACTION, /root PrismaClient/),
    )
    let leaked: PrismaTransactionClient | undefined
    await outbox.transaction(prisma, async (tx) => {
      leaked = tx
    })
    await assert.rejects(
      outbox.in(leaked as PrismaTransactionClient).json.produce(sample),
      hasCode(ErrorCodes.NO_TRANSACTION, /already closed/),
    )
    assert.equal(await countMysqlRows(database), 0)
  })

  it("refuses a tx whose transaction the server ended (a deadlock victim's), writing nothing", async () => {
    await outbox.transaction(prisma, async (tx, topics) => {
      await tx.order.create({ data: { id: 'lost', customer: 'amy' } })
      // Prisma keeps such a tx usable, and every later statement through it commits on its own.
      await tx.$executeRawUnsafe('ROLLBACK')
      await assert.rejects(
        topics.json.produce(sample),
        hasCode(ErrorCodes.NO_TRANSACTION, /ended by the server/),
      )
    })
    assert.equal(await countMysqlRows(database), 0)
    assert.equal(await prisma.order.count(), 0)
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
    assert.equal(await countMysqlRows(database), 1)
    assert.equal(await prisma.order.count(), 0)
    await clear(database)
  })

  it('refuses a client for another database and connections it cannot open, naming what to pass', async (t) => {
    // Constructing the PostgreSQL client never connects.
    const postgres = await createPrismaClient(DATABASE_URL, 'public')
    assert.throws(
      () => outbox.in(postgres as never),
      hasCode(
        ErrorCodes.INVALID_ARGUMENT,
        /for the string "postgresql"; use k-entity\/prisma \(createPrismaOutbox\)/,
      ),
    )
    assert.throws(() => outbox.in({} as never), hasCode(ErrorCodes.INVALID_ARGUMENT))
    await assert.rejects(outbox.migrate(prisma as never), /Prisma does not reveal its connection settings/)
    await assert.rejects(outbox.stats(DATABASE_URL), /mysql:\/\/ or mariadb:\/\/ .*use k-entity\/prisma/)
    await assert.rejects(outbox.stats('not a url'), hasCode(ErrorCodes.INVALID_ARGUMENT))
    await assert.rejects(outbox.stats(42 as never), hasCode(ErrorCodes.INVALID_ARGUMENT))
    const relay = outbox.relay({ connection: prisma as never, kafka: acceptingTransport() })
    t.after(() => relay.stop())
    await assert.rejects(relay.runOnce(), /Prisma does not reveal/)
    await relay.stop()
    await assert.rejects(
      outbox.transaction({} as never, async () => {}),
      hasCode(ErrorCodes.INVALID_ARGUMENT),
    )
    assert.equal(await countMysqlRows(database), 0)
  })

  it("where the server cannot prepare SAVEPOINT (MySQL), relies on Prisma's own state, asking the server once per client", async () => {
    const statements: string[] = []
    const engine = {}
    // A transaction client on MySQL: the driver adapter's error for a statement it cannot prepare.
    const tx = {
      _activeProvider: 'mysql',
      _engine: engine,
      async $executeRawUnsafe(sql: string) {
        statements.push(sql.split(' ')[0] as string)
        if (sql.startsWith('SAVEPOINT')) {
          throw Object.assign(new Error('Raw query failed. Code: `1295`'), {
            code: 'P2010',
            meta: { driverAdapterError: { cause: { originalCode: '1295', kind: 'mysql', code: 1295 } } },
          })
        }
        return 1
      },
    }
    await outbox.in(tx).json.produce({ k: 'k', text: 'one' })
    await outbox.in(tx).json.produce({ k: 'k', text: 'two' })
    assert.deepEqual(statements, ['SAVEPOINT', 'UPDATE', 'INSERT', 'UPDATE', 'INSERT'])
  })

  it('dead letters, replay, purge and stats run on the mariadb session', async (t) => {
    const refusing: MessageTransport = {
      async send(records: readonly OutboxRecord[]) {
        if (records.some((r) => r.value?.toString().includes('poison'))) {
          throw new KEntityError(ErrorCodes.TRANSPORT_FAILED, 'refused for good (simulated)', {
            retryable: false,
          })
        }
        if (records.some((r) => r.value?.toString().includes('flaky'))) {
          throw new KEntityError(ErrorCodes.TRANSPORT_FAILED, 'try later (simulated)', { retryable: true })
        }
      },
      async close() {},
    }
    await outbox.transaction(prisma, async (_tx, topics) => {
      await topics.json.produceMany([
        { k: 'a', text: 'fine' },
        { k: 'b', text: 'poison' },
        { k: 'c', text: 'flaky' },
      ])
    })
    const relay = outbox.relay({
      connection: MYSQL_URL,
      kafka: refusing,
      retryBackoff: { initial: 60_000, max: 60_000 },
    })
    t.after(() => relay.stop())
    while ((await relay.runOnce()) > 0);
    await relay.stop()
    const stats = await outbox.stats(MYSQL_URL)
    assert.equal(stats.pending, 1)
    assert.equal(stats.retrying, 1)
    assert.equal(stats.deadLetters, 1)
    const deadLetters = outbox.deadLetters(MYSQL_URL)
    const [dead] = await deadLetters.list({ topic: 'ke-sample-json' })
    assert.match(dead?.value?.toString() ?? '', /poison/)
    assert.deepEqual(dead?.key, Buffer.from('b'))
    assert.match(dead?.errors[0]?.error ?? '', /refused for good/)
    assert.equal(await deadLetters.count({ topic: 'ke-sample-json' }), 1)
    assert.equal(await deadLetters.replay({ ids: [dead?.id as string] }), 1)
    assert.equal(await countMysqlRows(database), 2)
    assert.equal(await deadLetters.count(), 0)
    await withMysql((c) => c.query(`UPDATE \`${database}\`.outbox SET available_at = UTC_TIMESTAMP(6)`))
    const again = outbox.relay({ connection: MYSQL_URL, kafka: refusing })
    t.after(() => again.stop())
    while ((await again.runOnce()) > 0);
    await again.stop()
    assert.equal(await deadLetters.purge({ topic: 'ke-sample-json' }), 1)
    await clear(database)
  })
})

describe('the ORM adapters of the PostgreSQL subpaths detect MySQL/MariaDB from `db`', () => {
  interface Order {
    id: string
    customer: string
  }
  const wrongDatabase = (found: RegExp) =>
    hasCode(
      ErrorCodes.INVALID_ARGUMENT,
      new RegExp(`this outbox is for PostgreSQL but ${found.source}; pass the`),
    )

  it('TypeORM: a DataSource of type mariadb makes k-entity/typeorm speak MySQL', async () => {
    const database = freshDatabase('ke_my_detect_typeorm')
    const Orders = new TypeOrmEntitySchema<Order>({
      name: 'Order',
      tableName: 'orders',
      database,
      columns: {
        id: { type: 'varchar', length: 100, primary: true },
        customer: { type: 'varchar', length: 200 },
      },
    })
    const dataSource = new DataSource({ type: 'mariadb', url: MYSQL_URL, entities: [Orders], poolSize: 2 })
    const outbox = createTypeOrmOutbox({ db: dataSource, topics: sampleTopics, schema: database })
    assert.equal(outbox.database, 'mysql')
    // Without `db` the same subpath is for PostgreSQL, and says how to reach MySQL.
    const postgresOutbox = createTypeOrmOutbox({ topics: sampleTopics, schema: database })
    await assert.rejects(
      postgresOutbox.transaction(dataSource, async () => {}),
      wrongDatabase(/the DataSource is of type the string "mariadb"/),
    )
    const sqlite = new DataSource({ type: 'better-sqlite3', database: ':memory:' })
    assert.throws(
      () => createTypeOrmOutbox({ db: sqlite, topics: sampleTopics }),
      hasCode(ErrorCodes.INVALID_ARGUMENT, /covers DataSource types 'postgres', 'mysql' and 'mariadb'/),
    )
    await dataSource.initialize()
    try {
      assert.deepEqual((await outbox.migrate(dataSource)).applied, [1])
      await createOrders(database)
      await outbox.transaction(dataSource, async (manager, topics) => {
        await manager.insert(Orders, { id: 'o-1', customer: 'amy' })
        await produceSamples(topics)
      })
      assert.deepEqual(await storedRows(database), referenceRows)
      assert.deepEqual(await orderIds(database), ['o-1'])
    } finally {
      await dataSource.destroy()
    }
  })

  it('MikroORM: a MikroORM instance on @mikro-orm/mysql makes k-entity/mikro-orm speak MySQL', async () => {
    const database = freshDatabase('ke_my_detect_mikro')
    const Orders = new EntitySchema<Order>({
      name: 'Order',
      tableName: 'orders',
      properties: { id: { type: 'string', primary: true }, customer: { type: 'string' } },
    })
    // Never connects until the first query, after migrate() created its database.
    const orm = new MikroORM({ clientUrl: MYSQL_URL, dbName: database, entities: [Orders], pool: { max: 2 } })
    try {
      const outbox = createMikroOrmOutbox({ db: orm, topics: sampleTopics, schema: database })
      assert.equal(outbox.database, 'mysql')
      assert.equal(createMikroOrmOutbox({ db: orm.em, topics: sampleTopics }).database, 'mysql')
      const postgresOutbox = createMikroOrmOutbox({ topics: sampleTopics, schema: database })
      await assert.rejects(
        postgresOutbox.transaction(orm.em.fork(), async () => {}),
        wrongDatabase(/the EntityManager uses MySqlPlatform/),
      )
      assert.deepEqual((await outbox.migrate(MYSQL_URL)).applied, [1])
      await createOrders(database)
      // Through the MikroORM instance given as `db`: the relay's connection comes from its settings.
      assert.deepEqual(await outbox.migrate(orm), { applied: [], current: 1 })
      await outbox.transaction(orm.em.fork(), async (em, topics) => {
        em.persist(em.create(Orders, { id: 'o-1', customer: 'amy' }))
        await produceSamples(topics)
      })
      assert.deepEqual(await storedRows(database), referenceRows)
      assert.deepEqual(await orderIds(database), ['o-1'])
    } finally {
      await orm.close()
    }
  })

  it('Prisma: a client generated for provider mysql makes k-entity/prisma speak MySQL', async () => {
    const database = freshDatabase('ke_my_detect_prisma')
    // The client connects on its first query, after migrate() created its database.
    const prisma = await createPrismaMysqlClient(MYSQL_URL, database)
    try {
      const outbox = createPrismaOutbox({ db: prisma, topics: sampleTopics, schema: database })
      assert.equal(outbox.database, 'mysql')
      const postgresOutbox = createPrismaOutbox({ topics: sampleTopics, schema: database })
      await assert.rejects(
        postgresOutbox.transaction(prisma, async () => {}),
        wrongDatabase(/the Prisma client is for the string "mysql"/),
      )
      assert.deepEqual((await outbox.migrate(MYSQL_URL)).applied, [1])
      await createOrders(database)
      await prisma.$transaction(async (tx) => {
        assert.throws(
          () => createPrismaOutbox({ db: tx as never, topics: sampleTopics }),
          hasCode(ErrorCodes.INVALID_ARGUMENT, /'db' must be the app's PrismaClient/),
        )
      })
      await outbox.transaction(prisma, async (tx, topics) => {
        await tx.order.create({ data: { id: 'o-1', customer: 'amy' } })
        await produceSamples(topics)
      })
      assert.deepEqual(await storedRows(database), referenceRows)
      assert.deepEqual(await orderIds(database), ['o-1'])
    } finally {
      await prisma.$disconnect()
    }
  })
})

describe('the mariadb session of the Prisma adapter reads what the mysql2 session reads', () => {
  let mysql2: MysqlSession
  let mariadb: MysqlSession

  before(async () => {
    mysql2 = await openMysql2Session(MYSQL_URL, 'admin')
    mariadb = await openMariadbSession(MYSQL_URL, 'admin')
  })
  after(async () => {
    await mysql2.end()
    await mariadb.end()
  })

  const both = async (text: string, values?: unknown[]) => {
    const [a, b] = [await mysql2.query(text, values), await mariadb.query(text, values)]
    assert.deepEqual(b, a, text)
    return a
  }

  it('numbers, bytes, text, JSON, dates and NULL come back the same', async () => {
    const { rows } = await both(`SELECT 1 AS one, CAST(12345678901 AS SIGNED) AS big, COUNT(*) AS n,
  CAST(1.50 AS DECIMAL(5,2)) AS decimal_value, X'00FF5C27' AS bin, CONVERT('ž "q" \\\\' USING utf8mb4) AS txt,
  JSON_OBJECT('a', 1) AS js, CAST(JSON_ARRAY(1) AS CHAR) AS js_text, TIMESTAMP('2024-01-02 03:04:05.678') AS at,
  NULL AS nothing, GET_LOCK('k-entity-test-lock', 0) AS locked, RELEASE_LOCK('k-entity-test-lock') AS released`)
    assert.equal(rows[0]?.big, 12345678901)
    assert.equal(rows[0]?.decimal_value, '1.50')
    assert.deepEqual(rows[0]?.bin, Buffer.from([0, 0xff, 0x5c, 0x27]))
  })

  it('bytes given for ? arrive intact, even with NO_BACKSLASH_ESCAPES; writes report affected rows', async () => {
    const bytes = Buffer.from([0x5c, 0x27, 0x22, 0x00, 0xff, 0x5c])
    for (const session of [mysql2, mariadb]) {
      await session.query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
    }
    const { rows } = await both('SELECT ? AS echo, CONVERT(? USING utf8mb4) AS text, ? + 1 AS n', [
      bytes,
      Buffer.from("ключ \\ '", 'utf8'),
      41,
    ])
    assert.deepEqual(rows[0]?.echo, bytes)
    assert.equal(rows[0]?.text, "ключ \\ '")
    for (const session of [mysql2, mariadb]) {
      await session.query('CREATE TEMPORARY TABLE t (v BLOB)')
      assert.deepEqual(
        await session.query('INSERT INTO t VALUES (?), (?), (NULL)', [bytes, Buffer.alloc(0)]),
        {
          rows: [],
          affectedRows: 3,
        },
      )
      await session.query('DROP TEMPORARY TABLE t')
    }
  })

  it('errors carry the server error number the dialect reacts to', async () => {
    for (const session of [mysql2, mariadb]) {
      await assert.rejects(session.query('SELECT * FROM test.ke_no_such_table'), { errno: 1146 })
      await assert.rejects(session.query('SELECT * FROM test.ke_no_such_table WHERE id = ?', [1]), {
        errno: 1146,
      })
    }
    const missing = new URL(MYSQL_URL)
    missing.pathname = '/ke_no_such_database'
    await assert.rejects(openMysql2Session(missing.toString(), 'admin'), { errno: 1049 })
    await assert.rejects(openMariadbSession(missing.toString(), 'admin'), { errno: 1049 })
  })

  it('reports a connection the server killed, and end() then returns at once', async () => {
    const session = await openMariadbSession(MYSQL_URL, 'relay')
    const failed = new Promise<Error>((resolve) => session.onError(resolve))
    const { rows } = await session.query('SELECT CONNECTION_ID() AS id')
    await withMysql((c) => c.query(`KILL ${Number(rows[0]?.id)}`))
    assert.ok((await failed) instanceof Error)
    const started = performance.now()
    await session.end()
    assert.ok(performance.now() - started < 1500)
  })
})

function acceptingTransport(): MessageTransport {
  return { send: async () => {}, close: async () => {} }
}
