import { randomUUID } from 'node:crypto'
import { Admin, Consumer, Producer, stringDeserializers, stringSerializers } from '@platformatic/kafka'
import { startKafkaBroker } from '/work/main/scripts/kafka-broker.ts'
const b = await startKafkaBroker({ quiet: true })
try {
  for (let round = 0; round < 3; round++) {
    const topic = `dup-${randomUUID()}`
    const admin = new Admin({ clientId: 'a', bootstrapBrokers: [b.brokers] })
    await admin.createTopics({ topics: [topic], partitions: 3, replicas: 1 })
    const producer = new Producer({ clientId: 'p', bootstrapBrokers: [b.brokers], serializers: stringSerializers, idempotent: true })
    const res = await producer.send({ messages: ['a', 'b', 'c'].map((k) => ({ topic, key: k, value: k })) })
    console.log('send result', JSON.stringify(res, (_k, v) => (typeof v === 'bigint' ? String(v) : v)))
    await producer.close()
    const offs = await admin.listOffsets({ topics: [{ name: topic, partitions: [0, 1, 2].map((p) => ({ partitionIndex: p, timestamp: -1n })) }] })
    console.log('end offsets', JSON.stringify(offs, (_k, v) => (typeof v === 'bigint' ? String(v) : v)))
    await admin.close()
    const consumer = new Consumer({ clientId: 'c', groupId: randomUUID(), bootstrapBrokers: [b.brokers], deserializers: stringDeserializers })
    const stream = await consumer.consume({ topics: [topic], mode: 'earliest', maxWaitTime: 500 })
    const got: string[] = []
    stream.on('data', (m) => got.push(`${m.key}@${m.partition}:${m.offset}`))
    await new Promise((r) => setTimeout(r, 4000))
    await stream.close(); await consumer.close(true)
    console.log('got', got)
  }
} finally { await b.stop() }
