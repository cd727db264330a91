import { describe, invalidArgument, WarningCodes } from '../core/errors.ts'
import { type Logger, type LoggerOption, resolveLogger } from '../core/logger.ts'
import type { Outbox, TopicMap } from '../core/outbox.ts'
import { OutboxRelay, type RelayOptions } from '../core/relay.ts'
import type { RetryPolicy } from '../core/retry.ts'
import type { RelayStore } from '../core/seams.ts'
import {
  checkKafkaSetting,
  isTransport,
  type KafkaOptions,
  type KafkaSetting,
  KafkaTransport,
} from '../transports/kafka/index.ts'
import { ensureTopics, kafkaForTopics } from '../transports/kafka/topics.ts'

/**
 * The relays an outbox object created in this process. Every dialect builds its relays here,
 * so they all get Kafka and the per-topic retry policies the same way, and can all be woken right
 * after a transaction helper commits.
 */
export class LocalRelays {
  readonly #relays = new Set<OutboxRelay>()

  create(
    outbox: Outbox<TopicMap>,
    store: RelayStore,
    kafka: KafkaSetting | undefined,
    options: RelayOptions & { kafka?: KafkaSetting },
    /** The outbox's logger (the relay's own `logger` option wins) and database, for log lines. */
    context: { logger?: LoggerOption; database?: string } = {},
  ): OutboxRelay {
    const setting = checkKafkaSetting(options.kafka) ?? kafka
    if (setting === undefined) {
      throw invalidArgument(
        `the relay needs Kafka: pass kafka: { brokers: ['host:9092'] } to the outbox or to relay()`,
      )
    }
    const topicRetry = new Map<string, Partial<RetryPolicy>>()
    for (const topic of Object.values(outbox.topics)) if (topic.retry) topicRetry.set(topic.name, topic.retry)
    if (options.ensureTopics !== undefined && typeof options.ensureTopics !== 'boolean') {
      throw invalidArgument(
        `relay option 'ensureTopics' must be true or false, got ${describe(options.ensureTopics)}`,
      )
    }
    const logger = options.logger === undefined ? context.logger : options.logger
    if (options.ensureTopics) {
      ensureBeforeFirstClaim(
        store,
        outbox,
        kafkaForTopics(setting, "relay option 'ensureTopics'"),
        options,
        resolveLogger(logger, 'relay options'),
      )
    }
    const transport = isTransport(setting) ? setting : new KafkaTransport(setting)
    const relay: OutboxRelay = new OutboxRelay(store, transport, {
      ...options,
      tracing: options.tracing ?? outbox.tracing,
      logger,
      endpoints: {
        kafka: isTransport(setting) ? undefined : setting.brokers.join(','),
        database: context.database,
      },
      topicRetry,
      onStop: () => {
        this.#relays.delete(relay)
        options.onStop?.()
      },
    })
    this.#relays.add(relay)
    return relay
  }

  /** New messages were committed: poll now rather than at the end of the polling interval. */
  wakeAll(): void {
    for (const relay of this.#relays) relay.wake()
  }
}

/**
 * `ensureTopics: true`: the store's connect runs `ensureTopics` first until it has worked once.
 * The relay claims only on a connected store, so nothing is sent before the topics exist, and
 * a failure goes through the loop's own error event and backoff like a failed connect.
 */
function ensureBeforeFirstClaim(
  store: RelayStore,
  outbox: Outbox<TopicMap>,
  kafka: KafkaOptions,
  options: Pick<RelayOptions, 'onEvent'>,
  logger: Logger,
): void {
  const connect = store.connect.bind(store)
  let ensured = false
  Object.defineProperty(store, 'connect', {
    configurable: true,
    value: async (): Promise<void> => {
      if (!ensured) {
        const report = await ensureTopics(kafka, outbox.topics)
        ensured = true
        if (report.created.length > 0) {
          logger.info(
            { created: report.created },
            `created Kafka topics ${report.created.map((c) => `'${c.topic}' (${c.partitions} partitions)`).join(', ')}`,
          )
        }
        for (const mismatch of report.mismatched) {
          const { topic, field, declared, actual } = mismatch
          logger.warn(
            { ...mismatch, code: WarningCodes.TOPIC_MISMATCH },
            `Kafka topic '${topic}' differs from its declaration: ${field} is ${actual ?? 'not reported by the broker'}, declared ${declared}; k-entity never alters an existing topic: change it with your Kafka tooling, or change the declaration`,
          )
        }
        try {
          options.onEvent?.({
            type: 'topics',
            created: report.created.map((c) => c.topic),
            ok: report.ok,
            mismatched: report.mismatched,
          })
        } catch {
          // Observers must not be able to break delivery.
        }
      }
      await connect()
    },
  })
}
