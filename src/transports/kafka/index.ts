import { compatibilityPartitioner, Producer, stringSerializers } from '@platformatic/kafka'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import type { OutboxRecord } from '../../core/record.ts'
import type { MessageTransport } from '../../core/seams.ts'

export interface KafkaOptions {
  /** Bootstrap brokers, e.g. `['127.0.0.1:9092']`. */
  brokers: string[]
  /** Client id shown in broker logs and quotas (default `k-entity`). */
  clientId?: string
  /** Per-request timeout in ms (default 10000). */
  requestTimeout?: number
  /**
   * Retries of one send inside the client before the relay's own backoff takes over (default 3,
   * at least 2: the client turns 0 or 1 into "retry forever" for idempotent producers).
   */
  retries?: number
  /** Longest one send may take before it is abandoned and the producer recreated, in ms. */
  sendTimeout?: number
  /** Compression for produced batches (default none). */
  compression?: 'none' | 'gzip' | 'snappy' | 'lz4' | 'zstd'
  /**
   * Let the broker create a topic on the first send to it (default true for now). A topic made
   * that way gets the broker's default partitions and settings; declare partitions on the topic
   * and call `outbox.ensureTopics()` instead.
   */
  autoCreateTopics?: boolean
}

const BROKER_ADDRESS = /^[^\s:/]+:\d{1,5}$/

export function validateKafkaOptions(options: unknown): Required<KafkaOptions> {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(
      `kafka options must be an object like { brokers: ['127.0.0.1:9092'] }, got ${describe(options)}`,
    )
  }
  const { brokers, clientId, requestTimeout, retries, compression, sendTimeout } = options as KafkaOptions
  const { autoCreateTopics } = options as KafkaOptions
  if (!Array.isArray(brokers) || brokers.length === 0) {
    throw invalidArgument(
      `kafka.brokers must be a non-empty array of 'host:port' strings, got ${describe(brokers)}`,
    )
  }
  for (const broker of brokers) {
    if (typeof broker !== 'string' || !BROKER_ADDRESS.test(broker)) {
      throw invalidArgument(
        `kafka.brokers entry ${describe(broker)} is not 'host:port' (e.g. '127.0.0.1:9092')`,
      )
    }
  }
  if (clientId !== undefined && (typeof clientId !== 'string' || clientId.length === 0)) {
    throw invalidArgument(`kafka.clientId must be a non-empty string`)
  }
  for (const [name, value] of [
    ['requestTimeout', requestTimeout],
    ['retries', retries],
    ['sendTimeout', sendTimeout],
  ] as const) {
    if (value !== undefined && (typeof value !== 'number' || !Number.isInteger(value) || value < 0)) {
      throw invalidArgument(`kafka.${name} must be a non-negative integer, got ${describe(value)}`)
    }
  }
  if (retries !== undefined && retries < 2) {
    throw invalidArgument(
      `kafka.retries must be at least 2, got ${retries}: the idempotent producer would turn it into unlimited retries, and a send to a dead broker would never fail`,
    )
  }
  const algorithms = ['none', 'gzip', 'snappy', 'lz4', 'zstd']
  if (compression !== undefined && !algorithms.includes(compression)) {
    throw invalidArgument(
      `kafka.compression must be one of ${algorithms.join(', ')}, got ${describe(compression)}`,
    )
  }
  if (autoCreateTopics !== undefined && typeof autoCreateTopics !== 'boolean') {
    throw invalidArgument(`kafka.autoCreateTopics must be true or false, got ${describe(autoCreateTopics)}`)
  }
  const resolvedTimeout = requestTimeout ?? 10_000
  const resolvedRetries = retries ?? 3
  return {
    brokers: [...brokers],
    clientId: clientId ?? 'k-entity',
    requestTimeout: resolvedTimeout,
    retries: resolvedRetries,
    sendTimeout: sendTimeout ?? resolvedTimeout * (resolvedRetries + 1) + 5000,
    compression: compression ?? 'none',
    autoCreateTopics: autoCreateTopics ?? true,
  }
}

/**
 * The default transport, on @platformatic/kafka: idempotent producer with acks=all (so a
 * retried batch is not written twice and order per partition holds), and the Java client's
 * murmur2 partitioner so a key lands on the same partition as from Java or kafkajs producers.
 */
export class KafkaTransport implements MessageTransport {
  readonly #options: Required<KafkaOptions>
  #producer: Producer<Buffer, Buffer, string, Buffer>
  #closed = false

  constructor(options: KafkaOptions) {
    this.#options = validateKafkaOptions(options)
    this.#producer = this.#createProducer()
  }

  #createProducer(): Producer<Buffer, Buffer, string, Buffer> {
    const resolved = this.#options
    return new Producer({
      clientId: resolved.clientId,
      bootstrapBrokers: resolved.brokers,
      idempotent: true,
      acks: -1,
      partitioner: compatibilityPartitioner,
      requestTimeout: resolved.requestTimeout,
      timeout: resolved.requestTimeout,
      retries: resolved.retries,
      retryDelay: 250,
      autocreateTopics: resolved.autoCreateTopics,
      serializers: { headerKey: stringSerializers.headerKey },
    })
  }

  async send(records: readonly OutboxRecord[]): Promise<void> {
    if (this.#closed) throw new KEntityError(ErrorCodes.TRANSPORT_FAILED, 'the Kafka transport is closed')
    if (records.length === 0) return
    const messages = records.map((record) => {
      const headers = new Map<string, Buffer>()
      for (const [name, value] of record.headers) headers.set(name, value ?? EMPTY)
      return {
        topic: record.topic,
        key: record.key ?? undefined,
        value: record.value ?? undefined,
        headers,
      }
    })
    const compression = this.#options.compression
    const producer = this.#producer
    let timer: NodeJS.Timeout | undefined
    let timedOut = false
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true
        reject(new Error(`no acknowledgement within sendTimeout (${this.#options.sendTimeout} ms)`))
      }, this.#options.sendTimeout)
    })
    try {
      await Promise.race([
        producer.send({ messages, ...(compression === 'none' ? {} : { compression }) }),
        deadline,
      ])
    } catch (cause) {
      if (timedOut && this.#producer === producer && !this.#closed) {
        // A producer stuck on a send cannot be trusted with the next one: start afresh. Whatever
        // it still delivers is sent again by the relay too: a duplicate, never a loss.
        this.#producer = this.#createProducer()
        producer.close(true).catch(() => {})
      }
      const permanent = permanentKafkaError(cause)
      throw new KEntityError(
        ErrorCodes.TRANSPORT_FAILED,
        `Kafka did not acknowledge a batch of ${records.length}: ${permanent ?? (cause instanceof Error ? cause.message : String(cause))}`,
        { cause, retryable: permanent === undefined },
      )
    } finally {
      clearTimeout(timer)
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#producer.close(true)
  }
}

const EMPTY = Buffer.alloc(0)

/**
 * Kafka error codes that no retry can fix: the record itself, the topic or the credentials are
 * wrong. Everything else (leader moved, broker unavailable, timeouts, throttling) is transient.
 */
const PERMANENT_KAFKA_ERRORS = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_TOPIC_EXCEPTION',
  'INVALID_RECORD',
  'CORRUPT_MESSAGE',
  'UNSUPPORTED_FOR_MESSAGE_FORMAT',
  'TOPIC_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
  'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  'SASL_AUTHENTICATION_FAILED',
  'INVALID_REQUIRED_ACKS',
  'POLICY_VIOLATION',
])

/** The first permanent Kafka error code found anywhere in an error's causes, if any. */
export function permanentKafkaError(error: unknown, seen = new Set<unknown>()): string | undefined {
  if (typeof error !== 'object' || error === null || seen.has(error)) return undefined
  seen.add(error)
  const apiId = (error as { apiId?: unknown }).apiId
  if (typeof apiId === 'string' && PERMANENT_KAFKA_ERRORS.has(apiId)) return apiId
  const nested = [(error as { cause?: unknown }).cause, ...((error as { errors?: unknown[] }).errors ?? [])]
  for (const inner of nested) {
    const found = permanentKafkaError(inner, seen)
    if (found) return found
  }
  return undefined
}

export function createKafkaTransport(options: KafkaOptions): KafkaTransport {
  return new KafkaTransport(options)
}

/** What users pass as `kafka`: connection options, or a transport of their own. */
export type KafkaSetting = KafkaOptions | MessageTransport

export function isTransport(value: unknown): value is MessageTransport {
  return typeof value === 'object' && value !== null && typeof (value as MessageTransport).send === 'function'
}

/** Validates eagerly so a typo in the broker list fails at startup, not at the first send. */
export function checkKafkaSetting(setting: unknown): KafkaSetting | undefined {
  if (setting === undefined || isTransport(setting)) return setting
  validateKafkaOptions(setting)
  return setting as KafkaOptions
}

/**
 * A transport created on first use from a setting, and closed only if it created it (a
 * user-supplied transport belongs to the user).
 */
export class LazyTransport {
  readonly #setting: KafkaSetting | undefined
  readonly #what: string
  #transport: MessageTransport | undefined

  constructor(setting: KafkaSetting | undefined, what: string) {
    this.#setting = checkKafkaSetting(setting)
    this.#what = what
  }

  get(): MessageTransport {
    if (this.#transport) return this.#transport
    if (this.#setting === undefined) {
      throw new KEntityError(
        ErrorCodes.NO_TRANSPORT,
        `${this.#what} needs Kafka, but no kafka option was given: pass kafka: { brokers: ['host:9092'] }`,
      )
    }
    this.#transport = isTransport(this.#setting) ? this.#setting : new KafkaTransport(this.#setting)
    return this.#transport
  }

  async close(): Promise<void> {
    const transport = this.#transport
    this.#transport = undefined
    if (transport && !isTransport(this.#setting)) await transport.close()
  }
}
