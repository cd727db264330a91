// The pipelined relay: a second session claims the next batch while Kafka has the current one.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import { PostgresRelayStore } from '../src/dialects/postgres/index.ts'
import type { RelayEvent } from '../src/index.ts'
import { checkDelivery, formatReport, observedFromConsumed, readTopic } from '../src/testing/index.ts'
import {
  countRows,
  DATABASE_URL,
  kafkaBrokers,
  recordQueries,
  relaySessionOpener,
  waitFor,
  withClient,
} from './support/env.ts'
import { assertLeaderWaitsAtFence } from './support/pipeline-fence.ts'
import { dropOrderSchemas, orderOutbox, runOrderWorkload } from './support/workload.ts'

const brokers = kafkaBrokers()
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 8 })

const openSession = relaySessionOpener('k-entity-pipeline-test')

function exclusiveStore(schema: string): PostgresRelayStore {
  return new PostgresRelayStore({
    table: { schema, table: 'outbox' },
    connect: openSession,
    claimTimeout: 30_000,
    sessionIdleTimeout: 0,
    concurrent: false,
    listen: false,
    exclusive: true,
  })
}

describe('pipelined relay', () => {
  after(async () => {
    await pool.end()
    await dropOrderSchemas()
  })

  it('claims ahead on a second session and keeps per-key order, deleting every row once', async (t) => {
    const { schema, topicName, outbox, ordersTable } = await orderOutbox(8, 'ke_pipe')
    const workload = await runOrderWorkload({
      pool,
      outbox,
      ordersTable,
      transactions: 200,
      messagesPerTransaction: 50,
      writers: 4,
      keysPerWriter: 16,
      rollbackRate: 0.1,
    })
    let deleted = 0
    const applicationName = `ke-pipeline-${process.pid}`
    const relay = outbox.relay({
      connection: { connectionString: DATABASE_URL, application_name: applicationName },
      maxMessagesPerPoll: 100,
      onEvent: (e: RelayEvent) => {
        if (e.type === 'delivered') deleted += e.count
      },
    })
    // Stopped even when an assertion fails, or the open relay would keep the test process alive.
    t.after(() => relay.stop())
    // Round trips of the relay's sessions: in steady state a batch's delete goes with the next
    // claim on its session, so one round trip per batch instead of two.
    const queries = recordQueries((name) => name === applicationName)
    t.after(() => queries.stop())
    await relay.start()
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'outbox drained', timeout: 120_000 })
    queries.stop()
    // The claim floor's own steps (a few a second, see ClaimFloor) are not what this counts.
    const roundTrips = queries.texts.filter(
      (text) => !/pg_locks|pg_sequence|last_value/.test(String(text)),
    ).length
    // The companion connects when the first full batch is in flight, and stays.
    const sessions = await withClient(async (c) => {
      const result = await c.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [applicationName],
      )
      return result.rows[0].n as number
    })
    await relay.stop()
    assert.equal(sessions, 2, 'the relay used two sessions')
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: workload.committed.length })
    const report = checkDelivery({
      expected: workload.committed,
      forbidden: workload.rolledBack,
      observed: observedFromConsumed(consumed),
    })
    assert.ok(report.ok, formatReport(report))
    assert.equal(deleted, workload.committed.length, 'delivered events count each deleted row once')
    const batches = Math.ceil(workload.committed.length / 100)
    assert.ok(
      roundTrips <= batches * 1.2 + 10,
      `${roundTrips} round trips for ${batches} batches: deletes should go with the next claim`,
    )
  })

  it("single/exclusive claims lock no rows: the two sessions leave out each other's rows by id, even when their claims start together; concurrent claims still lock", async () => {
    const { schema, outbox, ordersTable } = await orderOutbox(1, 'ke_unlocked')
    await runOrderWorkload({
      pool,
      outbox,
      ordersTable,
      transactions: 6,
      messagesPerTransaction: 10,
      writers: 1,
      keysPerWriter: 4,
      rollbackRate: 0,
    })
    const leader = exclusiveStore(schema)
    const companion = leader.companion()
    const ids = (messages: { id: string }[]) => messages.map((m) => Number(m.id))
    try {
      await leader.connect()
      await companion.connect()
      assert.equal(await leader.tryAcquireLeadership(), true)
      // The companion takes the fence at its first claim; afterwards its claims go straight out.
      assert.equal((await companion.claim(1)).length, 1)
      await companion.abandon()

      // Both claims on their way at once: the second waits for the first and leaves its rows out.
      const [first, ahead] = await Promise.all([leader.claim(10), companion.claim(10)])
      assert.equal(first.length, 10)
      assert.equal(ahead.length, 10)
      assert.deepEqual(
        ids(ahead).filter((id) => ids(first).includes(id)),
        [],
        'no row is claimed by both sessions',
      )
      await withClient(async (client) => {
        await client.query('BEGIN')
        const free = await client.query(`SELECT id FROM "${schema}".outbox FOR UPDATE NOWAIT`)
        await client.query('ROLLBACK')
        assert.equal(free.rowCount, 60, 'another session can lock every row: the claims hold none')
      })

      // The leader's delete and its next claim in one statement: the companion's rows stay out.
      const third = await leader.completeAndClaim(
        first.map((m) => m.id),
        10,
      )
      assert.equal(third.length, 10)
      assert.deepEqual(
        ids(third).filter((id) => ids(ahead).includes(id) || ids(first).includes(id)),
        [],
        'the next claim skips the rows the companion holds and the rows just deleted',
      )
      assert.ok(Math.min(...ids(third)) > Math.max(...ids(ahead)), 'oldest first after the companion batch')
      await companion.complete(ahead.map((m) => m.id))
      await leader.complete(third.map((m) => m.id))
      assert.equal(await countRows(schema), 30)
    } finally {
      await leader.close()
      await companion.close()
    }

    const concurrent = new PostgresRelayStore({
      table: { schema, table: 'outbox' },
      connect: openSession,
      claimTimeout: 30_000,
      sessionIdleTimeout: 0,
      concurrent: true,
      listen: false,
      exclusive: false,
    })
    try {
      await concurrent.connect()
      assert.equal(await concurrent.tryAcquireLeadership(), true)
      const claimed = await concurrent.claim(10)
      assert.ok(claimed.length > 0)
      await withClient(async (client) => {
        await client.query('BEGIN')
        await assert.rejects(
          client.query(
            `SELECT id FROM "${schema}".outbox WHERE id = ${Number(claimed[0]?.id)} FOR UPDATE NOWAIT`,
          ),
          (error: { code?: string }) => error.code === '55P03',
          'a concurrent claim holds its rows locked',
        )
        await client.query('ROLLBACK')
      })
      await concurrent.abandon()
    } finally {
      await concurrent.close()
    }
  })

  it('exclusive mode: a new leader waits at the fence until every session of the old leader is gone', async () => {
    const { schema, outbox, ordersTable } = await orderOutbox(1, 'ke_fence')
    await runOrderWorkload({
      pool,
      outbox,
      ordersTable,
      transactions: 4,
      messagesPerTransaction: 10,
      writers: 1,
      keysPerWriter: 4,
      rollbackRate: 0,
    })
    await assertLeaderWaitsAtFence(() => exclusiveStore(schema), 40)
  })
})
