/**
 * `k-entity/prometheus`: the metrics of `k-entity/opentelemetry` for apps without an OpenTelemetry
 * SDK, on a `prom-client` registry (an optional peer dependency, imported only here), with a
 * request handler and a small server for Prometheus to scrape. The names are the ones an
 * OpenTelemetry Prometheus exporter gives the OpenTelemetry metrics, so dashboards fit both.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Counter, Gauge, Histogram, type Registry, register } from 'prom-client'
import { describe, invalidArgument } from '../core/errors.ts'
import { BATCH_SIZE_BUCKETS, DURATION_BUCKETS } from './buckets.ts'
import { checkWatchOptions, type WatchOptions, watchRelays } from './relay-watch.ts'

export type { StatusFigures, StatusSource } from './relay-watch.ts'

/** Every metric `outboxPrometheus()` registers, by Prometheus name. */
export const PROMETHEUS_METRICS = {
  pending: 'k_entity_outbox_pending',
  retrying: 'k_entity_outbox_retrying',
  lag: 'k_entity_outbox_lag_seconds',
  published: 'k_entity_relay_published_total',
  failed: 'k_entity_relay_failed_total',
  batchSize: 'k_entity_relay_batch_size',
  claimDuration: 'k_entity_relay_claim_duration_seconds',
  publishDuration: 'k_entity_relay_publish_duration_seconds',
  deleteDuration: 'k_entity_relay_delete_duration_seconds',
  leader: 'k_entity_relay_leader',
} as const

export interface OutboxPrometheusOptions extends WatchOptions {
  /** Default: prom-client's global `register`. */
  registry?: Registry
}

export interface OutboxPrometheus {
  readonly registry: Registry
  /** Stops counting and removes the metrics from the registry. */
  close(): void
}

/**
 * Registers the outbox's metrics on `registry`: counters and histograms fed by the relays' events
 * (every relay of the process unless `relay` is given), the leader gauge, and the pending,
 * retrying and lag gauges read from `status` at most once per `statusInterval`.
 */
export function outboxPrometheus(options: OutboxPrometheusOptions = {}): OutboxPrometheus {
  const checked = checkWatchOptions(options, 'outboxPrometheus()')
  const registry = options.registry ?? register
  if (typeof registry?.registerMetric !== 'function') {
    throw invalidArgument(
      `outboxPrometheus(): 'registry' must be a prom-client Registry, got ${describe(registry)}`,
    )
  }
  const names = Object.values(PROMETHEUS_METRICS).filter((name) => registry.getSingleMetric(name))
  if (names.length > 0) {
    throw invalidArgument(
      `outboxPrometheus(): the registry already has ${names.join(', ')}; call close() on the earlier outboxPrometheus() first, or pass another registry`,
    )
  }
  const registers = [registry]
  const published = new Counter({
    name: PROMETHEUS_METRICS.published,
    help: 'Messages Kafka acknowledged and the relay deleted from the outbox',
    labelNames: ['topic'],
    registers,
  })
  const failed = new Counter({
    name: PROMETHEUS_METRICS.failed,
    help: 'Messages that failed on their own: retried later, or dead-lettered (dead_lettered="true")',
    labelNames: ['topic', 'dead_lettered'],
    registers,
  })
  const batchSize = new Histogram({
    name: PROMETHEUS_METRICS.batchSize,
    help: 'Messages delivered per batch',
    buckets: BATCH_SIZE_BUCKETS,
    registers,
  })
  const duration = (name: string, step: string) =>
    new Histogram({
      name,
      help: `Time to ${step} one batch, in seconds`,
      buckets: DURATION_BUCKETS,
      registers,
    })
  const claim = duration(PROMETHEUS_METRICS.claimDuration, 'claim')
  const publish = duration(PROMETHEUS_METRICS.publishDuration, 'send to Kafka (until acknowledged)')
  const remove = duration(PROMETHEUS_METRICS.deleteDuration, 'delete')
  const watch = watchRelays(checked, {
    delivered(event) {
      for (const [topic, count] of Object.entries(event.topics)) published.inc({ topic }, count)
      batchSize.observe(event.count)
      claim.observe(event.claimMs / 1000)
      publish.observe(event.sendMs / 1000)
      remove.observe(event.deleteMs / 1000)
    },
    failed(event) {
      failed.inc({ topic: event.topic, dead_lettered: String(event.deadLettered) })
    },
  })
  new Gauge({
    name: PROMETHEUS_METRICS.leader,
    help: '1 while the relay leads (single/exclusive) or is admitted to claim (concurrent), else 0',
    labelNames: ['relay', 'mode'],
    registers,
    collect() {
      this.reset()
      for (const relay of watch.relays())
        this.set({ relay: relay.id, mode: relay.mode }, relay.leader ? 1 : 0)
    },
  })
  const status = watch.status
  if (status !== undefined) {
    // Each gauge asks at each scrape; the cache makes that one status read per interval.
    const gauge = (
      name: string,
      help: string,
      read: (f: { pending: number; oldestPendingMs: number; retrying?: number }) => number | undefined,
    ) =>
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          this.reset()
          const figures = await status()
          const value = figures === undefined ? undefined : read(figures)
          if (value !== undefined) this.set(value)
        },
      })
    gauge(
      PROMETHEUS_METRICS.pending,
      'Messages waiting in the outbox, retrying ones included',
      (f) => f.pending,
    )
    gauge(
      PROMETHEUS_METRICS.retrying,
      'Pending messages that failed at least once and wait for their retry time',
      (f) => f.retrying,
    )
    gauge(
      PROMETHEUS_METRICS.lag,
      'Age of the oldest pending message, in seconds',
      (f) => f.oldestPendingMs / 1000,
    )
  }
  return {
    registry,
    close() {
      watch.close()
      for (const name of Object.values(PROMETHEUS_METRICS)) registry.removeSingleMetric(name)
    },
  }
}

/**
 * A request handler for node:http (and Express, Fastify's raw request) that answers with the
 * registry's metrics in Prometheus' text format; mount it behind your own routing and auth.
 */
export function metricsHandler(
  registry: Registry = register,
): (req: IncomingMessage, res: ServerResponse) => void {
  if (typeof registry?.metrics !== 'function') {
    throw invalidArgument(`metricsHandler() needs a prom-client Registry, got ${describe(registry)}`)
  }
  return (_req, res) => {
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'Content-Type': registry.contentType })
        res.end(text)
      },
      (error: unknown) => {
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' })
        res.end(`collecting metrics failed: ${error instanceof Error ? error.message : String(error)}\n`)
      },
    )
  }
}

export interface MetricsServerOptions {
  /** TCP port; 0 picks a free one (see `url`). */
  port: number
  /** Address to listen on (default: every interface, as Node's `listen`). */
  host?: string
  /** Path that serves the metrics (default `/metrics`); other paths answer 404. */
  path?: string
  /** Default: prom-client's global `register`. */
  registry?: Registry
}

export interface MetricsServer {
  readonly server: Server
  /** Where the metrics are, e.g. `http://127.0.0.1:9464/metrics`. */
  readonly url: string
  close(): Promise<void>
}

/** A node:http server that serves the registry's metrics on `path`, for Prometheus to scrape. */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(`startMetricsServer() needs options like { port: 9464 }, got ${describe(options)}`)
  }
  const { port, host, path = '/metrics' } = options
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalidArgument(
      `startMetricsServer(): 'port' must be an integer from 0 to 65535, got ${describe(port)}`,
    )
  }
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw invalidArgument(`startMetricsServer(): 'path' must start with '/', got ${describe(path)}`)
  }
  if (host !== undefined && typeof host !== 'string') {
    throw invalidArgument(`startMetricsServer(): 'host' must be a string, got ${describe(host)}`)
  }
  const handler = metricsHandler(options.registry ?? register)
  const server = createServer((req, res) => {
    if (req.method === 'GET' && new URL(req.url ?? '/', 'http://x').pathname === path)
      return handler(req, res)
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' })
    res.end(`k-entity serves its metrics on ${path}\n`)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address() as AddressInfo
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return {
    server,
    url: `http://${shown === '::' || shown === '[::]' || shown === '0.0.0.0' ? '127.0.0.1' : shown}:${address.port}${path}`,
    close: () =>
      new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve()))),
  }
}
