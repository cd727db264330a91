/** Histogram buckets shared by `k-entity/opentelemetry` and `k-entity/prometheus`. */

/** Batch sizes up to the relay's largest `maxMessagesPerPoll` (10,000). */
export const BATCH_SIZE_BUCKETS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000]
/** Seconds, from a local round trip (about 0.5 ms) to a send held up by a failing broker. */
export const DURATION_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
]
