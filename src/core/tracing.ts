/**
 * The tracing seam: how an outbox carries a trace from the app's transaction to Kafka without core
 * knowing any tracing library. `k-entity/opentelemetry`'s `otelTracing()` implements it.
 */
import { describe, invalidArgument } from './errors.ts'
import type { OutboxRecord } from './record.ts'
import type { Headers } from './topic.ts'

export interface OutboxTracing {
  /**
   * Called once per produce call, in the app's own async context: headers stored with each of its
   * messages and sent to Kafka with them (e.g. W3C `traceparent`/`tracestate`). A topic's own
   * headers and the produce call's win over them. Undefined or `{}`: nothing added.
   */
  headers?(): Headers | undefined
  /**
   * Wraps the relay's send of one batch (a span around it, say). Must call `send` exactly once and
   * return what it returns, rejection included: the relay's handling of Kafka's answer depends on
   * it. `records` are the batch as stored, their headers included.
   */
  send?<T>(records: readonly OutboxRecord[], send: () => Promise<T>): Promise<T>
}

/** Checks an `OutboxTracing` given as an option; `where` names the option for the message. */
export function checkTracing(tracing: unknown, where: string): OutboxTracing | undefined {
  if (tracing === undefined) return undefined
  const shape = tracing as OutboxTracing
  if (
    typeof tracing !== 'object' ||
    tracing === null ||
    (shape.headers !== undefined && typeof shape.headers !== 'function') ||
    (shape.send !== undefined && typeof shape.send !== 'function')
  ) {
    throw invalidArgument(
      `${where} 'tracing' must be an object with optional headers() and send(records, send) functions, such as otelTracing() from 'k-entity/opentelemetry', got ${describe(tracing)}`,
    )
  }
  return shape
}
