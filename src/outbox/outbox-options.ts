import { describe, invalidArgument } from '../core/errors.ts'

/**
 * Every outbox factory's first check (`createPgOutbox(options)` and the others all construct a
 * dialect's outbox): without it a missing argument fails as a TypeError deep inside.
 */
export function checkOptionsObject(options: unknown): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidArgument(
      `the outbox needs an options object like { topics: { orderCreated: defineTopic({ name: 'orders.created' }) }, kafka: { brokers: ['127.0.0.1:9092'] } }, got ${describe(options)}`,
    )
  }
}
