import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import type { PgRelayOptions } from '../../src/adapters/pg/index.ts'
import type { OutboxRelay, RelayEvent } from '../../src/index.ts'
import {
  checkDelivery,
  type DeliveryReport,
  formatReport,
  observedFromConsumed,
  readTopic,
} from '../../src/testing/index.ts'
import { countRows, DATABASE_URL, kafkaBrokers, waitFor } from './env.ts'
import { orderOutbox, runOrderWorkload, type WorkloadOptions } from './workload.ts'

/**
 * `relays` concurrent relays (PostgreSQL, `relayOptions` on top of mode 'concurrent') drain the
 * order workload together while it is produced. What Kafka holds is read back and checked (lost,
 * phantom, per-key order), every row must be deleted once across the relays, and at least two
 * must have delivered. Returns each relay's share and the report.
 */
export async function assertRelaysShareWorkload(
  t: TestContext,
  options: {
    prefix: string
    relays: number
    relayOptions: Partial<PgRelayOptions<string>>
    workload: Omit<WorkloadOptions, 'pool' | 'outbox' | 'ordersTable'>
    pool: WorkloadOptions['pool']
  },
): Promise<{ shares: Map<number, number>; report: DeliveryReport }> {
  const { schema, topicName, outbox, ordersTable } = await orderOutbox(8, options.prefix)
  const delivered = new Map<number, number>()
  const relays: OutboxRelay[] = []
  // Stopped even when an assertion fails, or the open relays would keep the test process alive.
  t.after(async () => {
    for (const relay of relays) await relay.stop()
  })
  for (let i = 0; i < options.relays; i++) {
    relays.push(
      outbox.relay({
        connection: DATABASE_URL,
        mode: 'concurrent',
        pollingInterval: 20,
        maxMessagesPerPoll: 200,
        ...options.relayOptions,
        onEvent: (e: RelayEvent) => {
          if (e.type === 'delivered') delivered.set(i, (delivered.get(i) ?? 0) + e.count)
        },
      }),
    )
  }
  for (const relay of relays) await relay.start()
  const workload = await runOrderWorkload({ ...options.workload, pool: options.pool, outbox, ordersTable })
  await waitFor(async () => (await countRows(schema)) === 0, { what: 'outbox drained', timeout: 120_000 })
  const consumed = await readTopic({
    brokers: kafkaBrokers(),
    topic: topicName,
    expectedCount: workload.committed.length,
  })
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
  assert.ok(shares.filter((n) => n > 0).length >= 2, `work was not shared: ${JSON.stringify([...delivered])}`)
  return { shares: delivered, report }
}
