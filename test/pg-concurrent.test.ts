import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import type { OutboxRelay, RelayEvent } from '../src/index.ts'
import { checkDelivery, formatReport, observedFromConsumed, readTopic } from '../src/testing/index.ts'
import { countRows, DATABASE_URL, kafkaBrokers, waitFor, withClient } from './support/env.ts'
import { dropOrderSchemas, orderOutbox, runOrderWorkload } from './support/workload.ts'

const brokers = kafkaBrokers()
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 8 })

describe('concurrent relays and wake-up', () => {
  after(async () => {
    await pool.end()
    await dropOrderSchemas()
  })

  it('four concurrent relays share 20,000 messages over 64 keys without breaking per-key order', async (t) => {
    const { schema, topicName, outbox, ordersTable } = await orderOutbox(8, 'ke_conc')
    const delivered = new Map<number, number>()
    const relays: OutboxRelay[] = []
    // Stopped even when an assertion fails, or the open relays would keep the test process alive.
    t.after(async () => {
      for (const relay of relays) await relay.stop()
    })
    for (let i = 0; i < 4; i++) {
      relays.push(
        outbox.relay({
          connection: DATABASE_URL,
          mode: 'concurrent',
          pollingInterval: 20,
          maxMessagesPerPoll: 200,
          onEvent: (e: RelayEvent) => {
            if (e.type === 'delivered') delivered.set(i, (delivered.get(i) ?? 0) + e.count)
          },
        }),
      )
    }
    for (const relay of relays) await relay.start()
    const workload = await runOrderWorkload({
      pool,
      outbox,
      ordersTable,
      transactions: 400,
      messagesPerTransaction: 50,
      writers: 4,
      keysPerWriter: 16,
      rollbackRate: 0.1,
    })
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'outbox drained', timeout: 120_000 })
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: workload.committed.length })
    for (const relay of relays) await relay.stop()
    const report = checkDelivery({
      expected: workload.committed,
      forbidden: workload.rolledBack,
      observed: observedFromConsumed(consumed),
    })
    assert.ok(report.ok, formatReport(report))
    const shares = [...delivered.values()]
    assert.equal(
      shares.reduce((a, b) => a + b, 0),
      workload.committed.length,
      'every row deleted exactly once across relays',
    )
    assert.ok(
      shares.filter((n) => n > 0).length >= 2,
      `work was not shared: ${JSON.stringify([...delivered])}`,
    )
    console.log(
      `# concurrent shares: ${JSON.stringify([...delivered.entries()])}, duplicates ${report.duplicates}`,
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

  it('wakes on NOTIFY at commit instead of waiting for the polling interval', async (t) => {
    const { topicName, outbox } = await orderOutbox(1, 'ke_conc')
    const relay = outbox.relay({ connection: DATABASE_URL, pollingInterval: 600_000 })
    t.after(() => relay.stop())
    await relay.start()
    await new Promise((resolve) => setTimeout(resolve, 300))
    const client = new pg.Client({ connectionString: DATABASE_URL })
    t.after(() => client.end().catch(() => {}))
    await client.connect()
    const latencies: number[] = []
    for (let i = 0; i < 5; i++) {
      await client.query('BEGIN')
      // in() with the app's own BEGIN/COMMIT: no in-process signal, only NOTIFY can wake the relay.
      await outbox.in(client).orders.produce({ orderId: `w-${i}`, customer: 'c', seq: i })
      await client.query('COMMIT')
      const committed = Date.now()
      await readTopic({ brokers, topic: topicName, expectedCount: i + 1, timeoutMs: 10_000 })
      latencies.push(Date.now() - committed)
    }
    await client.end()
    await relay.stop()
    assert.ok(
      Math.max(...latencies) < 5000,
      `latencies ${latencies} should be far below the 600 s polling interval`,
    )
  })
})
