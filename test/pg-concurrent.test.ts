import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { wakeChannel } from '../src/dialects/postgres/names.ts'
import type { OutboxRelay } from '../src/index.ts'
import { checkDelivery, formatReport, observedFromConsumed, readTopic } from '../src/testing/index.ts'
import { countRows, DATABASE_URL, kafkaBrokers, recordQueries, waitFor, withClient } from './support/env.ts'
import { assertRelaysShareWorkload } from './support/shared-drain.ts'
import { dropOrderSchemas, orderOutbox, orderTopic, runOrderWorkload } from './support/workload.ts'

const brokers = kafkaBrokers()
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 8 })

describe('concurrent relays and wake-up', () => {
  after(async () => {
    await pool.end()
    await dropOrderSchemas()
  })

  it('four concurrent relays share 20,000 messages over 64 keys without breaking per-key order', async (t) => {
    const { shares, report } = await assertRelaysShareWorkload(t, {
      prefix: 'ke_conc',
      relays: 4,
      relayOptions: {},
      pool,
      workload: {
        transactions: 400,
        messagesPerTransaction: 50,
        writers: 4,
        keysPerWriter: 16,
        rollbackRate: 0.1,
      },
    })
    console.log(
      `# concurrent shares: ${JSON.stringify([...shares.entries()])}, duplicates ${report.duplicates}`,
    )
  })

  it('a relay whose session dies mid-batch loses its claim to the others; nothing lost, order kept', async (t) => {
    const { schema, topicName, outbox, ordersTable } = await orderOutbox(4, 'ke_conc')
    const workload = await runOrderWorkload({
      pool,
      outbox,
      ordersTable,
      transactions: 100,
      messagesPerTransaction: 20,
      writers: 2,
      keysPerWriter: 8,
      rollbackRate: 0,
    })
    let stalled: (() => void) | undefined
    const slow = {
      send: () => new Promise<void>((resolve) => (stalled = resolve)),
      close: async () => {},
    }
    const victim = outbox.relay({
      connection: DATABASE_URL,
      mode: 'concurrent',
      kafka: slow,
      maxMessagesPerPoll: 100,
    })
    const others: OutboxRelay[] = []
    // Stopped even when an assertion fails, or the open relays would keep the test process alive.
    t.after(async () => {
      for (const relay of [...others, victim]) await relay.stop()
    })
    const claimed = victim.runOnce()
    await waitFor(() => stalled !== undefined, { what: 'victim claimed a batch' })
    // The victim is the only relay session yet, and its claim stays open while its send is stalled.
    const terminated = await withClient((c) =>
      c.query(
        `SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity WHERE application_name = 'k-entity-relay' AND state LIKE 'idle in transaction%'`,
      ),
    )
    assert.deepEqual(
      terminated.rows.map((row) => row.terminated),
      [true],
      "exactly the victim's session was terminated",
    )
    others.push(
      ...[0, 1].map(() =>
        outbox.relay({ connection: DATABASE_URL, mode: 'concurrent', pollingInterval: 20 }),
      ),
    )
    for (const relay of others) await relay.start()
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'others drained the outbox' })
    stalled?.()
    await assert.rejects(claimed, 'the victim cannot acknowledge after losing its session')
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: workload.committed.length })
    for (const relay of others) await relay.stop()
    await victim.stop()
    const report = checkDelivery({ expected: workload.committed, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
  })

  for (const wake of ['NOTIFY', 'the in-process signal'] as const) {
    it(`wakes on ${wake} at commit instead of waiting for the polling interval`, async (t) => {
      const { schema, topicName, outbox } = await orderOutbox(1, 'ke_conc')
      const relay = outbox.relay({
        connection: DATABASE_URL,
        pollingInterval: 600_000,
        listen: wake === 'NOTIFY',
      })
      t.after(() => relay.stop())
      await relay.start()
      await new Promise((resolve) => setTimeout(resolve, 300))
      // Another outbox object is another process as far as the in-process signal goes.
      const producer =
        wake === 'NOTIFY' ? createPgOutbox({ topics: { orders: orderTopic(topicName) }, schema }) : outbox
      const client = new pg.Client({ connectionString: DATABASE_URL })
      t.after(() => client.end().catch(() => {}))
      await client.connect()
      const latencies: number[] = []
      for (let i = 0; i < 5; i++) {
        // in() with the app's own BEGIN/COMMIT: the write goes at produce(), the COMMIT wakes.
        await client.query('BEGIN')
        await producer.in(client).orders.produce({ orderId: `w-${i}`, customer: 'c', seq: i })
        await client.query('COMMIT')
        const committed = Date.now()
        await readAtLeast(topicName, i + 1)
        latencies.push(Date.now() - committed)
      }
      await client.end()
      await relay.stop()
      assert.ok(
        Math.max(...latencies) < 5000,
        `latencies ${latencies} should be far below the 600 s polling interval`,
      )
    })
  }

  it('spaces NOTIFYs, and a commit that sent none after a woken poll is still relayed at once', async (t) => {
    const { schema, topicName, outbox } = await orderOutbox(1, 'ke_conc')
    let relayed = 0
    const relay = outbox.relay({
      connection: DATABASE_URL,
      pollingInterval: 600_000,
      onEvent: (event) => {
        if (event.type === 'delivered') relayed += event.count
      },
    })
    t.after(() => relay.stop())
    await relay.start()
    const listener = new pg.Client({ connectionString: DATABASE_URL })
    const first = new pg.Client({ connectionString: DATABASE_URL })
    const second = new pg.Client({ connectionString: DATABASE_URL })
    t.after(async () => {
      for (const client of [listener, first, second]) await client.end().catch(() => {})
    })
    for (const client of [listener, first, second]) await client.connect()
    let notifications = 0
    listener.on('notification', () => notifications++)
    await listener.query(`LISTEN ${wakeChannel({ schema, table: 'outbox' })}`)
    await new Promise((resolve) => setTimeout(resolve, 300))
    // Two transactions produce within the spacing window, so only the first queues a NOTIFY. The
    // first commits and its NOTIFY wakes the relay, which relays it; only then does the second
    // commit, with no NOTIFY of its own: the relay must find it without waiting 600 s. On a
    // machine slow enough to let the window pass between the two produces, the second sends its
    // own NOTIFY; the pair is then tried again.
    let delivered = 0
    let pairs = 0
    for (; pairs < 5; pairs++) {
      const before = notifications
      await new Promise((resolve) => setTimeout(resolve, 20))
      await first.query('BEGIN')
      await second.query('BEGIN')
      await outbox.in(first).orders.produce({ orderId: `a-${pairs}`, customer: 'a', seq: pairs })
      await outbox.in(second).orders.produce({ orderId: `b-${pairs}`, customer: 'b', seq: pairs })
      await first.query('COMMIT')
      await waitFor(() => relayed > delivered, {
        timeout: 5000,
        interval: 2,
        what: 'the first commit relayed',
      })
      delivered++
      await second.query('COMMIT')
      const committed = Date.now()
      await waitFor(() => relayed > delivered, { timeout: 10_000, what: 'the second commit relayed' })
      const latency = Date.now() - committed
      await readAtLeast(topicName, ++delivered)
      await waitFor(() => notifications > before, { timeout: 5000, what: 'the first NOTIFY' })
      await new Promise((resolve) => setTimeout(resolve, 50))
      if (notifications - before === 1) {
        assert.ok(latency < 1000, `the commit without a NOTIFY took ${latency} ms to reach Kafka`)
        break
      }
    }
    assert.ok(pairs < 5, 'every pair of produces was further apart than the NOTIFY spacing')
  })

  it('an exclusive standby is not woken by commits: it tries the leader lock once per leaderCheckInterval', async (t) => {
    const { schema, outbox } = await orderOutbox(1, 'ke_conc')
    const leading = { value: false }
    const leader = outbox.relay({
      connection: DATABASE_URL,
      mode: 'exclusive',
      onEvent: (event) => {
        if (event.type === 'leadership') leading.value = event.leader
      },
    })
    t.after(() => leader.stop())
    await leader.start()
    await waitFor(() => leading.value, { timeout: 10_000, what: 'the first relay to lead' })
    const standby = outbox.relay({
      connection: { connectionString: DATABASE_URL, application_name: 'ke-standby' },
      mode: 'exclusive',
      leaderCheckInterval: 60_000,
    })
    t.after(() => standby.stop())
    await standby.start()
    await new Promise((resolve) => setTimeout(resolve, 300))
    const queries = recordQueries((name) => name === 'ke-standby')
    t.after(() => queries.stop())
    const client = new pg.Client({ connectionString: DATABASE_URL })
    t.after(() => client.end().catch(() => {}))
    await client.connect()
    // Further apart than the NOTIFY spacing, so every commit notifies; each COMMIT also sends
    // the in-process signal to the outbox's relays, the standby among them.
    for (let i = 0; i < 20; i++) {
      await client.query('BEGIN')
      await outbox.in(client).orders.produce({ orderId: `s-${i}`, customer: 'c', seq: i })
      await client.query('COMMIT')
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
    queries.stop()
    assert.deepEqual(queries.texts, [], 'the standby spoke to PostgreSQL while another relay led')
    await waitFor(async () => (await countRows(schema)) === 0, {
      timeout: 10_000,
      what: 'the leader to empty the outbox',
    })
  })
})

/** Reads the topic until it holds `count` records; fails after 10 s (not readTopic's idle stop). */
async function readAtLeast(topic: string, count: number): Promise<void> {
  const read = await readTopic({
    brokers,
    topic,
    expectedCount: count,
    idleTimeoutMs: 10_000,
    timeoutMs: 10_000,
  })
  assert.ok(read.length >= count, `${topic} holds ${read.length} records after 10 s, expected ${count}`)
}
