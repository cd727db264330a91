import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Consumer, type Message, type MessagesStream } from '@platformatic/kafka'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../core/errors.ts'
import type { RecordHeader } from '../core/record.ts'
import { type KafkaClientBase, type KafkaOptions, kafkaClientBase } from '../transports/kafka/index.ts'
import { type ObservedMessage, readTracking } from './delivery-checker.ts'

/** One record as it sits in the topic. */
export interface ConsumedMessage {
  topic: string
  partition: number
  offset: bigint
  key: Buffer | null
  value: Buffer | null
  /** In wire order; repeated names are kept. */
  headers: RecordHeader[]
  timestamp: bigint
}

export interface ReadTopicOptions {
  brokers: string[]
  topic: string
  /**
   * How many records the caller expects. Reading goes on past the current end of the topic until
   * at least this many arrived (or the idle timeout), then stops once the end is reached and
   * nothing more arrives for `graceMs`, so late duplicates are still seen.
   */
  expectedCount?: number
  /** Stop when no record arrived for this long, whatever else (default 3000 ms). */
  idleTimeoutMs?: number
  /** Stop at this age, returning what was read (default 60000 ms). */
  timeoutMs?: number
  /** Quiet period required after `expectedCount` is reached (default 500 ms, at most the idle timeout). */
  graceMs?: number
  /** Client id in broker logs (default `k-entity-read-topic`). */
  clientId?: string
  /** TLS, as the `kafka.tls` option of the outbox takes it (to read over a secured listener). */
  tls?: KafkaOptions['tls']
  /** SASL, as the `kafka.sasl` option of the outbox takes it. */
  sasl?: KafkaOptions['sasl']
}

const POLL_MS = 20
// Short fetch long-polls keep closing fast once we decide to stop.
const FETCH_MAX_WAIT_MS = 250

/**
 * Reads a whole topic from the earliest offset of every partition, as a brand-new consumer would
 * (isolation read_committed). Uses a throwaway consumer group so no committed offset can make it
 * skip records; the group has no committed offsets and expires on its own.
 *
 * It stops when every partition reached its end offset (re-listed before stopping so records
 * written meanwhile are not cut off), with `expectedCount`, idle and overall timeouts as fallbacks
 * for topics that are still being written to. It always closes its consumer.
 */
export async function readTopic(options: ReadTopicOptions): Promise<ConsumedMessage[]> {
  const resolved = validateReadTopicOptions(options)
  const { topic } = resolved
  const startedAt = Date.now()
  const deadline = startedAt + resolved.timeoutMs
  const consumer = new Consumer({
    clientId: resolved.clientId,
    bootstrapBrokers: resolved.brokers,
    ...resolved.security,
    groupId: `k-entity-read-topic-${randomUUID()}`,
    autocommit: false,
    maxWaitTime: FETCH_MAX_WAIT_MS,
  })
  let stream: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined
  const messages: ConsumedMessage[] = []
  try {
    let ends = await beforeDeadline(
      endOffsets(consumer, topic),
      deadline,
      'listing the end offsets of',
      topic,
    )
    stream = await beforeDeadline(
      consumer.consume({
        topics: [topic],
        mode: 'earliest',
        autocommit: false,
        maxWaitTime: FETCH_MAX_WAIT_MS,
      }),
      deadline,
      'joining a consumer group to read',
      topic,
    )
    const reading = stream
    let failure: Error | undefined
    let stopped = false
    let lastArrival = Date.now()
    reading.on('data', (message: Message<Buffer, Buffer, Buffer, Buffer>) => {
      if (stopped) return
      messages.push(toConsumed(message))
      lastArrival = Date.now()
    })
    reading.on('error', (error: Error) => {
      failure ??= error
    })

    const caughtUp = (targets: bigint[]): boolean => {
      // Records already fetched may still sit in the stream's buffer.
      if (reading.readableLength > 0) return false
      for (let partition = 0; partition < targets.length; partition++) {
        const position = reading.offsetsToFetch.get(`${topic}:${partition}`)
        const end = targets[partition] ?? 0n
        if (position === undefined || position < end) return false
      }
      return true
    }

    while (!stopped) {
      await sleep(POLL_MS)
      if (failure !== undefined) throw failure
      const now = Date.now()
      if (now >= deadline || now - lastArrival >= resolved.idleTimeoutMs) break
      if (!caughtUp(ends)) continue
      if (resolved.expectedCount !== undefined) {
        if (messages.length < resolved.expectedCount || now - lastArrival < resolved.graceMs) continue
      }
      // Records written since the first listing (late copies, a relay still draining) count too.
      try {
        ends = await beforeDeadline(
          endOffsets(consumer, topic),
          deadline,
          'listing the end offsets of',
          topic,
        )
      } catch (error) {
        // Past the deadline the caller gets what was read, as on any other timeout.
        if (Date.now() >= deadline) break
        throw error
      }
      if (caughtUp(ends)) stopped = true
    }
    stopped = true
    return messages
  } catch (error) {
    if (error instanceof KEntityError) throw error
    throw new KEntityError(
      ErrorCodes.TRANSPORT_FAILED,
      `readTopic could not read topic ${JSON.stringify(topic)}: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    )
  } finally {
    if (stream !== undefined) await stream.close().catch(() => {})
    await consumer.close(true).catch(() => {})
  }
}

/** `readTopic`, decoded for `checkDelivery`. */
export async function readTopicForChecker(
  options: ReadTopicOptions & ObservedFromConsumedOptions,
): Promise<ObservedMessage[]> {
  return observedFromConsumed(await readTopic(options), options)
}

export interface ObservedFromConsumedOptions {
  /**
   * What to do with records without tracking headers: `'unknown'` (default) gives them a
   * synthetic id (`untracked:<partition>@<offset>`) so the checker counts them as unknown;
   * `'ignore'` drops them, for topics shared with untracked traffic.
   */
  untracked?: 'unknown' | 'ignore'
}

/** Maps consumed records to the checker's input through their `ke-check-*` headers. */
export function observedFromConsumed(
  messages: Iterable<ConsumedMessage>,
  options: ObservedFromConsumedOptions = {},
): ObservedMessage[] {
  const observed: ObservedMessage[] = []
  for (const message of messages) {
    const tracking = readTracking(message.headers)
    if (tracking === null && options.untracked === 'ignore') continue
    observed.push({
      id: tracking?.id ?? `untracked:${message.partition}@${message.offset}`,
      key: message.key === null ? null : message.key.toString('utf8'),
      partition: message.partition,
      offset: message.offset,
    })
  }
  return observed
}

function toConsumed(message: Message<Buffer, Buffer, Buffer, Buffer>): ConsumedMessage {
  // The client's no-op deserializers turn null into undefined; Kafka's own null is what we report.
  return {
    topic: message.topic,
    partition: message.partition,
    offset: message.offset,
    key: message.key ?? null,
    value: message.value ?? null,
    headers: message.headerEntries.map(
      ([name, value]): RecordHeader => [
        Buffer.isBuffer(name) ? name.toString('utf8') : String(name),
        value ?? null,
      ],
    ),
    timestamp: message.timestamp,
  }
}

async function endOffsets(consumer: Consumer, topic: string): Promise<bigint[]> {
  const offsets = await consumer.listOffsets({ topics: [topic] })
  return offsets.get(topic) ?? []
}

async function beforeDeadline<T>(
  promise: Promise<T>,
  deadline: number,
  what: string,
  topic: string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new KEntityError(
            ErrorCodes.TRANSPORT_FAILED,
            `readTopic timed out ${what} topic ${JSON.stringify(topic)}`,
          ),
        ),
      Math.max(0, deadline - Date.now()),
    )
  })
  try {
    return await Promise.race([promise, expired])
  } finally {
    clearTimeout(timer)
  }
}

interface ResolvedReadTopicOptions {
  brokers: string[]
  topic: string
  expectedCount: number | undefined
  idleTimeoutMs: number
  timeoutMs: number
  graceMs: number
  clientId: string
  security: Pick<KafkaClientBase, 'tls' | 'sasl'>
}

function validateReadTopicOptions(options: ReadTopicOptions): ResolvedReadTopicOptions {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(`readTopic options must be an object, got ${describe(options)}`)
  }
  const { brokers, topic, expectedCount, idleTimeoutMs, timeoutMs, graceMs, clientId, tls, sasl } = options
  if (
    !Array.isArray(brokers) ||
    brokers.length === 0 ||
    brokers.some((broker) => typeof broker !== 'string')
  ) {
    throw invalidArgument(
      `readTopic brokers must be a non-empty array of 'host:port' strings, got ${describe(brokers)}`,
    )
  }
  if (typeof topic !== 'string' || topic.length === 0) {
    throw invalidArgument(`readTopic topic must be a non-empty string, got ${describe(topic)}`)
  }
  for (const [name, value] of [
    ['expectedCount', expectedCount],
    ['idleTimeoutMs', idleTimeoutMs],
    ['timeoutMs', timeoutMs],
    ['graceMs', graceMs],
  ] as const) {
    if (value !== undefined && (typeof value !== 'number' || !Number.isInteger(value) || value < 0)) {
      throw invalidArgument(`readTopic ${name} must be a non-negative integer, got ${describe(value)}`)
    }
  }
  const idle = idleTimeoutMs ?? 3000
  return {
    brokers: [...brokers],
    topic,
    expectedCount,
    idleTimeoutMs: idle,
    timeoutMs: timeoutMs ?? 60_000,
    graceMs: Math.min(graceMs ?? 500, idle),
    clientId: clientId ?? 'k-entity-read-topic',
    security: securityOptions(brokers, tls, sasl),
  }
}

/** Checked as the outbox checks its `kafka` option, with the same messages. */
function securityOptions(
  brokers: string[],
  tls: KafkaOptions['tls'],
  sasl: KafkaOptions['sasl'],
): Pick<KafkaClientBase, 'tls' | 'sasl'> {
  if (tls === undefined && sasl === undefined) return {}
  const base = kafkaClientBase({ brokers, tls, sasl })
  return { ...(base.tls && { tls: base.tls }), ...(base.sasl && { sasl: base.sasl }) }
}
