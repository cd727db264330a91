export {
  checkDelivery,
  type DeliveryCheckInput,
  type DeliveryReport,
  type DeliverySamples,
  formatReport,
  type HeadersLike,
  type ObservedMessage,
  type ReorderExample,
  readTracking,
  SAMPLE_SIZE,
  TRACKING_ID_HEADER,
  TRACKING_SEQ_HEADER,
  type TrackedMessage,
  trackingHeaders,
} from './delivery-checker.ts'
export {
  type ConsumedMessage,
  type ObservedFromConsumedOptions,
  observedFromConsumed,
  type ReadTopicOptions,
  readTopic,
  readTopicForChecker,
} from './read-topic.ts'
