import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import { type KafkaBroker, startKafkaBroker } from '../scripts/kafka-broker.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import type { RelayEvent } from '../src/index.ts'
import { checkDelivery, formatReport, observedFromConsumed, readTopic } from '../src/testing/index.ts'
import {
  countRows,
  createTopic,
  DATABASE_URL,
  dropSchema,
  uniqueName,
  waitFor,
  withClient,
} from './support/env.ts'
import { orderTopic, runOrderWorkload } from './support/workload.ts'

const schema = uniqueName('ke_outage')
const topicName = uniqueName('outage').replaceAll('_', '-')
const dataDir = mkdtempSync(join(tmpdir(), 'k-entity-outage-'))
let broker: KafkaBroker | undefined

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

describe('Kafka outage', () => {
  after(async () => {
    await broker?.stop()
    rmSync(dataDir, { recursive: true, force: true })
    await dropSchema(schema)
  })

  it('keeps messages while the broker is down and delivers all of them, in key order, once it is back', async (t) => {
    // Its own broker, so stopping it does not disturb the other tests.
    const [port, controllerPort] = [await freePort(), await freePort()]
    broker = await startKafkaBroker({ dataDir, port, controllerPort, quiet: true })
    const { brokers } = broker
    await createTopic(topicName, 4, [brokers])
    const outbox = createPgOutbox({ topics: { orders: orderTopic(topicName) }, schema })
    await outbox.migrate(DATABASE_URL)
    await withClient((c) =>
      c.query(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY, customer text NOT NULL)`),
    )

    const events: { at: number; event: RelayEvent }[] = []
    const relay = outbox.relay({
      connection: DATABASE_URL,
      kafka: { brokers: [brokers], requestTimeout: 3000, retries: 2 },
      pollingInterval: 50,
      retryBackoff: { initial: 100, max: 1000 },
      onEvent: (event) => events.push({ at: Date.now(), event }),
    })
    // Stopped even when an assertion fails, or the open relay would keep the test process alive.
    t.after(() => relay.stop())
    await relay.start()
    const pool = new pg.Pool({ connectionString: DATABASE_URL })
    // A second end() rejects; this one only matters when the test failed before its own.
    t.after(() => pool.end().catch(() => {}))
    const workload = runOrderWorkload({
      pool,
      outbox,
      ordersTable: `"${schema}".orders`,
      transactions: Number.MAX_SAFE_INTEGER,
      durationMs: 9000,
      writers: 2,
      keysPerWriter: 10,
      rollbackRate: 0.1,
    })

    await new Promise((resolve) => setTimeout(resolve, 1500))
    await broker.stop()
    const downAt = Date.now()
    await new Promise((resolve) => setTimeout(resolve, 5000))
    const waitingDuringOutage = await countRows(schema)
    broker = await startKafkaBroker({ dataDir, port, controllerPort, quiet: true })
    const upAt = Date.now()
    const result = await workload
    await pool.end()
    await waitFor(async () => (await countRows(schema)) === 0, {
      what: 'outbox drained after the outage',
      timeout: 90_000,
    })
    const drainedAt = Date.now()

    const consumed = await readTopic({
      brokers: [broker.brokers],
      topic: topicName,
      expectedCount: result.committed.length,
    })
    await relay.stop()
    const report = checkDelivery({
      expected: result.committed,
      forbidden: result.rolledBack,
      observed: observedFromConsumed(consumed),
    })
    assert.ok(report.ok, formatReport(report))
    assert.ok(waitingDuringOutage > 0, 'messages piled up in the outbox while Kafka was down')
    const sendErrors = events.filter((e) => e.event.type === 'error' && e.at >= downAt && e.at <= upAt)
    assert.ok(sendErrors.length > 0, 'the relay noticed the outage')
    // Backoff, not a hot loop: a few dozen attempts over 5 s at most.
    assert.ok(
      sendErrors.length < 60,
      `${sendErrors.length} failed attempts during a 5 s outage is a hot loop`,
    )
    console.log(
      `# outage: ${waitingDuringOutage} messages waited; ${sendErrors.length} failed attempts; drained ${drainedAt - upAt} ms after restart; committed ${result.committed.length}, duplicates ${report.duplicates}`,
    )
  })
})
