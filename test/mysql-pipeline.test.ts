// The pipelined relay on MySQL/MariaDB: a companion session claims the next batch while Kafka has
// the current one, and a new leader waits until every session of the old one is gone.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import mysql from 'mysql2/promise'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { openMysql2Session } from '../src/adapters/mysql2/session.ts'
import type { OutboxTable } from '../src/core/seams.ts'
import { MysqlRelayStore } from '../src/dialects/mysql/relay-store.ts'
import { defineTopic } from '../src/index.ts'
import { dropDatabase, MYSQL_URL } from './contract/mysql-support.ts'
import { assertLeaderWaitsAtFence } from './support/pipeline-fence.ts'

const database = `kentity_pipeline_${process.pid}`
const table: OutboxTable = { schema: database, table: 'outbox' }
/** The relay sessions connect to a database of their own, by which this test finds them. */
const relayDatabase = `${database}_relay`

let admin: mysql.Connection

function relayUrl(): string {
  const url = new URL(MYSQL_URL)
  url.pathname = `/${relayDatabase}`
  return url.toString()
}

function store(concurrent: boolean): MysqlRelayStore {
  return new MysqlRelayStore({
    table,
    connect: () => openMysql2Session(relayUrl(), 'relay'),
    sessionTimeout: 30_000,
    concurrent,
  })
}

/** A relay store and its companion, both connected, for `fn`; closed afterwards. */
async function withPipelinedPair(
  concurrent: boolean,
  fn: (primary: MysqlRelayStore, companion: MysqlRelayStore) => Promise<void>,
): Promise<void> {
  const primary = store(concurrent)
  const companion = primary.companion()
  try {
    await primary.connect()
    await companion.connect()
    assert.equal(await primary.tryAcquireLeadership(), true)
    await fn(primary, companion)
  } finally {
    await primary.close()
    await companion.close()
  }
}

/** A fresh outbox of `count` rows over `keys` ordering hashes (row i has hash i % keys); returns their ids. */
async function outboxWith(count: number, keys: number): Promise<string[]> {
  await admin.query(`DELETE FROM \`${database}\`.outbox`)
  const rows = Array.from({ length: count }, (_, i) => ['t', `k${i % keys}`, `v${i}`, 1000 + (i % keys)])
  await admin.query(`INSERT INTO \`${database}\`.outbox (topic, \`key\`, value, ordering_hash) VALUES ?`, [
    rows,
  ])
  const [ids] = (await admin.query(
    `SELECT CAST(o.id AS CHAR) AS id FROM \`${database}\`.outbox AS o ORDER BY o.id`,
  )) as [{ id: string }[], unknown]
  return ids.map((row) => row.id)
}

before(async () => {
  admin = await mysql.createConnection(MYSQL_URL)
  await dropDatabase(database)
  await dropDatabase(relayDatabase)
  const outbox = createMysqlOutbox({
    topics: { t: defineTopic<string>({ name: 't', key: (s) => s }) },
    schema: database,
  })
  await outbox.migrate(MYSQL_URL)
  await outbox.close()
  await admin.query(`CREATE DATABASE \`${relayDatabase}\``)
})

after(async () => {
  await dropDatabase(database)
  await dropDatabase(relayDatabase)
  await admin.end()
})

describe('pipelined relay on MySQL/MariaDB', () => {
  it("single/exclusive: the companion's claim leaves out the leader's rows by id and takes the next ones without waiting", async () => {
    const ids = await outboxWith(30, 4)
    await withPipelinedPair(false, async (leader, companion) => {
      const first = await leader.claim(10)
      const ahead = await companion.claim(10)
      assert.deepEqual(
        first.map((m) => m.id),
        ids.slice(0, 10),
      )
      assert.deepEqual(
        ahead.map((m) => m.id),
        ids.slice(10, 20),
        'the next ten, although the first ten are still there and locked',
      )
      // Once the leader's delete has committed, nothing of its batch is left out any more.
      await leader.complete(first.map((m) => m.id))
      await companion.complete([])
      const next = await companion.claim(100)
      assert.deepEqual(
        next.map((m) => m.id),
        ids.slice(10),
      )
      await companion.abandon()
    })
  })

  it('exclusive: a new leader waits at the fence until every session of the old leader is gone', async () => {
    await outboxWith(40, 4)
    await assertLeaderWaitsAtFence(() => store(false), 40)
  })

  it('concurrent: the companion joins as a member of its own and claims keys the primary does not hold', async () => {
    // More keys than the primary's batch holds: the companion can win only keys it does not hold.
    await outboxWith(64, 32)
    await withPipelinedPair(true, async (primary, companion) => {
      const first = await primary.claim(8)
      const ahead = await companion.claim(8)
      assert.ok(first.length > 0 && ahead.length > 0, `claimed ${first.length} and ${ahead.length}`)
      const keysOf = (batch: typeof first) => new Set(batch.map((m) => m.key?.toString()))
      const shared = [...keysOf(ahead)].filter((key) => keysOf(first).has(key))
      assert.deepEqual(shared, [], 'no key is held by both sessions')
      const firstIds = new Set(first.map((m) => m.id))
      assert.ok(
        ahead.every((m) => !firstIds.has(m.id)),
        'no row is held by both sessions',
      )
      await primary.abandon()
      await companion.abandon()
    })
  })
})
