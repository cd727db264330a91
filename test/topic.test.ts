import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { validateTopicName } from '../src/core/topic.ts'
import { defineTopic, KEntityError } from '../src/index.ts'
import { checkRecordTopics } from '../src/transports/kafka/topics.ts'

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
