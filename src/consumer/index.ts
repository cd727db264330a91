export { consume } from './consume.ts'
export type { ConsumerFilter, FilterHeaderValue, FilterRecord } from './filter.ts'
export { type ConsumerCounts, KafkaConsumer, type MessageProcessor } from './kafka-consumer.ts'
export type { ConsumedMessage } from './message.ts'
export type {
  ConsumerBaseOptions,
  ConsumerRetry,
  DeadMessage,
  KafkaConsumerOptions,
} from './options.ts'
