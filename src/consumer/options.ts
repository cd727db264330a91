import { describe, invalidArgument } from '../core/errors.ts'
import { type Logger, resolveLogger } from '../core/logger.ts'
import { Topic } from '../core/topic.ts'
import type { KafkaOptions } from '../transports/kafka/index.ts'
import { type ConsumerFilter, type RecordFilter, resolveFilter } from './filter.ts'
import type { ConsumedMessage } from './message.ts'

/** How a failing handler is retried before its message becomes a dead letter. */
export interface ConsumerRetry {
  /** Tries in all, the first included (default 5; 1: no retry). */
  attempts?: number
  /** First wait after a failure, in ms (default 200); doubles per failure, with jitter. */
  initialDelayMs?: number
  /** Longest wait between tries, in ms (default 10000). */
  maxDelayMs?: number
}

/** What every consumer accepts. */
export interface ConsumerBaseOptions {
  /** The Kafka consumer group: members of one group share the partitions, each group reads everything. */
  groupId: string
  /**
   * Where a group without a committed offset for a partition starts: `'earliest'` (default, the
   * whole retained topic) or `'latest'` (only records written from now on).
   */
  from?: 'earliest' | 'latest'
  /**
   * Most records fetched but not yet handled, across partitions (default 10000): past it the
   * consumer stops fetching until half of them are done. With an inbox, room for two batches per
   * partition keeps the batches full (see `batchSize`).
   */
  maxInFlight?: number
  /**
   * Most bytes (keys, values and headers) of records fetched but not yet handled, across
   * partitions (default 64 MiB): past it the consumer stops fetching until half of them are done,
   * so memory is bounded whatever the payloads' size. One fetch (64 KiB per partition, or a single
   * larger record) can go past it.
   */
  maxInFlightBytes?: number
  /** Handler retries with backoff before the dead letter (see `ConsumerRetry`). */
  retry?: ConsumerRetry
  /** Longest wait of one fetch request for new records, in ms (default 500). */
  maxWaitMs?: number
  /**
   * How long the group waits for a member that stopped heartbeating (a crashed process) before
   * giving its partitions to the others, in ms (default 30000; the broker allows 6000 and up by default).
   */
  sessionTimeoutMs?: number
  /**
   * Static membership: a name for this member, stable across restarts (a pod name). A member
   * that restarts under the same name gets its partitions back at once, without the group
   * waiting `sessionTimeoutMs` for the old process and rebalancing. Unique within the group.
   */
  groupInstanceId?: string
  /**
   * Commit handled offsets at most this often, in ms (default 0: as each message is done, the
   * client merging commits that overlap). Longer means fewer commit requests, and more messages
   * delivered again after a crash (which an inbox skips).
   */
  commitIntervalMs?: number
  /** Where the consumer logs; `false` for none. Default: warnings and errors on stderr. */
  logger?: Logger | false
  /**
   * Only records that pass reach the handler: `{ headers: { 'event-type': 'OrderCreated' } }`
   * (byte-equal header values; a list accepts any of them) or `(record) => boolean` on the
   * record before deserialization. A skipped record gets no handler call, no inbox row and no
   * dead letter; its offset is committed and it counts in `counts.filtered`. See `ConsumerFilter`.
   */
  filter?: ConsumerFilter
}

export interface KafkaConsumerOptions<T> extends ConsumerBaseOptions {
  /** The cluster, as the outbox's `kafka` option takes it (TLS and SASL included). */
  kafka: KafkaOptions
  /**
   * Handler form: called for each message, one at a time per partition, partitions in parallel;
   * the offset is committed after it resolves. Without it, iterate the consumer (`for await`).
   */
  handler?: (message: ConsumedMessage<T>) => Promise<void>
  /**
   * Called with a message whose handler failed `retry.attempts` times (or whose value could not
   * be deserialized); the consumer then moves on. Default: an error line in the log. A consumer
   * with an inbox (`outbox.consume`) writes a dead-letter row instead.
   */
  onDeadLetter?: (message: DeadMessage<T>) => Promise<void> | void
}

/** A message given up on: the record as far as it could be read, and the last error. */
export interface DeadMessage<T> {
  message: ConsumedMessage<T> | undefined
  topic: string
  partition: number
  offset: bigint
  key: Buffer | null
  value: Buffer | null
  error: unknown
  attempts: number
}

export interface ResolvedConsumerOptions {
  groupId: string
  from: 'earliest' | 'latest'
  maxInFlight: number
  maxInFlightBytes: number
  attempts: number
  initialDelayMs: number
  maxDelayMs: number
  maxWaitMs: number
  sessionTimeoutMs: number
  commitIntervalMs: number
  groupInstanceId: string | undefined
  logger: Logger
  filter: RecordFilter | undefined
}

const GROUP_ID = /^[a-zA-Z0-9._-]{1,249}$/

export function checkTopic(topic: unknown, where: string): Topic<unknown> {
  if (!(topic instanceof Topic)) {
    throw invalidArgument(`${where} needs a topic created with defineTopic(), got ${describe(topic)}`)
  }
  if (topic.deserializer === undefined) {
    throw invalidArgument(
      `${where}: topic '${topic.name}' has a custom serializer ('${topic.serializer.name}') but no deserializer; pass defineTopic({ ..., deserializer: { name, deserialize(bytes) } })`,
    )
  }
  return topic
}

export function resolveConsumerOptions(options: unknown, where: string): ResolvedConsumerOptions {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(
      `${where} needs an options object like { groupId: 'billing', ... }, got ${describe(options)}`,
    )
  }
  const {
    groupId,
    from,
    maxInFlight,
    maxInFlightBytes,
    retry,
    maxWaitMs,
    sessionTimeoutMs,
    commitIntervalMs,
    groupInstanceId,
    logger,
    filter,
  } = options as ConsumerBaseOptions
  if (typeof groupId !== 'string' || !GROUP_ID.test(groupId)) {
    throw invalidArgument(
      `${where}: 'groupId' must be 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-', got ${describe(groupId)}`,
    )
  }
  if (
    groupInstanceId !== undefined &&
    (typeof groupInstanceId !== 'string' || !GROUP_ID.test(groupInstanceId))
  ) {
    throw invalidArgument(
      `${where}: 'groupInstanceId' must be 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-', got ${describe(groupInstanceId)}`,
    )
  }
  if (from !== undefined && from !== 'earliest' && from !== 'latest') {
    throw invalidArgument(`${where}: 'from' must be 'earliest' or 'latest', got ${describe(from)}`)
  }
  if (retry !== undefined && (typeof retry !== 'object' || retry === null)) {
    throw invalidArgument(`${where}: 'retry' must be an object like { attempts: 5 }, got ${describe(retry)}`)
  }
  const resolved: ResolvedConsumerOptions = {
    groupId,
    from: from ?? 'earliest',
    maxInFlight: count(maxInFlight, 'maxInFlight', 1, 1_000_000, 10_000, where),
    maxInFlightBytes: count(maxInFlightBytes, 'maxInFlightBytes', 1024, 2 ** 34, 64 * 1024 * 1024, where),
    attempts: count(retry?.attempts, 'retry.attempts', 1, 1000, 5, where),
    initialDelayMs: count(retry?.initialDelayMs, 'retry.initialDelayMs', 0, 3_600_000, 200, where),
    maxDelayMs: count(retry?.maxDelayMs, 'retry.maxDelayMs', 0, 3_600_000, 10_000, where),
    maxWaitMs: count(maxWaitMs, 'maxWaitMs', 1, 60_000, 500, where),
    sessionTimeoutMs: count(sessionTimeoutMs, 'sessionTimeoutMs', 1000, 3_600_000, 30_000, where),
    commitIntervalMs: count(commitIntervalMs, 'commitIntervalMs', 0, 3_600_000, 0, where),
    groupInstanceId,
    logger: resolveLogger(logger, where),
    filter: resolveFilter(filter, where),
  }
  if (resolved.maxDelayMs < resolved.initialDelayMs) {
    throw invalidArgument(
      `${where}: 'retry.maxDelayMs' (${resolved.maxDelayMs}) is below 'retry.initialDelayMs' (${resolved.initialDelayMs})`,
    )
  }
  return resolved
}

export function checkFunction(value: unknown, name: string, where: string, required: boolean): void {
  if (value === undefined && !required) return
  if (typeof value !== 'function') {
    throw invalidArgument(`${where}: '${name}' must be a function, got ${describe(value)}`)
  }
}

function count(
  value: unknown,
  name: string,
  min: number,
  max: number,
  fallback: number,
  where: string,
): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(
      `${where}: '${name}' must be an integer from ${min} to ${max}, got ${describe(value)}`,
    )
  }
  return value
}
