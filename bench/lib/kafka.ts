// Kafka helpers: the raw producer baseline (same client and settings as KafkaTransport), a
// warm-up, and a transport wrapper that records when each message was acknowledged.
import { compatibilityPartitioner, Producer, stringSerializers } from '@platformatic/kafka'
import { startKafkaBroker } from '../../scripts/kafka-broker.ts'
import { type MessageTransport, type OutboxRecord, RELAY_DEFAULTS } from '../../src/index.ts'
import { TRACKING_ID_HEADER } from '../../src/testing/index.ts'
import { KafkaTransport } from '../../src/transports/kafka/index.ts'
import { wallNow } from './stats.ts'
import { benchRecords, KEYS } from './workload.ts'

export type RawProducer = Producer<Buffer, Buffer, string, Buffer>

/** The producer KafkaTransport creates, with the same options (idempotent, acks=-1, murmur2). */
export function rawProducer(brokers: string[]): RawProducer {
  const requestTimeout = 10_000
  return new Producer({
    clientId: 'k-entity-bench-raw',
    bootstrapBrokers: brokers,
    idempotent: true,
    acks: -1,
    partitioner: compatibilityPartitioner,
    requestTimeout,
    timeout: requestTimeout,
    retries: 3,
    retryDelay: 250,
    autocreateTopics: true,
    serializers: { headerKey: stringSerializers.headerKey },
  })
}

const EMPTY = Buffer.alloc(0)

/** The exact mapping KafkaTransport.send applies to a record. */
export function toKafkaMessage(record: OutboxRecord) {
  const headers = new Map<string, Buffer>()
  for (const [name, value] of record.headers) headers.set(name, value ?? EMPTY)
  return { topic: record.topic, key: record.key ?? undefined, value: record.value ?? undefined, headers }
}

/** One acknowledged message to a throwaway topic: connects and initialises the idempotent producer. */
export function warmupRecord(topic: string): OutboxRecord {
  return { topic, key: Buffer.from('warmup'), value: Buffer.from('warmup'), headers: [], orderingHash: null }
}

/**
 * Wraps a transport and notes, per tracking id, the wall-clock time at which Kafka acknowledged
 * the batch holding it. @platformatic/kafka 2.12 reports a record's CreateTime even on a topic
 * with `message.timestamp.type=LogAppendTime` (it ignores the batch's append time), so the
 * acknowledgement is taken where the relay sees it instead.
 */
export class AckRecordingTransport implements MessageTransport {
  readonly inner: MessageTransport
  readonly acks = new Map<string, number>()
  /**
   * With `recordSends`: every acknowledged send in call order (wall-clock start and ack), and
   * which of them carried each message, so a message's latency can be split into its stages.
   */
  readonly sends: SendTiming[] = []
  readonly sendOf = new Map<string, number>()
  readonly #recordSends: boolean
  recording = true

  constructor(inner: MessageTransport, recordSends = false) {
    this.inner = inner
    this.#recordSends = recordSends
  }

  async send(records: readonly OutboxRecord[]): Promise<void> {
    const start = wallNow()
    await this.inner.send(records)
    if (!this.recording) return
    const at = wallNow()
    const index = this.sends.length
    if (this.#recordSends) this.sends.push({ start, ack: at, count: records.length })
    for (const record of records) {
      for (const [name, value] of record.headers) {
        if (name === TRACKING_ID_HEADER && value !== null) {
          const id = value.toString('utf8')
          if (!this.acks.has(id)) {
            this.acks.set(id, at)
            if (this.#recordSends) this.sendOf.set(id, index)
          }
        }
      }
    }
  }

  close(): Promise<void> {
    return this.inner.close()
  }
}

export interface SendTiming {
  /** Wall-clock ms when the relay called send, and when it resolved. */
  start: number
  ack: number
  count: number
}

/** Batches sent to the warm-up topic before a measurement (connection, producer id, JIT). */
export const WARMUP_BATCHES = 30

/** Bench-shaped records (256-byte values, tracking headers) for the warm-up topic. */
export function warmupBatch(topic: string, batch: number): OutboxRecord[] {
  return benchRecords(topic, `warmup${batch}`, 0, RELAY_DEFAULTS.maxMessagesPerPoll)
}

/**
 * Untracked records for the measured topic, one per key of the workload: the first writes to a
 * fresh topic cost 100-350 ms (metadata, partition leaders, first segment writes), which would
 * dominate a short run. The delivery check ignores records without tracking headers.
 */
export function topicWarmupRecords(topic: string): OutboxRecord[] {
  const records: OutboxRecord[] = []
  for (let key = 0; key < KEYS; key++) {
    records.push({
      topic,
      key: Buffer.from(`key-${key}`),
      value: Buffer.from('warmup'),
      headers: [],
      orderingHash: null,
    })
  }
  return records
}

/**
 * A KafkaTransport that already connected, initialised its idempotent producer, sent a few full
 * batches (so a measurement does not start on cold, unoptimised code), and touched every
 * partition of the measured topic.
 */
export async function warmTransport(
  brokers: string[],
  warmupTopic: string,
  measuredTopic?: string,
): Promise<KafkaTransport> {
  const transport = new KafkaTransport({ brokers, clientId: 'k-entity-bench' })
  await transport.send([warmupRecord(warmupTopic)])
  for (let batch = 0; batch < WARMUP_BATCHES; batch++) await transport.send(warmupBatch(warmupTopic, batch))
  if (measuredTopic !== undefined) await transport.send(topicWarmupRecords(measuredTopic))
  return transport
}

/** The broker a standalone bench script uses: `KAFKA_BROKERS` when set, else one it starts (and stops). */
export async function benchBrokers(): Promise<{ brokers: string[]; stop(): Promise<void> }> {
  if (process.env.KAFKA_BROKERS)
    return { brokers: process.env.KAFKA_BROKERS.split(','), stop: async () => {} }
  const broker = await startKafkaBroker({ jvm: 'server' })
  return { brokers: [broker.brokers], stop: () => broker.stop() }
}
