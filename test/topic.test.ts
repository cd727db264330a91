import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { orderingHash } from '../src/core/record.ts'
import { postgresDialect } from '../src/dialects/postgres/index.ts'
import {
  bufferSerializer,
  defineTopic,
  ErrorCodes,
  jsonSerializer,
  Outbox,
  stringSerializer,
} from '../src/index.ts'

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
