import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createPgOutbox } from '../../src/adapters/pg/index.ts'
import { orderingHash } from '../../src/core/record.ts'
import { validateTopicName } from '../../src/core/topic.ts'
import { postgresDialect } from '../../src/dialects/postgres/index.ts'
import {
  bufferDeserializer,
  bufferSerializer,
  defineTopic,
  ErrorCodes,
  jsonDeserializer,
  jsonSerializer,
  KEntityError,
  Outbox,
  stringDeserializer,
  stringSerializer,
} from '../../src/index.ts'
import { validateKafkaOptions } from '../../src/transports/kafka/index.ts'
import { checkRecordTopics, ensureTopics } from '../../src/transports/kafka/topics.ts'

const code = (expected: string) => (error: unknown) => {
  assert.equal((error as { code?: string }).code, expected, String(error))
  return true
}

describe('defineTopic', () => {
  it('maps name, key, static and computed headers, JSON by default', () => {
    const topic = defineTopic<{ id: string; total: number }>({
      name: 'orders.created_v1',
      key: (m) => m.id,
      headers: (m) => ({ 'content-type': 'application/json', total: String(m.total) }),
    })
    const record = topic.toRecord({ id: 'o-1', total: 5 })
    assert.equal(record.topic, 'orders.created_v1')
    assert.deepEqual(record.key, Buffer.from('o-1'))
    assert.deepEqual(record.value, Buffer.from('{"id":"o-1","total":5}'))
    assert.deepEqual(record.headers, [
      ['content-type', Buffer.from('application/json')],
      ['total', Buffer.from('5')],
    ])
    assert.equal(record.orderingHash, orderingHash('orders.created_v1', Buffer.from('o-1')))
    assert.equal(topic.outbox, true)
  })

  it('lets a produce call override the key and add headers', () => {
    const topic = defineTopic<{ id: string }>({ name: 't', key: (m) => m.id, headers: { a: '1', b: '2' } })
    const record = topic.toRecord({ id: 'x' }, { key: null, headers: { b: Buffer.from([0, 255]), c: null } })
    assert.equal(record.key, null)
    assert.equal(record.orderingHash, null)
    assert.deepEqual(record.headers, [
      ['a', Buffer.from('1')],
      ['b', Buffer.from([0, 255])],
      ['c', null],
    ])
  })

  it('passes strings and bytes through the JSON serializer and stores null as a tombstone', () => {
    assert.deepEqual(jsonSerializer.serialize('plain'), Buffer.from('plain'))
    assert.deepEqual(jsonSerializer.serialize(new Uint8Array([1, 2])), Buffer.from([1, 2]))
    assert.equal(defineTopic({ name: 't' }).toRecord(null).value, null)
    assert.deepEqual(stringSerializer.serialize('é'), Buffer.from('é'))
    assert.deepEqual(bufferSerializer.serialize(Buffer.from([9])), Buffer.from([9]))
  })

  it('uses a custom serializer', () => {
    const topic = defineTopic<number>({
      name: 't',
      serializer: { name: 'int32', serialize: (n) => Buffer.from([n]) },
    })
    assert.deepEqual(topic.toRecord(7).value, Buffer.from([7]))
  })

  for (const name of [
    '',
    '.',
    '..',
    'has space',
    'a/b',
    "x'; DROP TABLE t;--",
    'é',
    'a'.repeat(250),
    42,
    undefined,
  ]) {
    it(`rejects topic name ${JSON.stringify(name)?.slice(0, 30)}`, () => {
      assert.throws(() => defineTopic({ name: name as string }), code(ErrorCodes.INVALID_TOPIC))
    })
  }

  it('rejects a key selector that is not a function', () => {
    assert.throws(() => defineTopic({ name: 't', key: 'id' as never }), /'key' must be a function/)
  })

  it('rejects a key selector returning a number, with a hint', () => {
    const topic = defineTopic<{ id: number }>({ name: 't', key: (m) => m.id as never })
    assert.throws(() => topic.toRecord({ id: 1 }), /convert it, e\.g\. String\(id\)/)
  })

  it('rejects bad headers, serializers and outbox flags at definition time', () => {
    assert.throws(() => defineTopic({ name: 't', headers: { a: 1 as never } }), /header 'a' must be a string/)
    assert.throws(() => defineTopic({ name: 't', headers: [] as never }), /headers must be an object/)
    assert.throws(() => defineTopic({ name: 't', serializer: {} as never }), /'serializer' must be an object/)
    assert.throws(() => defineTopic({ name: 't', outbox: 'yes' as never }), /'outbox' must be true or false/)
    assert.throws(() => defineTopic(undefined as never), /needs an options object/)
  })

  it('reports unserializable payloads clearly', () => {
    const topic = defineTopic<unknown>({ name: 'orders' })
    const circular: Record<string, unknown> = {}
    circular.self = circular
    assert.throws(
      () => topic.toRecord({ amount: 10n }),
      (error: Error) => {
        code(ErrorCodes.SERIALIZATION_FAILED)(error)
        return /topic 'orders'/.test(error.message) && /BigInt/.test(error.message)
      },
    )
    assert.throws(() => topic.toRecord(circular), code(ErrorCodes.SERIALIZATION_FAILED))
    assert.throws(() => topic.toRecord(undefined), code(ErrorCodes.SERIALIZATION_FAILED))
    const broken = defineTopic<number>({
      name: 't',
      serializer: { name: 'bad', serialize: () => 'nope' as never },
    })
    assert.throws(() => broken.toRecord(1), /returned the string "nope" instead of a Buffer/)
  })
})

describe('Outbox topic map', () => {
  const a = defineTopic({ name: 'a' })
  it('rejects the same Kafka topic mapped twice', () => {
    assert.throws(
      () => new Outbox({ topics: { first: a, second: defineTopic({ name: 'a' }) } }, postgresDialect),
      /mapped twice \(topics\.first and topics\.second\)/,
    )
  })
  it('rejects non-topics, empty maps and reserved accessor names', () => {
    assert.throws(() => new Outbox({ topics: { a: { name: 'a' } as never } }, postgresDialect), /defineTopic/)
    assert.throws(() => new Outbox({ topics: {} }, postgresDialect), /is empty/)
    assert.throws(
      () => new Outbox({ topics: { ['the' + 'n']: a } }, postgresDialect),
      /'then' cannot be used/,
    )
  })
  for (const [option, value] of [
    ['schema', 'public; DROP TABLE users'],
    ['table', 'outbox"--'],
    ['table', 'Outbox'],
    ['schema', ''],
    ['table', 'x'.repeat(49)],
  ] as const) {
    it(`rejects ${option} ${JSON.stringify(value)}`, () => {
      assert.throws(
        () => new Outbox({ topics: { a }, [option]: value }, postgresDialect),
        code(ErrorCodes.INVALID_IDENTIFIER),
      )
    })
  }
})

describe('message size', () => {
  it('rejects a message over maxMessageBytes at produce time, counting key, value and headers', () => {
    const topic = defineTopic<string>({ name: 't', maxMessageBytes: 100, headers: { h: 'x'.repeat(10) } })
    assert.ok(topic.toRecord('y'.repeat(80)))
    assert.throws(
      () => topic.toRecord('y'.repeat(80), { key: 'k'.repeat(20) }),
      code(ErrorCodes.MESSAGE_TOO_LARGE),
    )
    assert.throws(
      () => defineTopic({ name: 't', maxMessageBytes: 0 }),
      /'maxMessageBytes' must be a positive integer/,
    )
  })

  it('defaults to just under Kafka 1 MB limit', () => {
    const topic = defineTopic<Uint8Array>({ name: 't', serializer: bufferSerializer })
    assert.ok(topic.toRecord(Buffer.alloc(999_000)))
    assert.throws(() => topic.toRecord(Buffer.alloc(1_000_001)), code(ErrorCodes.MESSAGE_TOO_LARGE))
  })
})

const refusedWith = (code: string, message: RegExp) => (error: unknown) => {
  assert.ok(error instanceof KEntityError, `expected a KEntityError, got ${error}`)
  assert.equal(error.code, code)
  assert.match(error.message, message)
  return true
}

describe('defineTopic: declared partitions, replication factor and configs', () => {
  it('keeps what is declared, and leaves undeclared settings to the broker', () => {
    const topic = defineTopic({
      name: 'orders',
      partitions: 6,
      replicationFactor: 3,
      configs: { 'retention.ms': '604800000', 'cleanup.policy': 'compact', 'min.insync.replicas': '2' },
    })
    assert.equal(topic.partitions, 6)
    assert.equal(topic.replicationFactor, 3)
    assert.deepEqual(topic.configs, {
      'retention.ms': '604800000',
      'cleanup.policy': 'compact',
      'min.insync.replicas': '2',
    })
    assert.ok(Object.isFrozen(topic.configs))
    const bare = defineTopic({ name: 'orders' })
    assert.equal(bare.partitions, undefined)
    assert.equal(bare.replicationFactor, undefined)
    assert.deepEqual(bare.configs, {})
  })

  it('refuses partitions and replication factors that are not positive integers in range', () => {
    for (const partitions of [0, -1, 1.5, Number.NaN, '6', 2 ** 31]) {
      assert.throws(
        () => defineTopic({ name: 'orders', partitions: partitions as number }),
        refusedWith(
          'KE_INVALID_ARGUMENT',
          /topic 'orders': 'partitions' must be an integer from 1 to 2147483647/,
        ),
      )
    }
    for (const replicationFactor of [0, 32_768, 2.5, null]) {
      assert.throws(
        () => defineTopic({ name: 'orders', replicationFactor: replicationFactor as number }),
        refusedWith('KE_INVALID_ARGUMENT', /'replicationFactor' must be an integer from 1 to 32767/),
      )
    }
    assert.equal(defineTopic({ name: 'orders', replicationFactor: 32_767 }).replicationFactor, 32_767)
  })

  it('refuses configs that are not a map of Kafka config names to strings', () => {
    assert.throws(
      () => defineTopic({ name: 'orders', configs: [] as never }),
      refusedWith('KE_INVALID_ARGUMENT', /'configs' must be an object of Kafka topic config name -> string/),
    )
    assert.throws(
      () => defineTopic({ name: 'orders', configs: { 'retention.ms': 1000 as never } }),
      refusedWith('KE_INVALID_ARGUMENT', /configs\['retention\.ms'\] must be a string .*; write '1000'/),
    )
    assert.throws(
      () => defineTopic({ name: 'orders', configs: { 'Retention MS': '1000' } }),
      refusedWith('KE_INVALID_ARGUMENT', /is not a Kafka topic config name; they look like 'retention\.ms'/),
    )
  })

  it('declares max.message.bytes from a maxMessageBytes above the default, and refuses contradictions', () => {
    const large = defineTopic({ name: 'images', maxMessageBytes: 5_000_000 })
    assert.equal(large.configs['max.message.bytes'], '5001024')
    // A stricter application limit does not shrink the topic (batches of several messages must fit).
    const strict = defineTopic({ name: 'small', maxMessageBytes: 10_000 })
    assert.equal(strict.configs['max.message.bytes'], undefined)
    // An explicit topic config wins; maxMessageBytes follows it when not given.
    const declared = defineTopic({ name: 'limited', configs: { 'max.message.bytes': '200000' } })
    assert.equal(declared.maxMessageBytes, 200_000 - 1024)
    assert.throws(
      () =>
        defineTopic({
          name: 'limited',
          maxMessageBytes: 500_000,
          configs: { 'max.message.bytes': '200000' },
        }),
      refusedWith(
        'KE_INVALID_ARGUMENT',
        /maxMessageBytes \(500000\) does not fit in configs\['max\.message\.bytes'\] \(200000\)/,
      ),
    )
    assert.throws(
      () => defineTopic({ name: 'limited', configs: { 'max.message.bytes': 'lots' } }),
      refusedWith('KE_INVALID_ARGUMENT', /configs\['max\.message\.bytes'\] must be a whole number of bytes/),
    )
  })
})

describe('reserved and colliding topic names', () => {
  it("refuses Kafka's internal topics and any name starting with '__' at definition", () => {
    for (const name of [
      '__consumer_offsets',
      '__transaction_state',
      '__cluster_metadata',
      '__share_group_state',
      '__mine',
    ]) {
      assert.throws(
        () => defineTopic({ name }),
        refusedWith(
          'KE_INVALID_TOPIC',
          new RegExp(`'${name}' is reserved: names starting with '__' belong to Kafka's internal topics`),
        ),
      )
    }
    // One underscore, or underscores later in the name, are ordinary.
    assert.equal(defineTopic({ name: '_orders' }).name, '_orders')
    assert.equal(defineTopic({ name: 'orders__v2' }).name, 'orders__v2')
  })

  it("refuses two topics of one outbox whose names differ only by '.' against '_'", () => {
    assert.throws(
      () =>
        createPgOutbox({
          topics: { a: defineTopic({ name: 'orders.created' }), b: defineTopic({ name: 'orders_created' }) },
        }),
      refusedWith(
        'KE_INVALID_TOPIC',
        /'orders\.created' \(topics\.a\) and 'orders_created' \(topics\.b\) differ only by '\.' against '_'.*rename one/,
      ),
    )
    // Different names that do not collide are fine together.
    createPgOutbox({
      topics: { a: defineTopic({ name: 'orders.created' }), b: defineTopic({ name: 'orders-created' }) },
    })
  })

  it('the transport refuses a record with an invalid or reserved topic, permanently, before Kafka sees it', () => {
    const record = (topic: string) => ({ topic, key: null, value: null, headers: [], orderingHash: null })
    checkRecordTopics([record('orders')])
    for (const topic of ['__consumer_offsets', 'bad topic!', '', '.']) {
      assert.throws(
        () => checkRecordTopics([record('orders'), record(topic)]),
        (error: unknown) => {
          assert.ok(error instanceof KEntityError)
          assert.equal(error.code, 'KE_INVALID_TOPIC')
          assert.equal(error.retryable, false)
          assert.match(error.message, /was not sent/)
          return true
        },
      )
    }
    assert.throws(() => validateTopicName('__consumer_offsets'), /reserved/)
  })
})

describe('kafka.autoCreateTopics', () => {
  it('is off unless asked for, and must be a boolean', () => {
    assert.equal(validateKafkaOptions({ brokers: ['127.0.0.1:9092'] }).autoCreateTopics, false)
    assert.equal(
      validateKafkaOptions({ brokers: ['127.0.0.1:9092'], autoCreateTopics: true }).autoCreateTopics,
      true,
    )
    assert.throws(
      () => validateKafkaOptions({ brokers: ['127.0.0.1:9092'], autoCreateTopics: 'yes' }),
      /kafka\.autoCreateTopics must be true or false/,
    )
  })
})

describe('ensureTopics() arguments', () => {
  it('checks plain declarations as defineTopic() does, before connecting', async () => {
    const nowhere = { brokers: ['127.0.0.1:1'] }
    await assert.rejects(
      ensureTopics(nowhere, [{ name: 'orders', partitions: 0 }]),
      /'partitions' must be an integer from 1/,
    )
    await assert.rejects(
      ensureTopics(nowhere, [{ name: 'orders', configs: { 'retention.ms': 5 as never } }]),
      /must be a string/,
    )
    await assert.rejects(
      ensureTopics(nowhere, [
        { name: 'orders', partitions: 2 },
        { name: 'orders', partitions: 3 },
      ]),
      /declared twice with different partitions/,
    )
    await assert.rejects(ensureTopics(nowhere, 'orders' as never), /needs the topics to ensure/)
    await assert.rejects(
      ensureTopics(nowhere, [], { create: 'yes' as never }),
      /'create' must be true or false/,
    )
  })
})

describe('deserializers', () => {
  it('follow the serializer by default, and read back what it wrote', () => {
    const json = defineTopic<{ a: number }>({ name: 'ke-d-json' })
    assert.equal(json.deserializer, jsonDeserializer)
    assert.deepEqual(json.deserializer?.deserialize(json.toRecord({ a: 1 }).value as Buffer), { a: 1 })
    assert.equal(
      defineTopic({ name: 'ke-d-s', serializer: stringSerializer }).deserializer,
      stringDeserializer,
    )
    assert.equal(
      defineTopic({ name: 'ke-d-b', serializer: bufferSerializer }).deserializer,
      bufferDeserializer,
    )
    assert.equal(
      defineTopic<number>({ name: 'ke-d-c', serializer: { name: 'n', serialize: () => Buffer.alloc(1) } })
        .deserializer,
      undefined,
    )
    assert.throws(() => jsonDeserializer.deserialize(Buffer.from('nope')), /stringDeserializer/)
    assert.throws(() => defineTopic({ name: 'ke-d-x', deserializer: {} as never }), /deserialize\(bytes\)/)
  })

  it('messageId: true adds a ke-message-id header per message, unless produce() passed one', () => {
    const topic = defineTopic<{ a: number }>({ name: 'ke-d-id', messageId: true })
    const first = topic.toRecord({ a: 1 }).headers
    const second = topic.toRecord({ a: 1 }).headers
    assert.equal(first[0]?.[0], 'ke-message-id')
    assert.notDeepEqual(first, second)
    assert.deepEqual(topic.toRecord({ a: 1 }, { headers: { 'ke-message-id': 'mine' } }).headers, [
      ['ke-message-id', Buffer.from('mine')],
    ])
    assert.throws(() => defineTopic({ name: 'ke-d-id2', messageId: 'yes' as never }), /messageId/)
  })
})
