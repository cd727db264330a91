import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { MultipleErrors, TimeoutError } from '@platformatic/kafka'
import { connectionFailure, validateKafkaOptions } from '../../src/transports/kafka/index.ts'

describe('Kafka connection failures', () => {
  it('a request unanswered on an open connection (a partition that closes nothing) names requestTimeout, not a dropped connection', () => {
    const options = validateKafkaOptions({ brokers: ['127.0.0.1:9092'], requestTimeout: 2000 })
    // The shape the client gives a send whose produce request timed out (seen through a blackholing proxy).
    const error = new MultipleErrors('Producing messages failed.', [
      new TimeoutError('Request timed out', { canRetry: true }),
    ])
    const failure = connectionFailure(error, options)
    assert.ok(failure)
    assert.match(failure.message, /^Kafka stopped answering, tried 127\.0\.0\.1:9092 \(Request timed out\)/)
    assert.match(failure.message, /kafka\.requestTimeout \(2000 ms\)/)
    assert.doesNotMatch(failure.message, /dropped/)
  })
})
