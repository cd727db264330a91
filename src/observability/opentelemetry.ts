/**
 * `k-entity/opentelemetry`: the outbox's metrics and trace propagation through
 * `@opentelemetry/api` (an optional peer dependency, imported only here). Without an SDK in the
 * app, the API's no-op meter and tracer make both cost next to nothing.
 */
import {
  type Attributes,
  context,
  type Link,
  type Meter,
  metrics,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapPropagator,
  type Tracer,
  trace,
} from '@opentelemetry/api'
import { describe, invalidArgument } from '../core/errors.ts'
import type { OutboxRecord, RecordHeader } from '../core/record.ts'
import type { Headers } from '../core/topic.ts'
import type { OutboxTracing } from '../core/tracing.ts'
import { BATCH_SIZE_BUCKETS, DURATION_BUCKETS } from './buckets.ts'
import { checkWatchOptions, type WatchOptions, watchRelays } from './relay-watch.ts'

export type { StatusFigures, StatusSource } from './relay-watch.ts'

/** The instrumentation scope of k-entity's meter and tracer. */
export const INSTRUMENTATION_NAME = 'k-entity'

/** Every metric `outboxMetrics()` registers, by OpenTelemetry name. */
export const OTEL_METRICS = {
  pending: 'k_entity.outbox.pending',
  retrying: 'k_entity.outbox.retrying',
  lag: 'k_entity.outbox.lag',
  published: 'k_entity.relay.published',
  failed: 'k_entity.relay.failed',
  batchSize: 'k_entity.relay.batch.size',
  claimDuration: 'k_entity.relay.claim.duration',
  publishDuration: 'k_entity.relay.publish.duration',
  deleteDuration: 'k_entity.relay.delete.duration',
  leader: 'k_entity.relay.leader',
} as const

export { BATCH_SIZE_BUCKETS, DURATION_BUCKETS } from './buckets.ts'

export interface OutboxMetricsOptions extends WatchOptions {
  /** Default: `metrics.getMeter('k-entity')` from the global meter provider (a no-op without an SDK). */
  meter?: Meter
}

export interface OutboxMetrics {
  /** Stops counting and unregisters the gauges' callbacks. */
  close(): void
}

/**
 * Registers the outbox's metrics on `meter`: counters and histograms fed by the relays' events
 * (every relay of the process unless `relay` is given), the leader gauge, and the pending,
 * retrying and lag gauges read from `status` at most once per `statusInterval`.
 */
export function outboxMetrics(options: OutboxMetricsOptions = {}): OutboxMetrics {
  const checked = checkWatchOptions(options, 'outboxMetrics()')
  const meter = options.meter ?? metrics.getMeter(INSTRUMENTATION_NAME)
  if (typeof meter?.createCounter !== 'function') {
    throw invalidArgument(
      `outboxMetrics(): 'meter' must be an OpenTelemetry Meter (meterProvider.getMeter('k-entity')), got ${describe(meter)}`,
    )
  }
  const published = meter.createCounter(OTEL_METRICS.published, {
    description: 'Messages Kafka acknowledged and the relay deleted from the outbox',
    unit: '{message}',
  })
  const failed = meter.createCounter(OTEL_METRICS.failed, {
    description: 'Messages that failed on their own: retried later, or dead-lettered (dead_lettered=true)',
    unit: '{message}',
  })
  const batchSize = meter.createHistogram(OTEL_METRICS.batchSize, {
    description: 'Messages delivered per batch',
    unit: '{message}',
    advice: { explicitBucketBoundaries: BATCH_SIZE_BUCKETS },
  })
  const duration = (name: string, step: string) =>
    meter.createHistogram(name, {
      description: `Time to ${step} one batch`,
      unit: 's',
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    })
  const claim = duration(OTEL_METRICS.claimDuration, 'claim')
  const publish = duration(OTEL_METRICS.publishDuration, 'send to Kafka (until acknowledged)')
  const remove = duration(OTEL_METRICS.deleteDuration, 'delete')
  const watch = watchRelays(checked, {
    delivered(event) {
      for (const [topic, count] of Object.entries(event.topics)) published.add(count, { topic })
      batchSize.record(event.count)
      claim.record(event.claimMs / 1000)
      publish.record(event.sendMs / 1000)
      remove.record(event.deleteMs / 1000)
    },
    failed(event) {
      failed.add(1, { topic: event.topic, dead_lettered: event.deadLettered })
    },
  })
  const leader = meter.createObservableGauge(OTEL_METRICS.leader, {
    description: '1 while the relay leads (single/exclusive) or is admitted to claim (concurrent), else 0',
  })
  const observeLeaders = (result: { observe(value: number, attributes?: Attributes): void }) => {
    for (const relay of watch.relays())
      result.observe(relay.leader ? 1 : 0, { relay: relay.id, mode: relay.mode })
  }
  leader.addCallback(observeLeaders)
  const status = watch.status
  let closeStatus = () => {}
  if (status !== undefined) {
    const pending = meter.createObservableGauge(OTEL_METRICS.pending, {
      description: 'Messages waiting in the outbox, retrying ones included',
      unit: '{message}',
    })
    const retrying = meter.createObservableGauge(OTEL_METRICS.retrying, {
      description: 'Pending messages that failed at least once and wait for their retry time',
      unit: '{message}',
    })
    const lag = meter.createObservableGauge(OTEL_METRICS.lag, {
      description: 'Age of the oldest pending message',
      unit: 's',
    })
    // One callback for the three gauges: one status read per collection.
    const observeStatus = async (result: {
      observe(instrument: typeof pending, value: number): void
    }): Promise<void> => {
      const figures = await status()
      if (figures === undefined) return
      result.observe(pending, figures.pending)
      result.observe(lag, figures.oldestPendingMs / 1000)
      if (figures.retrying !== undefined) result.observe(retrying, figures.retrying)
    }
    meter.addBatchObservableCallback(observeStatus, [pending, retrying, lag])
    closeStatus = () => meter.removeBatchObservableCallback(observeStatus, [pending, retrying, lag])
  }
  return {
    close() {
      watch.close()
      leader.removeCallback(observeLeaders)
      closeStatus()
    },
  }
}

export interface OtelTracingOptions {
  /** Default: `trace.getTracer('k-entity')` from the global tracer provider. */
  tracer?: Tracer
  /** How the context is written into and read from headers. Default: the global propagator (W3C trace context in the SDKs). */
  propagator?: TextMapPropagator
}

const headerGetter: TextMapGetter<readonly RecordHeader[]> = {
  keys: (headers) => headers.map(([name]) => name),
  get: (headers, key) => {
    for (const [name, value] of headers) if (name === key && value !== null) return value.toString('utf8')
    return undefined
  },
}

const headerSetter = {
  set: (carrier: Record<string, string>, key: string, value: string) => {
    carrier[key] = value
  },
}

/**
 * The outbox's `tracing`: at produce time the active context goes into the message's headers
 * (`traceparent`, `tracestate`), stored with it and sent to Kafka as they are, so consumers
 * continue the producer's trace. The relay sends each batch inside one `send` span (kind
 * PRODUCER) linked to every distinct context its messages were produced in: a batch is one
 * request to Kafka, and a span per message would cost the relay more than the send itself.
 */
export function otelTracing(options: OtelTracingOptions = {}): OutboxTracing {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(`otelTracing() takes an options object like { tracer }, got ${describe(options)}`)
  }
  if (options.tracer !== undefined && typeof options.tracer?.startSpan !== 'function') {
    throw invalidArgument(
      `otelTracing(): 'tracer' must be an OpenTelemetry Tracer (tracerProvider.getTracer('k-entity')), got ${describe(options.tracer)}`,
    )
  }
  if (options.propagator !== undefined && typeof options.propagator?.inject !== 'function') {
    throw invalidArgument(
      `otelTracing(): 'propagator' must be an OpenTelemetry TextMapPropagator (e.g. new W3CTraceContextPropagator()), got ${describe(options.propagator)}`,
    )
  }
  const tracer = () => options.tracer ?? trace.getTracer(INSTRUMENTATION_NAME)
  const inject = (carrier: Record<string, string>) =>
    options.propagator
      ? options.propagator.inject(context.active(), carrier, headerSetter)
      : propagation.inject(context.active(), carrier, headerSetter)
  const extract = (headers: readonly RecordHeader[]) =>
    options.propagator
      ? options.propagator.extract(ROOT_CONTEXT, headers, headerGetter)
      : propagation.extract(ROOT_CONTEXT, headers, headerGetter)
  return {
    headers(): Headers | undefined {
      const carrier: Record<string, string> = {}
      inject(carrier)
      for (const _ in carrier) return carrier
      return undefined
    },
    async send<T>(records: readonly OutboxRecord[], send: () => Promise<T>): Promise<T> {
      const first = records[0]?.topic
      const single = first !== undefined && records.every((r) => r.topic === first)
      const span = tracer().startSpan(single ? `send ${first}` : 'send', {
        kind: SpanKind.PRODUCER,
        attributes: {
          'messaging.system': 'kafka',
          'messaging.operation.type': 'send',
          'messaging.operation.name': 'send',
          'messaging.batch.message_count': records.length,
          ...(single ? { 'messaging.destination.name': first } : {}),
        },
      })
      // Reading every message's headers is work only a recording span needs.
      // (`addLinks` is @opentelemetry/api 1.9+; an older API records the span without links.)
      if (span.isRecording() && typeof span.addLinks === 'function') span.addLinks(linksOf(records, extract))
      try {
        return await context.with(trace.setSpan(context.active(), span), send)
      } catch (error) {
        fail(span, error)
        throw error
      } finally {
        span.end()
      }
    },
  }
}

/** One link per distinct producing span among the records (many messages share one). */
function linksOf(
  records: readonly OutboxRecord[],
  extract: (headers: readonly RecordHeader[]) => ReturnType<typeof propagation.extract>,
): Link[] {
  const links = new Map<string, Link>()
  for (const record of records) {
    if (record.headers.length === 0) continue
    const spanContext = trace.getSpanContext(extract(record.headers))
    if (spanContext === undefined || !trace.isSpanContextValid(spanContext)) continue
    const id = `${spanContext.traceId}-${spanContext.spanId}`
    if (!links.has(id)) links.set(id, { context: spanContext })
  }
  return [...links.values()]
}

function fail(span: Span, error: unknown): void {
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  })
  if (error instanceof Error) span.recordException(error)
}
