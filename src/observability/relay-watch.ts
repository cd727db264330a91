/**
 * What `k-entity/opentelemetry` and `k-entity/prometheus` share: the relays' events taken from
 * the diagnostics channels (every relay of the process, without wiring), the relays they saw for
 * the leader gauge, and the status source read at most once per interval. No metrics library here.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { describe, invalidArgument } from '../core/errors.ts'
import { type NodeMode, OutboxRelay, type RelayEvent } from '../core/relay.ts'
import {
  RELAY_EVENT_CHANNEL,
  RELAY_LIFECYCLE_CHANNEL,
  type RelayEventMessage,
  type RelayLifecycleMessage,
} from './channels.ts'

/** The queue figures the gauges need: `OutboxAdmin.status()` or `outbox.stats()` both have them. */
export interface StatusFigures {
  pending: number
  /** Age of the oldest pending message in ms (0 when none). */
  oldestPendingMs: number
  retrying?: number
}

/** Reads the queue figures; called at most once per `statusInterval`, never per batch. */
export type StatusSource = () => Promise<StatusFigures>

/** How often the status source may be read, in ms, by default: one scrape interval. */
export const DEFAULT_STATUS_INTERVAL_MS = 15_000

export type DeliveredEvent = Extract<RelayEvent, { type: 'delivered' }>
export type FailedEvent = Extract<RelayEvent, { type: 'message-failed' }>

/** What a metrics library does with each event. */
export interface RelaySink {
  delivered(event: DeliveredEvent): void
  failed(event: FailedEvent): void
}

export interface RelaySeen {
  /** This process's number for the relay, in the order they were seen (a metric attribute). */
  id: string
  mode: NodeMode
  leader: boolean
}

/** The options both subpaths take besides their metrics library's own. */
export interface WatchOptions {
  /** Queue figures for the pending, retrying and lag gauges; without it those gauges are not registered. */
  status?: StatusSource
  /** Only this relay's events; default every relay of the process (through the diagnostics channels). */
  relay?: OutboxRelay
  /** Least time between two reads of `status`, in ms (default 15000): scrapes in between reuse the last figures. */
  statusInterval?: number
}

export interface RelayWatch {
  /** The relays seen (started, or sending events) with their leader status now; stopped ones are not leaders. */
  relays(): RelaySeen[]
  /** The status figures, read again only when the last read is `statusInterval` old; undefined when it failed. */
  status: (() => Promise<StatusFigures | undefined>) | undefined
  close(): void
}

/** Checks the shared options; `where` names the function for the message. */
export function checkWatchOptions(options: unknown, where: string): WatchOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidArgument(
      `${where} needs an options object like { status: () => outbox.stats() }, got ${describe(options)}`,
    )
  }
  const { status, relay, statusInterval } = options as WatchOptions
  if (status !== undefined && typeof status !== 'function') {
    throw invalidArgument(
      `${where}: 'status' must be a function returning a promise of { pending, oldestPendingMs }, such as () => outbox.stats(), got ${describe(status)}`,
    )
  }
  if (relay !== undefined && !(relay instanceof OutboxRelay)) {
    throw invalidArgument(
      `${where}: 'relay' must be a relay from outbox.relay(), got ${describe(relay)}; leave it out to follow every relay of the process`,
    )
  }
  if (
    statusInterval !== undefined &&
    (typeof statusInterval !== 'number' || !Number.isFinite(statusInterval) || statusInterval < 0)
  ) {
    throw invalidArgument(
      `${where}: 'statusInterval' must be a number of ms from 0 up, got ${describe(statusInterval)}`,
    )
  }
  return { status, relay, statusInterval }
}

/** Stopped relays still reported (as 0) for the leader gauge; older ones are dropped. */
const MAX_STOPPED_REPORTED = 100

/** Subscribes `sink` to the relays' events until `close()`. */
export function watchRelays(options: WatchOptions, sink: RelaySink): RelayWatch {
  const only = options.relay
  const seen = new Map<OutboxRelay, { id: string; mode: NodeMode }>()
  // Stopped relays go on reporting 0: an SDK keeps an attribute set's last value once reported,
  // so dropping them would leave a stopped leader showing 1. By id only, so the relay can be collected.
  const stopped: RelaySeen[] = []
  let next = 1
  const see = (relay: OutboxRelay, mode: NodeMode) => {
    if (!seen.has(relay)) seen.set(relay, { id: String(next++), mode })
  }
  const onEvent = (message: unknown) => {
    const { relay, mode, event } = message as RelayEventMessage
    if (only !== undefined && relay !== only) return
    see(relay, mode)
    if (event.type === 'delivered') sink.delivered(event)
    else if (event.type === 'message-failed') sink.failed(event)
  }
  const onLifecycle = (message: unknown) => {
    const { relay, mode, state } = message as RelayLifecycleMessage
    if (only !== undefined && relay !== only) return
    if (state !== 'stopped') return see(relay, mode)
    const gone = seen.get(relay)
    if (gone === undefined) return
    seen.delete(relay)
    stopped.push({ ...gone, leader: false })
    if (stopped.length > MAX_STOPPED_REPORTED) stopped.shift()
  }
  subscribe(RELAY_EVENT_CHANNEL, onEvent)
  subscribe(RELAY_LIFECYCLE_CHANNEL, onLifecycle)
  // A relay given by name counts from now on, even if it started before and sent nothing since.
  if (only?.isRunning) see(only, only.mode)
  return {
    relays: () => [
      ...stopped,
      ...[...seen].map(([relay, { id, mode }]) => ({ id, mode, leader: relay.isRunning && relay.isLeader })),
    ],
    status:
      options.status === undefined
        ? undefined
        : cachedStatus(options.status, options.statusInterval ?? DEFAULT_STATUS_INTERVAL_MS),
    close: () => {
      unsubscribe(RELAY_EVENT_CHANNEL, onEvent)
      unsubscribe(RELAY_LIFECYCLE_CHANNEL, onLifecycle)
      seen.clear()
      stopped.length = 0
    },
  }
}

/**
 * At most one read per `intervalMs`, however many collections ask (an OpenTelemetry reader and
 * a Prometheus scrape, several metric readers): the status query must stay cheap. Callers during a
 * read share it. A failed read gives undefined (gauges then report nothing rather than stale
 * figures) and is tried again at the next collection.
 */
export function cachedStatus(
  source: StatusSource,
  intervalMs: number,
): () => Promise<StatusFigures | undefined> {
  let last: { at: number; figures: StatusFigures } | undefined
  let reading: Promise<StatusFigures | undefined> | undefined
  return () => {
    if (last !== undefined && performance.now() - last.at < intervalMs) return Promise.resolve(last.figures)
    reading ??= (async () => {
      try {
        const figures = await source()
        last = { at: performance.now(), figures }
        return figures
      } catch {
        return undefined
      } finally {
        reading = undefined
      }
    })()
    return reading
  }
}
