// Poison isolation with an in-memory store and Kafka: finding the one topic Kafka refuses while
// the rest flows, holding a partition's messages without using attempts, and telling an outage
// (nothing acknowledged at all) from a few bad messages. Pure logic; test/kafka-isolation and
// test/kafka-outage cover the same against a real broker.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { HELD_ATTEMPTS } from '../../src/core/seams.ts'
import {
  ErrorCodes,
  KEntityError,
  OutboxRelay,
  type SendFailure,
  type StoredMessage,
} from '../../src/index.ts'
import { Events, FakeKafka, FakeOutbox, singleStore } from './fakes.ts'

const options = { maxMessagesPerPoll: 100, retryBackoff: { initial: 1, max: 5 }, logger: false } as const

/** 10 messages of topic `ok` over keys 0-3, one of `missing` (key 9), 10 more `ok`, one more `missing`. */
function mixedOutbox(): { outbox: FakeOutbox; missing: string[]; ok: string[] } {
  const outbox = new FakeOutbox()
  for (let i = 0; i < 10; i++) outbox.addOne('ok', i % 4, i)
  const first = outbox.addOne('missing', 9, 0)
  for (let i = 10; i < 20; i++) outbox.addOne('ok', i % 4, i)
  const second = outbox.addOne('missing', 9, 1)
  const missing = [first.id, second.id]
  return { outbox, missing, ok: outbox.ids().filter((id) => !missing.includes(id)) }
}

const unknownTopic = () =>
  new KEntityError(ErrorCodes.TRANSPORT_FAILED, "topic 'missing' does not exist", { retryable: true })

function perRecord(
  match: (record: StoredMessage) => boolean,
  failure: Omit<SendFailure, 'index'>,
): (records: StoredMessage[]) => SendFailure[] | undefined {
  return (records) => {
    const failed = records.flatMap((record, index) => (match(record) ? [{ index, ...failure }] : []))
    return failed.length > 0 ? failed : undefined
  }
}

describe('isolation, in memory', () => {
  it('a send rejected as a whole: after three tries the one refused topic is found, the others flow', async () => {
    const { outbox, missing, ok } = mixedOutbox()
    const store = singleStore(outbox)
    const kafka = new FakeKafka()
    const transport = {
      async send(records: readonly StoredMessage[]) {
        // No per-record answer: one record of a missing topic fails the whole send.
        if (records.some((r) => r.topic === 'missing')) {
          kafka.sends.push([...records])
          throw unknownTopic()
        }
        return kafka.send(records)
      },
      close: async () => {},
    }
    const events = new Events()
    const relay = new OutboxRelay(store, transport, { ...options, onEvent: events.onEvent })
    // Twice presumed to be Kafka's trouble: the batch is released untouched.
    for (let i = 0; i < 2; i++) await assert.rejects(relay.runOnce(), /does not exist/)
    assert.equal(outbox.rows.length, 22)
    assert.ok(outbox.rows.every((r) => r.attempts === 0))
    // The third time the batch is split.
    assert.equal(await relay.runOnce(), 20)
    await relay.stop()
    assert.deepEqual(outbox.ids(), missing)
    assert.deepEqual([...kafka.delivered()].sort(), [...ok].sort())
    const [first, second] = missing.map((id) => outbox.row(id))
    assert.equal(first?.attempts, 1, 'the refused message used one attempt')
    assert.equal(second?.attempts, 0, 'the later message of its key waits untouched')
    // Refused in mixed parts until the bad message was found alone; never sent after that.
    const foundAt = kafka.sends.findIndex((part) => part.length === 1 && part[0]?.id === first?.id)
    assert.ok(foundAt > 0)
    assert.ok(
      !kafka.sends
        .slice(foundAt)
        .flat()
        .some((r) => r.id === second?.id),
      'and was not sent since',
    )
    assert.deepEqual(
      events.of('message-failed').map((e) => [e.id, e.topic, e.deadLettered]),
      [[missing[0], 'missing', false]],
    )
    // Bisection, not one send per message.
    assert.ok(kafka.sends.length <= 16, `${kafka.sends.length} sends`)
  })

  it('Kafka answers per record: the refused topic fails alone in one pass, its key waits', async () => {
    const { outbox, missing, ok } = mixedOutbox()
    const kafka = new FakeKafka(
      perRecord((r) => r.topic === 'missing', {
        error: unknownTopic(),
        retryable: true,
        countsAsAttempt: true,
      }),
    )
    const relay = new OutboxRelay(singleStore(outbox), kafka, options)
    assert.equal(await relay.runOnce(), 20)
    await relay.stop()
    assert.equal(kafka.sends.length, 1)
    assert.deepEqual([...kafka.delivered()].sort(), [...ok].sort())
    assert.deepEqual(
      outbox.rows.map((r) => [r.id, r.attempts]),
      [
        [missing[0], 1],
        [missing[1], 0],
      ],
    )
  })

  it('a refusal for good is dead-lettered alone; later messages of its key stay', async () => {
    const { outbox, missing } = mixedOutbox()
    const kafka = new FakeKafka(
      perRecord((r) => r.topic === 'missing', {
        error: new Error('RECORD_LIST_TOO_LARGE'),
        retryable: false,
        countsAsAttempt: true,
      }),
    )
    const relay = new OutboxRelay(singleStore(outbox), kafka, options)
    await relay.runOnce()
    await relay.stop()
    assert.deepEqual(
      outbox.deadLetters.map((d) => d.id),
      [missing[0]],
    )
    assert.deepEqual(outbox.ids(), [missing[1]])
  })

  it('a partition-level failure (countsAsAttempt: false) holds its key without using an attempt', async () => {
    const outbox = new FakeOutbox()
    outbox.add([0, 1, 2, 3], 5)
    const key2 = outbox.rows.filter((r) => r.orderingHash === 2).map((r) => r.id)
    const kafka = new FakeKafka(
      perRecord((r) => r.orderingHash === 2, {
        error: new Error('NOT_LEADER_OR_FOLLOWER'),
        retryable: true,
        countsAsAttempt: false,
      }),
    )
    const events = new Events()
    const store = singleStore(outbox)
    const relay = new OutboxRelay(store, kafka, { ...options, onEvent: events.onEvent })
    assert.equal(await relay.runOnce(), 15)
    assert.deepEqual(outbox.ids(), key2)
    const [first, ...later] = outbox.rows
    assert.equal(first?.attempts, HELD_ATTEMPTS, 'held: marked, with 0 counted attempts')
    for (const row of later) assert.equal(row.attempts, 0)
    assert.deepEqual(
      events.of('held').map((e) => [e.ids, e.retryInMs]),
      [[[key2[0]], 1000]],
    )
    assert.equal(events.of('message-failed').length, 0, 'no attempt used, so no message-failed')
    const complete = store.calls.find((c) => c.op === 'complete')
    assert.ok(complete?.op === 'complete')
    assert.deepEqual(
      complete.failures.map((f) => [f.ids, f.countAttempt, f.deadLetter]),
      [[[key2[0]], false, undefined]],
    )
    // While it waits, new messages of other keys flow and the held key stays behind.
    outbox.add([0, 1], 1)
    assert.equal(await relay.runOnce(), 2)
    assert.deepEqual(outbox.ids(), key2)
    await relay.stop()
  })

  it('every record held on its partition, nothing written: an outage, not the messages', async () => {
    const outbox = new FakeOutbox()
    outbox.add([0, 1, 2], 3)
    const store = singleStore(outbox)
    const kafka = new FakeKafka(
      perRecord(() => true, {
        error: new Error('NOT_ENOUGH_REPLICAS'),
        retryable: true,
        countsAsAttempt: false,
      }),
    )
    const relay = new OutboxRelay(store, kafka, options)
    await assert.rejects(relay.runOnce(), /NOT_ENOUGH_REPLICAS/)
    await relay.stop()
    assert.equal(outbox.rows.length, 9)
    assert.ok(outbox.rows.every((r) => r.attempts === 0))
    assert.ok(!store.calls.some((c) => c.op === 'complete'))
  })

  it('an outage is declared only when nothing at all is acknowledged', async () => {
    // Kafka down: every send fails. After three tries the relay probes a few keys one by one,
    // then gives up without using anyone's attempts.
    const down = new FakeOutbox()
    down.add([0, 1, 2, 3, 4], 4)
    const downStore = singleStore(down)
    const dead = new FakeKafka(() => {
      throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9092'), { code: 'ECONNREFUSED' })
    })
    const relay = new OutboxRelay(downStore, dead, options)
    for (let i = 0; i < 3; i++) await assert.rejects(relay.runOnce(), /ECONNREFUSED/)
    await relay.stop()
    assert.ok(
      down.rows.every((r) => r.attempts === 0),
      'no attempt used during an outage',
    )
    assert.ok(!downStore.calls.some((c) => c.op === 'complete'))
    // Two whole-batch sends, then the third batch's one whole send and three single probes.
    assert.equal(dead.sends.length, 2 + 1 + 3)

    // The same failures while one key gets through: Kafka is up, so the failing messages are to blame.
    const up = new FakeOutbox()
    up.add([0, 1, 2, 3, 4], 4)
    const upStore = singleStore(up)
    const partly = new FakeKafka((records) => {
      if (records.some((r) => r.orderingHash !== 0)) throw new Error('REQUEST_TIMED_OUT')
      return undefined
    })
    const events = new Events()
    const second = new OutboxRelay(upStore, partly, { ...options, onEvent: events.onEvent })
    for (let i = 0; i < 2; i++) await assert.rejects(second.runOnce(), /REQUEST_TIMED_OUT/)
    assert.equal(await second.runOnce(), 4)
    await second.stop()
    assert.deepEqual([...partly.delivered()], ['1', '6', '11', '16'])
    assert.deepEqual(
      events
        .of('message-failed')
        .map((e) => [e.id, e.attempts])
        .sort(),
      [
        ['2', 1],
        ['3', 1],
        ['4', 1],
        ['5', 1],
      ],
    )
  })
})
