import { describe, ErrorCodes, invalidArgument, KEntityError } from './errors.ts'
import { type OutboxRecord, orderingHash, type RecordHeader } from './record.ts'
import { type RetryPolicy, resolveRetryPolicy } from './retry.ts'
import { bytesOf, isSerializer, jsonSerializer, type Serializer } from './serializer.ts'

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
  /** Route produce calls through the transactional outbox (default `true`). */
  outbox?: boolean
  /** Retry policy for this topic's messages; overrides the relay's default per field. */
  retry?: Partial<RetryPolicy>
  /**
   * Largest key + value + headers accepted by produce, in bytes (default 1,000,000, just under
   * Kafka's default `max.message.bytes`). Set it to your topic's limit: a message that Kafka
   * would refuse is rejected in your transaction instead of becoming a dead letter later.
   */
  maxMessageBytes?: number
}

/** Per-call overrides: an explicit key wins over the selector, headers merge over the topic's. */
export interface ProduceOptions {
  key?: KeyValue
  headers?: Headers
}

const DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
const TOPIC_NAME = /^[a-zA-Z0-9._-]{1,249}$/
const MAX_HEADER_NAME_LENGTH = 1024

export function validateTopicName(name: unknown): string {
  if (typeof name !== 'string' || !TOPIC_NAME.test(name) || name === '.' || name === '..') {
    throw new KEntityError(
      ErrorCodes.INVALID_TOPIC,
      `invalid Kafka topic name ${describe(name)}: use 1-249 characters from a-z, A-Z, 0-9, '.', '_' and '-', and not '.' or '..'`,
    )
  }
  return name
}

export class Topic<T> {
  readonly name: string
  readonly outbox: boolean
  readonly serializer: Serializer<T>
  readonly retry: Partial<RetryPolicy> | undefined
  readonly maxMessageBytes: number
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
    if (options.outbox !== undefined && typeof options.outbox !== 'boolean') {
      throw invalidArgument(`${where}: 'outbox' must be true or false, got ${describe(options.outbox)}`)
    }
    this.#key = options.key
    this.#headers = options.headers
    this.serializer = options.serializer ?? (jsonSerializer as Serializer<T>)
    this.outbox = options.outbox ?? true
    if (options.retry !== undefined) resolveRetryPolicy(options.retry, where)
    this.retry = options.retry
    const max = options.maxMessageBytes
    if (max !== undefined && (!Number.isInteger(max) || max < 1)) {
      throw invalidArgument(`${where}: 'maxMessageBytes' must be a positive integer, got ${describe(max)}`)
    }
    this.maxMessageBytes = max ?? DEFAULT_MAX_MESSAGE_BYTES
  }

  /** Serializes one message into what the outbox stores; throws before anything is written. */
  toRecord(message: T, options?: ProduceOptions): OutboxRecord {
    const where = this.#where
    const keyInput = options && 'key' in options ? options.key : this.#key?.(message)
    const key = keyBytes(keyInput, where)
    const value = message === null ? null : this.#serialize(message, where)
    const computed = typeof this.#headers === 'function' ? this.#headers(message) : this.#headers
    if (typeof this.#headers === 'function') checkHeaders(computed, `${where} (computed headers)`)
    if (options?.headers !== undefined) checkHeaders(options.headers, `${where} (produce headers)`)
    const headers = headerList(computed, options?.headers)
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

function headerList(base: Headers | undefined, extra: Headers | undefined): RecordHeader[] {
  if (base === undefined && extra === undefined) return []
  const merged = { ...base, ...extra }
  const list: RecordHeader[] = []
  for (const [name, value] of Object.entries(merged)) {
    if (value === undefined) continue
    list.push([name, value === null ? null : bytesOf(value)])
  }
  return list
}
