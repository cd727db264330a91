export { ErrorCodes, KEntityError, isKEntityError, type ErrorCode } from './core/errors.ts'
export { DEFAULT_TABLE } from './core/identifiers.ts'
export { Outbox, type OutboxOptions, type TopicMap, type TopicProducer, type TopicProducers } from './core/outbox.ts'
export type { OutboxRecord, RecordHeader, StoredMessage } from './core/record.ts'
export {
  OutboxRelay,
  RELAY_DEFAULTS,
  type NodeMode,
  type RelayEvent,
  type RelayOptions,
  type StopOptions,
} from './core/relay.ts'
export type {
  FailedDelivery,
  MessageTransport,
  Migration,
  OutboxDialect,
  OutboxTable,
  RelayStore,
  SqlStatement,
  TransactionAdapter,
} from './core/seams.ts'
export { bufferSerializer, jsonSerializer, stringSerializer, type Serializer } from './core/serializer.ts'
export {
  Topic,
  defineTopic,
  type HeaderValue,
  type Headers,
  type KeyValue,
  type ProduceOptions,
  type TopicOptions,
} from './core/topic.ts'
