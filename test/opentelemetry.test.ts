// k-entity/opentelemetry on a real PostgreSQL outbox and Kafka: the producer's trace travels in the
// message headers to Kafka, the relay's send span links to it, and the metrics count what was
// consumed back.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { context, SpanKind } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import {
  type DataPoint,
  type Histogram,
  MeterProvider,
  type MetricData,
  MetricReader,
} from '@opentelemetry/sdk-metrics'
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { defineTopic, type RelayEvent } from '../src/index.ts'
import { OTEL_METRICS, otelTracing, outboxMetrics } from '../src/observability/opentelemetry.ts'
import { readTopic } from '../src/testing/index.ts'
import { createTopic, DATABASE_URL, dropSchema, kafkaBrokers, uniqueName } from './support/env.ts'

const brokers = kafkaBrokers()
const kafka = { brokers, autoCreateTopics: false }
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
const schemas: string[] = []

/** Collects on demand, as a Prometheus scrape or a periodic exporter would. */
class TestReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

function header(headers: Array<[string, Buffer | null]>, name: string): string | undefined {
  return headers.find(([n]) => n === name)?.[1]?.toString()
}

function metric(metrics: MetricData[], name: string): MetricData | undefined {
  return metrics.find((m) => m.descriptor.name === name)
}

let collections = 0

async function collect(reader: MetricReader): Promise<MetricData[]> {
  collections++
  const { resourceMetrics, errors } = await reader.collect()
  assert.deepEqual(errors, [])
  return resourceMetrics.scopeMetrics.flatMap((s) => s.metrics)
}

function points(metrics: MetricData[], name: string): DataPoint<number>[] {
  return (metric(metrics, name)?.dataPoints ?? []) as DataPoint<number>[]
}

function byTopic(data: MetricData | undefined): Record<string, number> {
  const figures: Record<string, number> = {}
  for (const point of (data?.dataPoints ?? []) as DataPoint<number>[]) {
    figures[String(point.attributes.topic)] = point.value
  }
  return figures
}

describe('k-entity/opentelemetry', () => {
  const contextManager = new AsyncLocalStorageContextManager()
  before(() => {
    contextManager.enable()
    context.setGlobalContextManager(contextManager)
  })
  after(async () => {
    context.disable()
    await pool.end()
    for (const schema of schemas) await dropSchema(schema)
  })

  it('a produce inside a span carries its traceparent to Kafka, and the relay span links to it', async (t) => {
    const exporter = new InMemorySpanExporter()
    const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] })
    const tracer = provider.getTracer('app')
    const topicName = uniqueName('ke-otel-trace')
    await createTopic(topicName, 1)
    const schema = uniqueName('ke_otel_trace')
    schemas.push(schema)
    const outbox = createPgOutbox({
      topics: { orders: defineTopic<{ id: number }>({ name: topicName, key: (o) => `o${o.id}` }) },
      schema,
      kafka,
      tracing: otelTracing({ tracer, propagator: new W3CTraceContextPropagator() }),
    })
    await outbox.migrate(DATABASE_URL)
    const parent = await tracer.startActiveSpan('checkout', async (span) => {
      await outbox.transaction(pool, (_client, topics) => topics.orders.produceMany([{ id: 1 }, { id: 2 }]))
      span.end()
      return span.spanContext()
    })
    // Outside any span: nothing to carry, no header.
    await outbox.transaction(pool, (_client, topics) => topics.orders.produce({ id: 3 }))
    const relay = outbox.relay({ connection: DATABASE_URL })
    t.after(() => relay.stop())
    assert.equal(await relay.drain(), 3)
    await relay.stop()

    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: 3 })
    const parents = consumed.map((m) => header(m.headers, 'traceparent'))
    assert.equal(parents[0], `00-${parent.traceId}-${parent.spanId}-01`)
    assert.equal(parents[1], parents[0])
    assert.equal(parents[2], undefined, 'a message produced outside a span has no traceparent')

    const sends = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.PRODUCER)
    assert.equal(sends.length, 1, 'one span for the batch')
    const [send] = sends
    assert.ok(send)
    assert.equal(send.name, `send ${topicName}`)
    assert.equal(send.attributes['messaging.batch.message_count'], 3)
    assert.equal(send.attributes['messaging.destination.name'], topicName)
    assert.deepEqual(
      send.links.map((l) => [l.context.traceId, l.context.spanId]),
      [[parent.traceId, parent.spanId]],
      'the send span links once to the span both messages were produced in',
    )
    assert.notEqual(send.spanContext().traceId, parent.traceId, 'the relay span starts its own trace')
    t.diagnostic(
      `traceparent ${parents[0]}; send span ${send.spanContext().spanId} links to ${parent.spanId}`,
    )
  })

  it('counters per topic match what was consumed back; gauges read the status source once per interval', async (t) => {
    const reader = new TestReader()
    const provider = new MeterProvider({ readers: [reader] })
    const [alpha, beta, missing] = [uniqueName('ke-otel-a'), uniqueName('ke-otel-b'), uniqueName('ke-otel-x')]
    await createTopic(alpha, 2)
    await createTopic(beta, 1)
    const schema = uniqueName('ke_otel_metrics')
    schemas.push(schema)
    const outbox = createPgOutbox({
      topics: {
        alpha: defineTopic<{ id: number }>({ name: alpha, key: (m) => `a${m.id % 5}` }),
        beta: defineTopic<{ id: number }>({ name: beta }),
        // Never created: its messages fail on their own and, with one attempt, are dead-lettered.
        missing: defineTopic<{ id: number }>({ name: missing, retry: { maxAttempts: 1 } }),
      },
      schema,
      kafka,
      logger: false,
    })
    await outbox.migrate(DATABASE_URL)
    let statusReads = 0
    const metrics = outboxMetrics({
      meter: provider.getMeter('k-entity'),
      status: () => {
        statusReads++
        return outbox.stats(DATABASE_URL)
      },
      statusInterval: 60_000,
    })
    t.after(() => metrics.close())
    await outbox.transaction(pool, async (_client, topics) => {
      await topics.alpha.produceMany(Array.from({ length: 120 }, (_, id) => ({ id })))
      await topics.beta.produceMany(Array.from({ length: 45 }, (_, id) => ({ id })))
      await topics.missing.produceMany([{ id: 1 }, { id: 2 }])
    })

    // Before the relay runs: 167 pending, none delivered.
    const first = await collect(reader)
    const pendingPoints = points(first, OTEL_METRICS.pending)
    assert.equal(pendingPoints[0]?.value, 167)
    const lag = points(first, OTEL_METRICS.lag)[0]?.value ?? -1
    assert.ok(lag >= 0 && lag < 60, `lag ${lag} s`)
    assert.equal(metric(first, OTEL_METRICS.published)?.dataPoints.length ?? 0, 0)

    const events: RelayEvent[] = []
    const relay = outbox.relay({
      connection: DATABASE_URL,
      maxMessagesPerPoll: 50,
      onEvent: (e) => events.push(e),
    })
    t.after(() => relay.stop())
    await relay.start()
    const consumedAlpha = await readTopic({ brokers, topic: alpha, expectedCount: 120 })
    const consumedBeta = await readTopic({ brokers, topic: beta, expectedCount: 45 })
    // The counters follow the delete, which comes after Kafka's acknowledgement.
    const deadline = Date.now() + 15_000
    let figures: MetricData[] = []
    for (;;) {
      figures = await collect(reader)
      const published = byTopic(metric(figures, OTEL_METRICS.published))
      const failedPoints = metric(figures, OTEL_METRICS.failed)?.dataPoints ?? []
      if (
        (published[alpha] === 120 && published[beta] === 45 && failedPoints.length > 0) ||
        Date.now() > deadline
      )
        break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const leaders = points(figures, OTEL_METRICS.leader)
    await relay.stop()

    assert.deepEqual(byTopic(metric(figures, OTEL_METRICS.published)), {
      [alpha]: consumedAlpha.length,
      [beta]: consumedBeta.length,
    })
    assert.deepEqual(
      points(figures, OTEL_METRICS.failed).map((p) => [
        p.attributes.topic,
        p.attributes.dead_lettered,
        p.value,
      ]),
      [[missing, true, 2]],
    )
    const sizes = metric(figures, OTEL_METRICS.batchSize)?.dataPoints[0] as DataPoint<Histogram> | undefined
    assert.equal(sizes?.value.sum, 165, 'batch sizes add up to the messages delivered')
    assert.ok((sizes?.value.max ?? 0) <= 50)
    for (const name of [
      OTEL_METRICS.claimDuration,
      OTEL_METRICS.publishDuration,
      OTEL_METRICS.deleteDuration,
    ]) {
      const histogram = metric(figures, name)?.dataPoints[0] as DataPoint<Histogram> | undefined
      assert.equal(histogram?.value.count, sizes?.value.count, `${name}: one figure per batch`)
      assert.ok((histogram?.value.min ?? -1) >= 0 && (histogram?.value.max ?? 99) < 10, name)
    }
    assert.deepEqual(
      leaders.map((p) => [p.attributes.mode, p.value]),
      [['single', 1]],
      'the running relay leads',
    )
    // The delivered events carry what the counters were built from.
    const delivered = events.filter((e) => e.type === 'delivered')
    const perTopic: Record<string, number> = {}
    for (const e of delivered)
      for (const [topic, n] of Object.entries(e.topics)) perTopic[topic] = (perTopic[topic] ?? 0) + n
    assert.deepEqual(perTopic, { [alpha]: 120, [beta]: 45 })
    // Many collections, one read: the rest came from the cache (statusInterval 60 s).
    assert.equal(statusReads, 1)
    const stopped = await collect(reader)
    assert.deepEqual(
      points(stopped, OTEL_METRICS.leader).map((p) => p.value),
      [0],
      'a stopped relay leads no more',
    )
    t.diagnostic(
      `published ${JSON.stringify(byTopic(metric(figures, OTEL_METRICS.published)))} in ${sizes?.value.count} batches; status read ${statusReads} time(s) over ${collections} collections`,
    )
  })
})
