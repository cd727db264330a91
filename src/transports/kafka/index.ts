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
  /** Retries of one send inside the client before the relay's own backoff takes over (default 3). */
  retries?: number
  /** Compression for produced batches (default none). */
  compression?: 'none' | 'gzip' | 'snappy' | 'lz4' | 'zstd'
}

const BROKER_ADDRESS = /^[^\s:/]+:\d{1,5}$/

export function validateKafkaOptions(options: unknown): Required<KafkaOptions> {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(
      `kafka options must be an object like { brokers: ['127.0.0.1:9092'] }, got ${describe(options)}`,
    )
  }
  const { brokers, clientId, requestTimeout, retries, compression } = options as KafkaOptions
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
  ] as const) {
    if (value !== undefined && (typeof value !== 'number' || !Number.isInteger(value) || value < 0)) {
      throw invalidArgument(`kafka.${name} must be a non-negative integer, got ${describe(value)}`)
    }
  }
  const algorithms = ['none', 'gzip', 'snappy', 'lz4', 'zstd']
  if (compression !== undefined && !algorithms.includes(compression)) {
    throw invalidArgument(
      `kafka.compression must be one of ${algorithms.join(', ')}, got ${describe(compression)}`,
    )
  }
  return {
    brokers: [...brokers],
    clientId: clientId ?? 'k-entity',
    requestTimeout: requestTimeout ?? 10_000,
    retries: retries ?? 3,
    compression: compression ?? 'none',
  }
}

/**
 * The default transport, on @platformatic/kafka: idempotent producer with acks=all (so a
 * retried batch is not written twice and order per partition holds), and the Java client's
 * murmur2 partitioner so a key lands on the same partition as from Java or kafkajs producers.
 */
export class KafkaTransport implements MessageTransport {
  readonly #producer: Producer<Buffer, Buffer, string, Buffer>
  readonly #compression: Required<KafkaOptions>['compression']
  #closed = false

  constructor(options: KafkaOptions) {
    const resolved = validateKafkaOptions(options)
    this.#compression = resolved.compression
    this.#producer = new Producer({
      clientId: resolved.clientId,
      bootstrapBrokers: resolved.brokers,
      idempotent: true,
      acks: -1,
      partitioner: compatibilityPartitioner,
      requestTimeout: resolved.requestTimeout,
      timeout: resolved.requestTimeout,
      retries: resolved.retries,
      retryDelay: 250,
      autocreateTopics: true,
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
    try {
      await this.#producer.send({
        messages,
        ...(this.#compression === 'none' ? {} : { compression: this.#compression }),
      })
    } catch (cause) {
      throw new KEntityError(
        ErrorCodes.TRANSPORT_FAILED,
        `Kafka did not acknowledge a batch of ${records.length}: ${cause instanceof Error ? cause.message : String(cause)}`,
        { cause, retryable: true },
      )
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#producer.close(true)
  }
}

const EMPTY = Buffer.alloc(0)

export function createKafkaTransport(options: KafkaOptions): KafkaTransport {
  return new KafkaTransport(options)
}
