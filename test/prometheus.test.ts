// k-entity/prometheus on a real PostgreSQL outbox and Kafka, scraped over HTTP.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import { Registry } from 'prom-client'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { defineTopic } from '../src/index.ts'
import { outboxPrometheus, PROMETHEUS_METRICS, startMetricsServer } from '../src/observability/prometheus.ts'
import { readTopic } from '../src/testing/index.ts'
import { createTopic, DATABASE_URL, dropSchema, kafkaBrokers, uniqueName, waitFor } from './support/env.ts'

const brokers = kafkaBrokers()
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
const schemas: string[] = []

/** `name{labels} value` lines of one metric, as label text -> value. */
function samples(text: string, name: string): Map<string, number> {
  const found = new Map<string, number>()
  for (const line of text.split('\n')) {
    const match = /^(\w+)(\{[^}]*\})? (\S+)$/.exec(line)
    if (match?.[1] === name) found.set(match[2] ?? '', Number(match[3]))
  }
  return found
}

describe('k-entity/prometheus', () => {
  after(async () => {
    await pool.end()
    for (const schema of schemas) await dropSchema(schema)
  })

  it('serves per-topic counters matching what was consumed back, the gauges and histograms, over HTTP', async (t) => {
    const [alpha, beta] = [uniqueName('ke-prom-a'), uniqueName('ke-prom-b')]
    await createTopic(alpha, 2)
    await createTopic(beta, 1)
    const schema = uniqueName('ke_prom')
    schemas.push(schema)
    const outbox = createPgOutbox({
      topics: {
        alpha: defineTopic<{ id: number }>({ name: alpha, key: (m) => `a${m.id % 3}` }),
        beta: defineTopic<{ id: number }>({ name: beta }),
      },
      schema,
      kafka: { brokers },
    })
    await outbox.migrate(DATABASE_URL)
    const registry = new Registry()
    let statusReads = 0
    const metrics = outboxPrometheus({
      registry,
      status: () => {
        statusReads++
        return outbox.stats(DATABASE_URL)
      },
      statusInterval: 0,
    })
    t.after(() => metrics.close())
    const server = await startMetricsServer({ port: 0, host: '127.0.0.1', registry })
    t.after(() => server.close())
    const scrape = async () => {
      const response = await fetch(server.url)
      assert.equal(response.status, 200)
      assert.match(response.headers.get('content-type') ?? '', /^text\/plain/)
      return response.text()
    }
    await outbox.transaction(pool, async (_client, topics) => {
      await topics.alpha.produceMany(Array.from({ length: 70 }, (_, id) => ({ id })))
      await topics.beta.produceMany(Array.from({ length: 30 }, (_, id) => ({ id })))
    })
    const before = await scrape()
    assert.equal(samples(before, PROMETHEUS_METRICS.pending).get(''), 100)
    assert.ok((samples(before, PROMETHEUS_METRICS.lag).get('') ?? -1) >= 0)

    const relay = outbox.relay({ connection: DATABASE_URL, maxMessagesPerPoll: 40 })
    t.after(() => relay.stop())
    await relay.start()
    const consumed = {
      alpha: await readTopic({ brokers, topic: alpha, expectedCount: 70 }),
      beta: await readTopic({ brokers, topic: beta, expectedCount: 30 }),
    }
    let text = ''
    await waitFor(
      async () => {
        text = await scrape()
        return samples(text, PROMETHEUS_METRICS.pending).get('') === 0
      },
      { what: 'the pending gauge back to 0' },
    )
    const published = samples(text, PROMETHEUS_METRICS.published)
    assert.equal(published.get(`{topic="${alpha}"}`), consumed.alpha.length)
    assert.equal(published.get(`{topic="${beta}"}`), consumed.beta.length)
    assert.equal(samples(text, `${PROMETHEUS_METRICS.batchSize}_sum`).get(''), 100)
    const batches = samples(text, `${PROMETHEUS_METRICS.batchSize}_count`).get('') ?? 0
    assert.ok(batches >= 3, `${batches} batches of at most 40`)
    for (const name of [
      PROMETHEUS_METRICS.claimDuration,
      PROMETHEUS_METRICS.publishDuration,
      PROMETHEUS_METRICS.deleteDuration,
    ]) {
      assert.equal(samples(text, `${name}_count`).get(''), batches, name)
    }
    assert.deepEqual([...samples(text, PROMETHEUS_METRICS.leader)], [['{relay="1",mode="single"}', 1]])
    assert.equal(samples(text, PROMETHEUS_METRICS.lag).get(''), 0)
    assert.ok(statusReads >= 2, 'statusInterval 0: every scrape reads the status')
    assert.equal((await fetch(server.url.replace('/metrics', '/other'))).status, 404)
    t.diagnostic(
      `${text
        .split('\n')
        .filter((l) => l.startsWith('k_entity_relay_published'))
        .join('; ')}`,
    )
  })

  it('refuses what would break a scrape or a registry, saying what to pass', async () => {
    const registry = new Registry()
    const first = outboxPrometheus({ registry })
    assert.throws(() => outboxPrometheus({ registry }), /already has k_entity_.*call close\(\)/)
    first.close()
    outboxPrometheus({ registry }).close()
    assert.throws(() => outboxPrometheus({ registry, status: 5 as never }), /'status' must be a function/)
    assert.throws(() => outboxPrometheus({ registry, statusInterval: -1 }), /'statusInterval'/)
    assert.throws(() => outboxPrometheus({ registry, relay: {} as never }), /'relay' must be a relay/)
    await assert.rejects(startMetricsServer({ port: 70_000 }), /'port' must be an integer/)
  })
})
