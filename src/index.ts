export type {
  OutboxAdmin,
  OutboxStatus,
  RelayNodeStatus,
  StatusOptions,
  TopicStatus,
} from './admin/types.ts'
export type { InboxConsumerOptions } from './consumer/inbox.ts'
export type { SyncInboxConsumerOptions } from './consumer/inbox-sync.ts'
export {
  type ConsumedMessage,
  type ConsumerBaseOptions,
  type ConsumerCounts,
  type ConsumerFilter,
  type ConsumerRetry,
  consume,
  type DeadMessage,
  type FilterHeaderValue,
  type FilterRecord,
  KafkaConsumer,
  type KafkaConsumerOptions,
} from './consumer/index.ts'
export { type ErrorCode, ErrorCodes, isKEntityError, KEntityError, WarningCodes } from './core/errors.ts'
export { DEFAULT_TABLE } from './core/identifiers.ts'
export { defaultLogger, type Logger, type LoggerOption } from './core/logger.ts'
export {
  Outbox,
  type OutboxOptions,
  type TopicMap,
  type TopicProducer,
  type TopicProducers,
} from './core/outbox.ts'
export type { OutboxRecord, RecordHeader, StoredMessage } from './core/record.ts'
export {
  type NodeMode,
  OutboxRelay,
  RELAY_DEFAULTS,
  type RelayEvent,
  type RelayOptions,
  type StopOptions,
} from './core/relay.ts'
export { DEFAULT_RETRY_POLICY, type RetryPolicy } from './core/retry.ts'
export type {
  FailedDelivery,
  MessageTransport,
  Migration,
  OutboxDialect,
  OutboxTable,
  RelayStore,
  SendFailure,
  SendProgress,
  SendRejection,
  SqlStatement,
  TransactionAdapter,
} from './core/seams.ts'
export {
  bufferDeserializer,
  bufferSerializer,
  type Deserializer,
  jsonDeserializer,
  jsonSerializer,
  type Serializer,
  stringDeserializer,
  stringSerializer,
} from './core/serializer.ts'
export {
  defineTopic,
  type Headers,
  type HeaderValue,
  type KeyValue,
  MESSAGE_ID_HEADER,
  type ProduceOptions,
  Topic,
  type TopicOptions,
} from './core/topic.ts'
export type { OutboxTracing } from './core/tracing.ts'
export {
  RELAY_EVENT_CHANNEL,
  RELAY_LIFECYCLE_CHANNEL,
  type RelayEventMessage,
  type RelayLifecycleMessage,
} from './observability/channels.ts'
