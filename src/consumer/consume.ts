import { invalidArgument } from '../core/errors.ts'
import type { Topic } from '../core/topic.ts'
import { validateKafkaOptions } from '../transports/kafka/index.ts'
import { KafkaConsumer, type MessageProcessor } from './kafka-consumer.ts'
import { checkFunction, checkTopic, type KafkaConsumerOptions, resolveConsumerOptions } from './options.ts'

/**
 * A consumer of a typed topic, without a database: at least once (a crash between a handler's
 * effects and the offset commit repeats the message). For effects exactly once, consume through
 * the outbox (`outbox.consume(...)`), which adds the inbox.
 *
 * Handler form (`handler` given): started at once. Iterator form: `for await (const m of consumer)`.
 */
export function consume<T>(topic: Topic<T>, options: KafkaConsumerOptions<T>): KafkaConsumer<T> {
  const where = 'consume()'
  checkTopic(topic, where)
  const resolved = resolveConsumerOptions(options, where)
  if (options.kafka === undefined) {
    throw invalidArgument(`${where}: 'kafka' is missing; pass kafka: { brokers: ['127.0.0.1:9092'] }`)
  }
  const kafka = validateKafkaOptions(options.kafka)
  checkFunction(options.handler, 'handler', where, false)
  checkFunction(options.onDeadLetter, 'onDeadLetter', where, false)
  const { handler, onDeadLetter } = options
  if (handler === undefined) return new KafkaConsumer(topic, kafka, resolved)
  const processor: MessageProcessor<T> = {
    handle: (message) => handler(message),
    async deadLetter(dead) {
      if (onDeadLetter !== undefined) {
        await onDeadLetter(dead)
        return
      }
      resolved.logger.error(
        {
          topic: dead.topic,
          partition: dead.partition,
          offset: String(dead.offset),
          attempts: dead.attempts,
          error: dead.error instanceof Error ? dead.error.message : String(dead.error),
        },
        'a consumer handler failed on every attempt; the message was skipped (pass onDeadLetter to keep it)',
      )
    },
  }
  const consumer = new KafkaConsumer(topic, kafka, resolved, processor)
  consumer.start().catch((error: unknown) => {
    resolved.logger.error(
      { topic: topic.name, groupId: resolved.groupId, error: String(error) },
      'the consumer failed to start',
    )
  })
  return consumer
}
