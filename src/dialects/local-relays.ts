import { invalidArgument } from '../core/errors.ts'
import type { Outbox, TopicMap } from '../core/outbox.ts'
import { OutboxRelay, type RelayOptions } from '../core/relay.ts'
import type { RetryPolicy } from '../core/retry.ts'
import type { RelayStore } from '../core/seams.ts'
import {
  checkKafkaSetting,
  isTransport,
  type KafkaSetting,
  KafkaTransport,
} from '../transports/kafka/index.ts'

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
  ): OutboxRelay {
    const setting = checkKafkaSetting(options.kafka) ?? kafka
    if (setting === undefined) {
      throw invalidArgument(
        `the relay needs Kafka: pass kafka: { brokers: ['host:9092'] } to the outbox or to relay()`,
      )
    }
    const topicRetry = new Map<string, Partial<RetryPolicy>>()
    for (const topic of Object.values(outbox.topics)) if (topic.retry) topicRetry.set(topic.name, topic.retry)
    const transport = isTransport(setting) ? setting : new KafkaTransport(setting)
    const relay: OutboxRelay = new OutboxRelay(store, transport, {
      ...options,
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
