// What metrics and tracing read from the relay: per-topic counts and step times on `delivered`,
// the tracing seam around each send, trace headers at produce time, and the status cache.
import assert from 'node:assert/strict'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { describe, it } from 'node:test'
import { countTopics } from '../../src/core/relay/delivery.ts'
import {
  defineTopic,
  ErrorCodes,
  OutboxRelay,
  RELAY_EVENT_CHANNEL,
  type RelayEvent,
  type RelayEventMessage,
} from '../../src/index.ts'
import { otelTracing, outboxMetrics } from '../../src/observability/opentelemetry.ts'
import { cachedStatus } from '../../src/observability/relay-watch.ts'
import { FakeKafka, FakeOutbox, singleStore } from './fakes.ts'

type Delivered = Extract<RelayEvent, { type: 'delivered' }>

function mixedOutbox(): FakeOutbox {
  const outbox = new FakeOutbox()
  outbox.add([0, 1], 5, 'a')
  outbox.add([2], 3, 'b')
  outbox.add([3], 2, '__proto__')
  return outbox
}

describe('relay figures for metrics and tracing', () => {
  it('delivered events count messages per topic and time the claim, send and delete', async () => {
    for (const pipeline of [false, true]) {
      const outbox = mixedOutbox()
      const events: Delivered[] = []
      const relay = new OutboxRelay(singleStore(outbox), new FakeKafka(), {
        maxMessagesPerPoll: 7,
        logger: false,
        pipeline,
        onEvent: (e) => e.type === 'delivered' && events.push(e),
      })
      await relay.drain()
      const total = new Map<string, number>()
      for (const e of events) {
        assert.equal(
          Object.values(e.topics).reduce((sum, n) => sum + n, 0),
          e.count,
        )
        for (const [topic, n] of Object.entries(e.topics)) total.set(topic, (total.get(topic) ?? 0) + n)
        for (const step of [e.claimMs, e.sendMs, e.deleteMs]) assert.ok(step >= 0 && step <= e.durationMs + 1)
      }
      // A topic named like a prototype key is an own property, not a prototype change.
      assert.deepEqual([...total].sort(), [
        ['__proto__', 2],
        ['a', 10],
        ['b', 3],
      ])
      assert.equal(Object.getPrototypeOf(countTopics([])), Object.prototype)
    }
  })

  it('a channel subscriber alone gets the per-topic counts', async (t) => {
    const seen: Delivered[] = []
    const listener = (message: unknown) => {
      const { event } = message as RelayEventMessage
      if (event.type === 'delivered') seen.push(event)
    }
    subscribe(RELAY_EVENT_CHANNEL, listener)
    t.after(() => unsubscribe(RELAY_EVENT_CHANNEL, listener))
    const outbox = mixedOutbox()
    const relay = new OutboxRelay(singleStore(outbox), new FakeKafka(), { logger: false })
    await relay.drain()
    assert.deepEqual(
      seen.map((e) => e.topics),
      [{ a: 10, b: 3, ['__proto__']: 2 }],
    )
  })

  it('tracing.send wraps each batch send once, with the batch, and passes a rejection on', async () => {
    const outbox = mixedOutbox()
    const kafka = new FakeKafka()
    const sends: number[] = []
    const relay = new OutboxRelay(singleStore(outbox), kafka, {
      maxMessagesPerPoll: 10,
      logger: false,
      tracing: {
        send: async (records, send) => {
          sends.push(records.length)
          return send()
        },
      },
    })
    assert.equal(await relay.drain(), 15)
    assert.deepEqual(sends, [10, 5])
    assert.throws(
      () => new OutboxRelay(singleStore(new FakeOutbox()), kafka, { tracing: { send: 1 } as never }),
      (error: Error & { code?: string }) =>
        error.code === ErrorCodes.INVALID_ARGUMENT && /'tracing' must be an object/.test(error.message),
    )
  })

  it('tracing headers go under the topic and produce headers, counted in the size limit', () => {
    const topic = defineTopic<{ id: number }>({ name: 't', headers: { tenant: 'x', traceparent: 'topic' } })
    const context = { traceparent: 'trace', tracestate: 'k=v' }
    const record = topic.toRecord({ id: 1 }, undefined, context)
    assert.deepEqual(
      record.headers.map(([name, value]) => [name, String(value)]),
      [
        ['traceparent', 'topic'],
        ['tracestate', 'k=v'],
        ['tenant', 'x'],
      ],
    )
    const small = defineTopic<string>({ name: 's', maxMessageBytes: 20 })
    assert.doesNotThrow(() => small.toRecord('0123456789'))
    assert.throws(
      () => small.toRecord('0123456789', undefined, { traceparent: 'x'.repeat(20) }),
      /over the topic's maxMessageBytes/,
    )
  })

  it('the status cache reads once per interval, shares a read in flight, and retries after a failure', async () => {
    let reads = 0
    let fail = false
    const read = cachedStatus(async () => {
      reads++
      await new Promise((resolve) => setTimeout(resolve, 10))
      if (fail) throw new Error('database down')
      return { pending: reads, oldestPendingMs: 0 }
    }, 50)
    const [first, second] = await Promise.all([read(), read()])
    assert.equal(reads, 1)
    assert.deepEqual(first, second)
    assert.equal((await read())?.pending, 1, 'cached within the interval')
    await new Promise((resolve) => setTimeout(resolve, 60))
    fail = true
    assert.equal(await read(), undefined, 'a failed read reports nothing')
    fail = false
    assert.equal((await read())?.pending, 3, 'and is tried again at the next collection')
  })

  it('without an OpenTelemetry SDK, metrics and tracing do nothing and the relay runs as before', async () => {
    const metrics = outboxMetrics({ status: async () => ({ pending: 0, oldestPendingMs: 0 }) })
    const tracing = otelTracing()
    assert.equal(tracing.headers?.(), undefined, 'no propagator: nothing stored with the message')
    const outbox = mixedOutbox()
    const relay = new OutboxRelay(singleStore(outbox), new FakeKafka(), { logger: false, tracing })
    assert.equal(await relay.drain(), 15)
    await assert.rejects(
      tracing.send?.([], async () => {
        throw new Error('kafka said no')
      }) ?? Promise.resolve(),
      /kafka said no/,
      'a rejected send comes back as it was',
    )
    metrics.close()
    const invalid = (error: Error & { code?: string }) => error.code === ErrorCodes.INVALID_ARGUMENT
    assert.throws(() => outboxMetrics({ meter: {} as never }), invalid)
    assert.throws(() => outboxMetrics({ status: 'stats' as never }), invalid)
    assert.throws(() => otelTracing({ tracer: 1 as never }), invalid)
    assert.throws(() => otelTracing({ propagator: {} as never }), invalid)
  })
})
