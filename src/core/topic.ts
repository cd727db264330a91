import { randomUUID } from 'node:crypto'
import { describe, ErrorCodes, invalidArgument, KEntityError } from './errors.ts'
import { type OutboxRecord, orderingHash, type RecordHeader } from './record.ts'
import { type RetryPolicy, resolveRetryPolicy } from './retry.ts'
import {
  bytesOf,
  type Deserializer,
  deserializerFor,
  isDeserializer,
  isSerializer,
  jsonSerializer,
  type Serializer,
} from './serializer.ts'

/** What a key selector may return. `null`/`undefined` means no key (no per-key ordering). */
export type KeyValue = string | Uint8Array | null | undefined
export type HeaderValue = string | Uint8Array | null | undefined
export type Headers = Readonly<Record<string, HeaderValue>>

export interface TopicOptions<T> {
  /** The Kafka topic name: 1-249 characters of `a-z A-Z 0-9 . _ -`. */
  name: string
  /** Selects the Kafka key; messages with equal keys keep their order end to end. */
  key?: (message: T) => KeyValue
  /** Static headers, or a function computing them per message. */
  headers?: Headers | ((message: T) => Headers)
  /** Defaults to JSON (strings and bytes pass through). */
  serializer?: Serializer<T>
  /**
   * Turns consumed records back into messages (`consume()`). Default: the one matching the
   * serializer (JSON, string, Buffer); a custom serializer needs its own deserializer to be consumed.
   */
  deserializer?: Deserializer<T>
  /**
   * Give every produced message a header `ke-message-id` holding a random UUID (default false), kept
   * if the relay sends the message twice: an inbox consumer's default key, so a duplicate sent by
   * the relay is skipped like one redelivered by Kafka. A `ke-message-id` passed to produce() wins.
   */
  messageId?: boolean
  /** Route produce calls through the transactional outbox (default `true`). */
  outbox?: boolean
  /** Retry policy for this topic's messages; overrides the relay's default per field. */
  retry?: Partial<RetryPolicy>
  /**
   * Largest key + value + headers accepted by produce, in bytes (default 1,000,000, just under
   * Kafka's default `max.message.bytes`). Set it to your topic's limit: a message that Kafka
   * would refuse is rejected in your transaction instead of becoming a dead letter later.
   * Above the default, it also declares the topic's `max.message.bytes` (this plus 1024 bytes of
   * record overhead) for `ensureTopics()`, unless `configs` sets it; below, it is the
   * application's own limit and the topic keeps its default. With `configs['max.message.bytes']`
   * and no `maxMessageBytes`, the limit follows the config (less the overhead, at most the default).
   */
  maxMessageBytes?: number
  /**
   * Partitions to create the topic with (`outbox.ensureTopics()`); left out, the broker's
   * `num.partitions` decides. Never changes an existing topic: a difference is reported.
   */
  partitions?: number
  /** Replicas of each partition when the topic is created; left out, the broker's default. */
  replicationFactor?: number
  /**
   * Topic configs to create the topic with, by Kafka name, e.g.
   * `{ 'retention.ms': '604800000', 'cleanup.policy': 'compact', 'min.insync.replicas': '2' }`.
   * An explicit `maxMessageBytes` above the default also declares `max.message.bytes` (see there).
   */
  configs?: Readonly<Record<string, string>>
}

/** Per-call overrides: an explicit key wins over the selector, headers merge over the topic's. */
export interface ProduceOptions {
  key?: KeyValue
  headers?: Headers
}

/** The header `messageId: true` adds; an inbox consumer's default key. */
export const MESSAGE_ID_HEADER = 'ke-message-id'

const DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
/**
 * What Kafka adds around one record in a batch (batch header 61 bytes, record framing and
 * varints), with room to spare: a topic's `max.message.bytes` must exceed the largest message by it.
 */
const RECORD_BATCH_OVERHEAD = 1024
const TOPIC_NAME = /^[a-zA-Z0-9._-]{1,249}$/
const MAX_HEADER_NAME_LENGTH = 1024
/** Kafka's largest replication factor (an int16 on the wire). */
const MAX_REPLICATION_FACTOR = 32_767
const MAX_PARTITIONS = 2_147_483_647
/** Kafka config names: lower-case words joined by dots, e.g. `retention.ms`, `cleanup.policy`. */
const CONFIG_NAME = /^[a-z0-9]+([._-][a-z0-9]+)*$/

/**
 * Checks a Kafka topic name: the characters Kafka allows, and none of the names Kafka keeps for
 * itself. Names starting with `__` are its internal topics (`__consumer_offsets`,
 * `__transaction_state`, `__cluster_metadata`, `__share_group_state`, ...): a producer that
 * writes to one corrupts the cluster's bookkeeping, and the client fails outside any promise.
 */
export function validateTopicName(name: unknown): string {
  if (typeof name !== 'string' || !TOPIC_NAME.test(name) || name === '.' || name === '..') {
    throw new KEntityError(
      ErrorCodes.INVALID_TOPIC,
      `invalid Kafka topic name ${describe(name)}: use 1-249 characters from a-z, A-Z, 0-9, '.', '_' and '-', and not '.' or '..'`,
    )
  }
  if (name.startsWith('__')) {
    throw new KEntityError(
      ErrorCodes.INVALID_TOPIC,
      `Kafka topic name '${name}' is reserved: names starting with '__' belong to Kafka's internal topics (__consumer_offsets, __transaction_state, __cluster_metadata, __share_group_state, ...); pick a name without the leading '__'`,
    )
  }
  return name
}

/**
 * The form in which Kafka compares topic names for collisions: it refuses a topic whose name
 * differs from an existing one only by '.' against '_' (both become '_' in metric names).
 */
export function topicCollisionKey(name: string): string {
  return name.replaceAll('.', '_')
}

export class Topic<T> {
  readonly name: string
  readonly outbox: boolean
  readonly serializer: Serializer<T>
  /** Undefined when the serializer is a custom one and no deserializer was given. */
  readonly deserializer: Deserializer<T> | undefined
  readonly messageId: boolean
  readonly retry: Partial<RetryPolicy> | undefined
  readonly maxMessageBytes: number
  /** Declared partitions, if any (used when the topic is created; reported when it differs). */
  readonly partitions: number | undefined
  readonly replicationFactor: number | undefined
  /** Declared topic configs, `max.message.bytes` derived from `maxMessageBytes` included. */
  readonly configs: Readonly<Record<string, string>>
  readonly #key: ((message: T) => KeyValue) | undefined
  readonly #headers: Headers | ((message: T) => Headers) | undefined
  /** How error messages name this topic (built once: toRecord runs for every message). */
  readonly #where: string

  constructor(options: TopicOptions<T>) {
    if (typeof options !== 'object' || options === null) {
      throw invalidArgument(`defineTopic() needs an options object like { name: 'orders', key: (m) => m.id }`)
    }
    this.name = validateTopicName(options.name)
    const where = `topic '${this.name}'`
    this.#where = where
    if (options.key !== undefined && typeof options.key !== 'function') {
      throw invalidArgument(
        `${where}: 'key' must be a function selecting the key from a message, got ${describe(options.key)}`,
      )
    }
    if (options.headers !== undefined && typeof options.headers !== 'function') {
      checkHeaders(options.headers, where)
    }
    if (options.serializer !== undefined && !isSerializer(options.serializer)) {
      throw invalidArgument(
        `${where}: 'serializer' must be an object with a name and a serialize(value) method`,
      )
    }
    if (options.deserializer !== undefined && !isDeserializer(options.deserializer)) {
      throw invalidArgument(
        `${where}: 'deserializer' must be an object with a name and a deserialize(bytes) method, like jsonDeserializer`,
      )
    }
    if (options.messageId !== undefined && typeof options.messageId !== 'boolean') {
      throw invalidArgument(`${where}: 'messageId' must be true or false, got ${describe(options.messageId)}`)
    }
    if (options.outbox !== undefined && typeof options.outbox !== 'boolean') {
      throw invalidArgument(`${where}: 'outbox' must be true or false, got ${describe(options.outbox)}`)
    }
    this.#key = options.key
    this.#headers = options.headers
    this.serializer = options.serializer ?? (jsonSerializer as Serializer<T>)
    this.deserializer =
      options.deserializer ??
      (deserializerFor(this.serializer as Serializer<unknown>) as Deserializer<T> | undefined)
    this.messageId = options.messageId ?? false
    this.outbox = options.outbox ?? true
    if (options.retry !== undefined) resolveRetryPolicy(options.retry, where)
    this.retry = options.retry
    const max = options.maxMessageBytes
    if (max !== undefined && (!Number.isInteger(max) || max < 1)) {
      throw invalidArgument(`${where}: 'maxMessageBytes' must be a positive integer, got ${describe(max)}`)
    }
    this.partitions = checkCount(options.partitions, 'partitions', MAX_PARTITIONS, where)
    this.replicationFactor = checkCount(
      options.replicationFactor,
      'replicationFactor',
      MAX_REPLICATION_FACTOR,
      where,
    )
    const configs = checkConfigs(options.configs, where)
    const declaredTopicMax = configs['max.message.bytes']
    if (declaredTopicMax === undefined) {
      // Raising maxMessageBytes only helps if the topic takes such messages: declare the topic's
      // limit with it. A lower maxMessageBytes is an application's own stricter limit and leaves
      // the topic alone: a topic limit that small would refuse batches of several messages.
      if (max !== undefined && max > DEFAULT_MAX_MESSAGE_BYTES) {
        configs['max.message.bytes'] = String(max + RECORD_BATCH_OVERHEAD)
      }
      this.maxMessageBytes = max ?? DEFAULT_MAX_MESSAGE_BYTES
    } else {
      const topicMax = Number(declaredTopicMax)
      if (!/^\d+$/.test(declaredTopicMax) || topicMax <= RECORD_BATCH_OVERHEAD) {
        throw invalidArgument(
          `${where}: configs['max.message.bytes'] must be a whole number of bytes above ${RECORD_BATCH_OVERHEAD}, got ${describe(declaredTopicMax)}`,
        )
      }
      if (max !== undefined && max + RECORD_BATCH_OVERHEAD > topicMax) {
        throw invalidArgument(
          `${where}: maxMessageBytes (${max}) does not fit in configs['max.message.bytes'] (${topicMax}) with Kafka's ${RECORD_BATCH_OVERHEAD} bytes of record overhead: Kafka would refuse messages that produce accepts; raise max.message.bytes to at least ${max + RECORD_BATCH_OVERHEAD} or lower maxMessageBytes`,
        )
      }
      this.maxMessageBytes = max ?? Math.min(DEFAULT_MAX_MESSAGE_BYTES, topicMax - RECORD_BATCH_OVERHEAD)
    }
    this.configs = Object.freeze(configs)
  }

  /**
   * Serializes one message into what the outbox stores; throws before anything is written.
   * `context`: headers under the topic's and the call's (the outbox's `tracing`).
   */
  toRecord(message: T, options?: ProduceOptions, context?: Headers): OutboxRecord {
    const where = this.#where
    const keyInput = options && 'key' in options ? options.key : this.#key?.(message)
    const key = keyBytes(keyInput, where)
    const value = message === null ? null : this.#serialize(message, where)
    const computed = typeof this.#headers === 'function' ? this.#headers(message) : this.#headers
    if (typeof this.#headers === 'function') checkHeaders(computed, `${where} (computed headers)`)
    if (options?.headers !== undefined) checkHeaders(options.headers, `${where} (produce headers)`)
    if (context !== undefined) checkHeaders(context, `${where} (tracing headers)`)
    const headers = headerList(context, computed, options?.headers)
    if (this.messageId && !headers.some(([name]) => name === MESSAGE_ID_HEADER)) {
      headers.push([MESSAGE_ID_HEADER, Buffer.from(randomUUID(), 'latin1')])
    }
    let size = (key?.length ?? 0) + (value?.length ?? 0)
    for (const [name, headerValue] of headers) size += Buffer.byteLength(name) + (headerValue?.length ?? 0)
    if (size > this.maxMessageBytes) {
      throw new KEntityError(
        ErrorCodes.MESSAGE_TOO_LARGE,
        `${where}: the message is ${size} bytes (key, value and headers), over the topic's maxMessageBytes of ${this.maxMessageBytes}; shrink it, or raise maxMessageBytes together with the topic's max.message.bytes`,
      )
    }
    return {
      topic: this.name,
      key,
      value,
      headers,
      orderingHash: key === null ? null : orderingHash(this.name, key),
    }
  }

  #serialize(message: T, where: string): Buffer {
    let bytes: unknown
    try {
      bytes = this.serializer.serialize(message)
    } catch (cause) {
      if (cause instanceof KEntityError) {
        cause.message = `${where}: ${cause.message}`
        throw cause
      }
      throw new KEntityError(
        ErrorCodes.SERIALIZATION_FAILED,
        `${where}: serializer '${this.serializer.name}' failed: ${cause instanceof Error ? cause.message : String(cause)}`,
        { cause },
      )
    }
    if (!(bytes instanceof Uint8Array)) {
      throw new KEntityError(
        ErrorCodes.SERIALIZATION_FAILED,
        `${where}: serializer '${this.serializer.name}' returned ${describe(bytes)} instead of a Buffer`,
      )
    }
    return bytesOf(bytes)
  }
}

export function defineTopic<T = unknown>(options: TopicOptions<T>): Topic<T> {
  return new Topic(options)
}

function checkCount(value: unknown, name: string, limit: number, where: string): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > limit) {
    throw invalidArgument(
      `${where}: '${name}' must be an integer from 1 to ${limit}, got ${describe(value)}; leave it out to use the broker's default`,
    )
  }
  return value
}

function checkConfigs(configs: unknown, where: string): Record<string, string> {
  if (configs === undefined) return {}
  if (typeof configs !== 'object' || configs === null || Array.isArray(configs)) {
    throw invalidArgument(
      `${where}: 'configs' must be an object of Kafka topic config name -> string value, like { 'retention.ms': '604800000' }, got ${describe(configs)}`,
    )
  }
  const checked: Record<string, string> = {}
  for (const [name, value] of Object.entries(configs)) {
    if (!CONFIG_NAME.test(name)) {
      throw invalidArgument(
        `${where}: ${describe(name)} is not a Kafka topic config name; they look like 'retention.ms', 'cleanup.policy', 'min.insync.replicas' or 'max.message.bytes'`,
      )
    }
    if (typeof value !== 'string') {
      throw invalidArgument(
        `${where}: configs['${name}'] must be a string as Kafka takes it, got ${describe(value)}${typeof value === 'number' || typeof value === 'boolean' ? `; write '${value}'` : ''}`,
      )
    }
    checked[name] = value
  }
  return checked
}

function keyBytes(key: unknown, where: string): Buffer | null {
  if (key === null || key === undefined) return null
  if (typeof key === 'string' || key instanceof Uint8Array) return bytesOf(key)
  throw invalidArgument(
    `${where}: the key must be a string, Buffer, null or undefined, got ${describe(key)}; convert it, e.g. String(id)`,
  )
}

function checkHeaders(headers: unknown, where: string): void {
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers) || Buffer.isBuffer(headers)) {
    throw invalidArgument(
      `${where}: headers must be an object of name -> string | Buffer, got ${describe(headers)}`,
    )
  }
  for (const [name, value] of Object.entries(headers)) {
    if (name.length === 0 || name.length > MAX_HEADER_NAME_LENGTH) {
      throw invalidArgument(`${where}: header names must be 1-${MAX_HEADER_NAME_LENGTH} characters long`)
    }
    if (
      value !== null &&
      value !== undefined &&
      typeof value !== 'string' &&
      !(value instanceof Uint8Array)
    ) {
      throw invalidArgument(
        `${where}: header '${name}' must be a string, Buffer or null, got ${describe(value)}`,
      )
    }
  }
}

function headerList(
  context: Headers | undefined,
  base: Headers | undefined,
  extra: Headers | undefined,
): RecordHeader[] {
  if (context === undefined && base === undefined && extra === undefined) return []
  const merged = { ...context, ...base, ...extra }
  const list: RecordHeader[] = []
  for (const [name, value] of Object.entries(merged)) {
    if (value === undefined) continue
    list.push([name, value === null ? null : bytesOf(value)])
  }
  return list
}
