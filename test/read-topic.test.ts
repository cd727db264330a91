// readTopic against a real broker, checked with the delivery checker: `npm test` provides KAFKA_BROKERS.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { Admin, compatibilityPartitioner, Producer, stringSerializers } from '@platformatic/kafka'
import {
  checkDelivery,
  formatReport,
  type TrackedMessage,
  trackingHeaders,
} from '../src/testing/delivery-checker.ts'
import { observedFromConsumed, readTopic, readTopicForChecker } from '../src/testing/read-topic.ts'

const KEYS = 10
const PER_KEY = 30

test('readTopic reads back every record of a 3-partition topic, in order per key', async (t) => {
  const brokerList = process.env.KAFKA_BROKERS
  if (!brokerList) {
    t.skip('KAFKA_BROKERS not set')
    return
  }
  const brokers = brokerList.split(',')
  const topic = `ke-read-topic-${randomBytes(5).toString('hex')}`
  const admin = new Admin({ clientId: 'k-entity-read-topic-test', bootstrapBrokers: brokers })
  try {
    await admin.createTopics({ topics: [topic], partitions: 3, replicas: 1 })
  } finally {
    await admin.close()
  }

  const producer = new Producer({
    clientId: 'k-entity-read-topic-test',
    bootstrapBrokers: brokers,
    serializers: stringSerializers,
    partitioner: compatibilityPartitioner,
    idempotent: true,
    acks: -1,
  })
  const expected: TrackedMessage[] = []
  const send = async (messages: TrackedMessage[]) => {
    await producer.send({
      messages: messages.map((message) => ({
        topic,
        key: message.key ?? undefined,
        value: `value of ${message.id}`,
        headers: trackingHeaders(message.id, message.seq),
      })),
    })
  }
  try {
    // Interleaved keys, sent in several batches so partitions fill up concurrently.
    for (let seq = 0; seq < PER_KEY; seq++) {
      for (let k = 0; k < KEYS; k++) expected.push({ id: `k${k}-${seq}`, key: `k${k}`, seq })
    }
    for (let start = 0; start < expected.length; start += 50) await send(expected.slice(start, start + 50))

    await t.test('all 300 delivered once, in order, each key on one partition', async () => {
      const started = Date.now()
      const consumed = await readTopic({ brokers, topic, expectedCount: expected.length })
      const elapsed = Date.now() - started
      assert.equal(consumed.length, 300)
      const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
      assert.equal(report.ok, true, formatReport(report))
      assert.equal(report.expected, 300)
      assert.equal(report.delivered, 300)
      assert.equal(report.observed, 300)
      assert.equal(report.duplicates, 0)
      assert.equal(report.outOfOrder, 0)

      const partitions = new Set(consumed.map((message) => message.partition))
      assert.ok(partitions.size > 1, `10 keys should spread over the 3 partitions, got ${[...partitions]}`)
      for (const partition of partitions) {
        const offsets = consumed.filter((m) => m.partition === partition).map((m) => m.offset)
        assert.deepEqual(
          offsets,
          offsets.map((_, i) => BigInt(i)),
          `partition ${partition} read from offset 0 without gaps`,
        )
      }
      const first = consumed.find((message) => message.key?.toString() === 'k0')
      assert.ok(first)
      assert.equal(first.topic, topic)
      assert.equal(first.value?.toString(), 'value of k0-0')
      assert.equal(typeof first.timestamp, 'bigint')
      assert.deepEqual(
        first.headers.map(([name, value]) => [name, value?.toString()]),
        [
          ['ke-check-id', 'k0-0'],
          ['ke-check-seq', '0'],
        ],
      )
      t.diagnostic(`read 300 records in ${elapsed} ms`)
    })

    await t.test('a message produced twice is one duplicate, not a reorder', async () => {
      const again: TrackedMessage = { id: 'k3-30', key: 'k3', seq: PER_KEY }
      expected.push(again)
      await send([again])
      await send([again])
      const observed = await readTopicForChecker({ brokers, topic, expectedCount: 302 })
      const report = checkDelivery({ expected, observed })
      assert.equal(report.ok, true, formatReport(report))
      assert.equal(report.observed, 302)
      assert.equal(report.delivered, 301)
      assert.equal(report.duplicates, 1)
      assert.deepEqual(report.samples.duplicates, ['k3-30'])
      assert.equal(report.outOfOrder, 0)
    })

    await t.test('without expectedCount it stops at the end offsets, not on the idle timeout', async () => {
      const started = Date.now()
      const consumed = await readTopic({ brokers, topic, idleTimeoutMs: 20_000 })
      const elapsed = Date.now() - started
      assert.equal(consumed.length, 302)
      assert.ok(elapsed < 15_000, `took ${elapsed} ms`)
      t.diagnostic(`read to the end offsets in ${elapsed} ms`)
    })

    await t.test(
      'expecting more than the topic holds ends on the idle timeout with what is there',
      async () => {
        const started = Date.now()
        const consumed = await readTopic({ brokers, topic, expectedCount: 400, idleTimeoutMs: 1000 })
        const elapsed = Date.now() - started
        assert.equal(consumed.length, 302)
        assert.ok(elapsed >= 1000 && elapsed < 10_000, `took ${elapsed} ms`)
      },
    )

    await t.test('the overall timeout wins over a longer idle timeout', async () => {
      const started = Date.now()
      const consumed = await readTopic({
        brokers,
        topic,
        expectedCount: 400,
        idleTimeoutMs: 30_000,
        timeoutMs: 2000,
      })
      const elapsed = Date.now() - started
      assert.equal(consumed.length, 302)
      assert.ok(elapsed >= 2000 && elapsed < 10_000, `took ${elapsed} ms`)
    })

    await t.test('a topic that does not exist is an error, not a hang', async () => {
      const started = Date.now()
      await assert.rejects(
        readTopic({ brokers, topic: `${topic}-missing`, timeoutMs: 10_000 }),
        (error: Error) => {
          t.diagnostic(error.message)
          return error.message.includes(`${topic}-missing`)
        },
      )
      assert.ok(Date.now() - started < 15_000)
    })

    await t.test('an empty topic reads as empty at once', async () => {
      const empty = `${topic}-empty`
      const emptyAdmin = new Admin({ clientId: 'k-entity-read-topic-test', bootstrapBrokers: brokers })
      try {
        await emptyAdmin.createTopics({ topics: [empty], partitions: 2, replicas: 1 })
      } finally {
        await emptyAdmin.close()
      }
      const started = Date.now()
      assert.deepEqual(await readTopic({ brokers, topic: empty, idleTimeoutMs: 20_000 }), [])
      assert.ok(Date.now() - started < 15_000)
    })
  } finally {
    await producer.close()
  }
})
