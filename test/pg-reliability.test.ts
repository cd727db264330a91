import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { Admin } from '@platformatic/kafka'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import {
  defineTopic,
  KEntityError,
  type MessageTransport,
  type OutboxRecord,
  type OutboxRelay,
  type RelayEvent,
} from '../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  readTracking,
  trackingHeaders,
} from '../src/testing/index.ts'
import { KafkaTransport } from '../src/transports/kafka/index.ts'
import { DATABASE_URL, dropSchema, kafkaBrokers, uniqueName } from './support/env.ts'

const brokers = kafkaBrokers()
const schemas: string[] = []
const pool = new pg.Pool({ connectionString: DATABASE_URL })

interface Event {
  id: string
  key: string
  seq: number
  pad?: number
}

function eventTopic(name: string, retry?: { maxAttempts?: number; onExhausted?: 'dead-letter' | 'block' }) {
  return defineTopic<Event>({
    name,
    key: (e) => e.key,
    headers: (e) => trackingHeaders(e.id, e.seq),
    serializer: { name: 'padded', serialize: (e) => Buffer.from(JSON.stringify(e) + ' '.repeat(e.pad ?? 0)) },
    ...(retry ? { retry } : {}),
  })
}

async function newOutbox(topicName: string, topic = eventTopic(topicName), config?: Record<string, string>) {
  const schema = uniqueName('ke_rel')
  schemas.push(schema)
  const admin = new Admin({ clientId: 'k-entity-tests', bootstrapBrokers: brokers })
  await admin.createTopics({
    topics: [topicName],
    partitions: 3,
    replicas: 1,
    configs: Object.entries(config ?? {}).map(([name, value]) => ({ name, value })),
  })
  await admin.close()
  const outbox = createPgOutbox({
    topics: { events: topic },
    schema,
    kafka: { brokers, autoCreateTopics: true },
  })
  await outbox.migrate(DATABASE_URL)
  return outbox
}

/** The real Kafka transport, made to fail sends that contain chosen ids a number of times. */
class FaultInjector implements MessageTransport {
  readonly #kafka = new KafkaTransport({ brokers, autoCreateTopics: true })
  readonly failures = new Map<string, number>()
  async send(records: readonly OutboxRecord[]): Promise<void> {
    for (const record of records) {
      const id = readTracking(record.headers)?.id ?? ''
      const left = this.failures.get(id) ?? 0
      if (left > 0) {
        this.failures.set(id, left - 1)
        throw new KEntityError('KE_TRANSPORT_FAILED', `injected transient failure for ${id}`, {
          retryable: true,
        })
      }
    }
    await this.#kafka.send(records)
  }
  close() {
    return this.#kafka.close()
  }
}

/** A batch that fails as a whole is reported by runOnce(); the next call isolates the culprit. */
async function runOnceExpectingFailures(relay: OutboxRelay): Promise<void> {
  await relay.runOnce().catch((error: Error) => assert.match(error.message, /injected transient failure/))
}

const events = (n: number, keys: string[], prefix: string): Event[] =>
  Array.from({ length: n }, (_, i) => ({
    id: `${prefix}-${i}`,
    key: keys[i % keys.length] as string,
    seq: i,
  }))

describe('retries, poison isolation and dead letters', () => {
  after(async () => {
    await pool.end()
    for (const schema of schemas) await dropSchema(schema)
  })

  it('a message too large for the topic goes to the dead letters alone; everything else arrives in order', async (t) => {
    const topicName = uniqueName('poison').replaceAll('_', '-')
    const outbox = await newOutbox(topicName, undefined, { 'max.message.bytes': '4096' })
    const all = events(60, ['a', 'b', 'c'], 'p')
    const poison = all[30] as Event
    poison.pad = 20_000
    await outbox.transaction(pool, (_c, t) => t.events.produceMany(all))
    const seen: RelayEvent[] = []
    const relay = outbox.relay({ connection: DATABASE_URL, onEvent: (e) => seen.push(e) })
    t.after(() => relay.stop())
    while ((await outbox.stats(DATABASE_URL)).pending > 0) await relay.runOnce()
    await relay.stop()

    const expected = all.filter((e) => e !== poison)
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: expected.length })
    const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
    const dead = await outbox.deadLetters(DATABASE_URL).list({ topic: topicName })
    assert.deepEqual(
      dead.map((d) => readTracking(d.headers)?.id),
      [poison.id],
    )
    assert.match(dead[0]?.errors.at(-1)?.error ?? '', /MESSAGE_TOO_LARGE/)
    assert.equal(dead[0]?.attempts, 1, 'a permanent error is not retried')
    assert.ok(seen.some((e) => e.type === 'message-failed' && e.deadLettered))
    const stats = await outbox.stats(DATABASE_URL)
    assert.deepEqual(
      { pending: stats.pending, deadLetters: stats.deadLetters },
      { pending: 0, deadLetters: 1 },
    )
    assert.equal(await outbox.deadLetters(DATABASE_URL).purge({ topic: topicName }), 1)
    assert.equal(await outbox.deadLetters(DATABASE_URL).count(), 0)
  })

  it('a message that keeps failing transiently is retried with backoff, then dead-lettered, then replayed', async (t) => {
    const topicName = uniqueName('retry').replaceAll('_', '-')
    const outbox = await newOutbox(topicName, eventTopic(topicName, { maxAttempts: 3 }))
    const all = events(40, ['a', 'b'], 'r')
    const stubborn = all[10] as Event // key 'a'
    const injector = new FaultInjector()
    injector.failures.set(stubborn.id, 1_000)
    await outbox.transaction(pool, (_c, t) => t.events.produceMany(all))
    const relay = outbox.relay({
      connection: DATABASE_URL,
      kafka: injector,
      retryBackoff: { initial: 20, max: 100 },
    })
    t.after(() => relay.stop())
    const failedAttempts: number[] = []
    const started = Date.now()
    while ((await outbox.stats(DATABASE_URL)).pending > 0 && Date.now() - started < 30_000) {
      await runOnceExpectingFailures(relay)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    const dead = await outbox.deadLetters(DATABASE_URL).list()
    assert.equal(dead.length, 1)
    assert.equal(dead[0]?.attempts, 3)
    assert.equal(dead[0]?.errors.length, 3, 'each attempt is in the error history')
    failedAttempts.push(dead[0]?.attempts ?? 0)

    // Fixed (the fault clears): replay puts it back at the end of its key's queue.
    injector.failures.clear()
    assert.equal(await outbox.deadLetters(DATABASE_URL).replay({ ids: [dead[0]?.id as string] }), 1)
    assert.equal(await relay.drain(), 1)
    await relay.stop()
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: all.length })
    const observed = observedFromConsumed(consumed)
    // Before the replay, key 'a' flowed on without the stubborn message; it arrives last.
    const report = checkDelivery({
      expected: all.filter((e) => e !== stubborn),
      observed: observed.filter((o) => o.id !== stubborn.id),
    })
    assert.ok(report.ok, formatReport(report))
    assert.equal(observed.filter((o) => o.key === 'a').at(-1)?.id, stubborn.id)
    assert.equal(await outbox.deadLetters(DATABASE_URL).count(), 0)
  })

  it("'block' keeps a failing key in order and lets every other key through", async (t) => {
    const topicName = uniqueName('block').replaceAll('_', '-')
    const outbox = await newOutbox(topicName, eventTopic(topicName, { maxAttempts: 2, onExhausted: 'block' }))
    const all = events(30, ['a', 'b', 'c'], 'k')
    const stuck = all[3] as Event // key 'a'
    const injector = new FaultInjector()
    // Counted per send that carries it: isolating it by bisection sends it in several parts.
    injector.failures.set(stuck.id, 20)
    await outbox.transaction(pool, (_c, t) => t.events.produceMany(all))
    const relay = outbox.relay({
      connection: DATABASE_URL,
      kafka: injector,
      retryBackoff: { initial: 10, max: 50 },
    })
    t.after(() => relay.stop())
    // Until the fault clears, only keys b and c (and a's messages before the stuck one) get out.
    for (let i = 0; i < 4; i++) await runOnceExpectingFailures(relay)
    const stats = await outbox.stats(DATABASE_URL)
    assert.equal(stats.retrying, 1)
    assert.equal(stats.pending, all.filter((e) => e.key === 'a' && e.seq >= stuck.seq).length)
    const started = Date.now()
    while ((await outbox.stats(DATABASE_URL)).pending > 0 && Date.now() - started < 30_000) {
      await runOnceExpectingFailures(relay)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await relay.stop()
    assert.equal(
      await outbox.deadLetters(DATABASE_URL).count(),
      0,
      "'block' never dead-letters a transient failure",
    )
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: all.length })
    const report = checkDelivery({ expected: all, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
  })

  it('rejects unsafe dead-letter filters and bad retry policies', async () => {
    const outbox = createPgOutbox({ topics: { events: eventTopic('x') }, schema: uniqueName('ke_rel') })
    const dl = outbox.deadLetters(DATABASE_URL)
    await assert.rejects(dl.purge({}), /pass \{ all: true \}/)
    await assert.rejects(dl.replay({ ids: ['1; DROP TABLE x'] }), /array of id strings/)
    assert.throws(() => eventTopic('y', { maxAttempts: 0 }), /retry\.maxAttempts/)
    assert.throws(() => eventTopic('y', { onExhausted: 'drop' as never }), /retry\.onExhausted/)
  })
})
