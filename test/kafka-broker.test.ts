// Checks the test broker itself (scripts/kafka-broker.ts): every other Kafka test relies on it.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { Admin, Consumer, Producer, stringDeserializers, stringSerializers } from '@platformatic/kafka'
import { startKafkaBroker } from '../scripts/kafka-broker.ts'

function sharedBrokers(): string {
  const brokers = process.env.KAFKA_BROKERS
  assert.ok(brokers, 'KAFKA_BROKERS is not set: run the tests with `npm test`, which starts a broker')
  return brokers
}

async function createTopic(brokers: string, topic: string, partitions: number) {
  const admin = new Admin({ clientId: 'kafka-broker-test-admin', bootstrapBrokers: [brokers] })
  try {
    await admin.createTopics({ topics: [topic], partitions, replicas: 1 })
  } finally {
    await admin.close()
  }
}

async function produce(brokers: string, topic: string, messages: { key: string; value: string }[]) {
  const producer = new Producer({
    clientId: 'kafka-broker-test-producer',
    bootstrapBrokers: [brokers],
    serializers: stringSerializers,
    // Right after topic creation some partition leaders are not ready yet; the client then retries
    // the whole request, and without idempotence the partitions that did take it get duplicates.
    idempotent: true,
  })
  try {
    await producer.send({ messages: messages.map((message) => ({ topic, ...message })) })
  } finally {
    await producer.close()
  }
}

/** Reads `count` messages from the start of the topic with a fresh consumer group. */
async function consume(brokers: string, topic: string, count: number, timeoutMs: number) {
  const consumer = new Consumer({
    clientId: 'kafka-broker-test-consumer',
    groupId: `kafka-broker-test-${randomUUID()}`,
    bootstrapBrokers: [brokers],
    deserializers: stringDeserializers,
  })
  try {
    const stream = await consumer.consume({ topics: [topic], mode: 'earliest', maxWaitTime: 500 })
    const received: { key: string; value: string; partition: number }[] = []
    try {
      await new Promise<void>((resolveDone, reject) => {
        const timer = setTimeout(
          () =>
            reject(new Error(`got ${received.length} of ${count} messages from ${topic} in ${timeoutMs} ms`)),
          timeoutMs,
        )
        stream.on('error', reject)
        stream.on('data', (message) => {
          received.push({ key: message.key, value: message.value, partition: message.partition })
          if (received.length >= count) {
            clearTimeout(timer)
            resolveDone()
          }
        })
      })
    } finally {
      await stream.close()
    }
    return received
  } finally {
    await consumer.close(true)
  }
}

test('the shared broker takes a 3-partition topic and hands its messages back', {
  timeout: 20_000,
}, async () => {
  const brokers = sharedBrokers()
  const topic = `kafka-broker-test-${randomUUID()}`
  await createTopic(brokers, topic, 3)

  const sent = ['a', 'b', 'c'].map((key) => ({ key, value: `value-${key}` }))
  await produce(brokers, topic, sent)

  const received = await consume(brokers, topic, sent.length, 15_000)
  assert.deepEqual(
    received.map(({ key, value }) => ({ key, value })).sort((x, y) => x.key.localeCompare(y.key)),
    sent,
  )
  for (const { partition } of received) assert.ok(partition >= 0 && partition < 3, `partition ${partition}`)
})

test('a broker keeps its records across restart()', { timeout: 120_000 }, async () => {
  const broker = await startKafkaBroker({ quiet: true })
  try {
    assert.match(broker.brokers, /^127\.0\.0\.1:\d+$/)
    const topic = `kafka-broker-restart-${randomUUID()}`
    await createTopic(broker.brokers, topic, 1)
    await produce(broker.brokers, topic, [{ key: 'k', value: 'survives restart' }])

    const pidBefore = broker.pid
    await broker.restart()
    assert.notEqual(broker.pid, pidBefore, 'restart() should run a new JVM')

    const received = await consume(broker.brokers, topic, 1, 30_000)
    assert.deepEqual(
      received.map(({ key, value }) => ({ key, value })),
      [{ key: 'k', value: 'survives restart' }],
    )
  } finally {
    await broker.stop()
  }
})
