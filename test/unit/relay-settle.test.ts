// Settling a send early (issue 18): when one partition's leader is gone, the partitions whose
// leaders answer keep flowing; the unacknowledged rows are held (no attempt used, no resend)
// until their late acknowledgement deletes them, or until Kafka can no longer write them.
// Pure logic, with in-memory fakes; test/kafka-cluster.test.ts covers a real broker kill.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { SETTLE_EARLY_MIN_MS, SendTimes, STALL_MEMORY_MS } from '../../src/core/relay/settle.ts'
import { countedAttempts, HELD_ATTEMPTS } from '../../src/core/seams.ts'
import { OutboxRelay } from '../../src/index.ts'
import { Events, FakeOutbox, FakeStore, PartitionedKafka, singleStore, until } from './fakes.ts'

const fast = {
  maxMessagesPerPoll: 20,
  pollingInterval: 5,
  retryBackoff: { initial: 1, max: 5 },
  logger: false,
} as const

/** Keys 0..5 on 2 partitions: even keys on partition 0, odd keys on partition 1. */
const KEYS = [0, 1, 2, 3, 4, 5]

function idsByKey(outbox: FakeOutbox): Map<number, string[]> {
  const byKey = new Map<number, string[]>()
  for (const row of outbox.rows) {
    const key = row.orderingHash as number
    byKey.set(key, [...(byKey.get(key) ?? []), row.id])
  }
  return byKey
}

function assertKeyOrder(kafka: PartitionedKafka, expected: Map<number, string[]>): void {
  for (const [key, ids] of expected) assert.deepEqual(kafka.order(key), ids, `key ${key}`)
}

async function setup(pipelined: boolean, landsWithinMs: number | undefined, partitions = 2) {
  const outbox = new FakeOutbox()
  const store = pipelined ? new FakeStore(outbox, { pipelined: true }) : singleStore(outbox)
  const kafka = new PartitionedKafka(partitions, landsWithinMs)
  const events = new Events()
  const relay = new OutboxRelay(store, kafka, { ...fast, onEvent: events.onEvent })
  return { outbox, store, kafka, events, relay }
}

/** Rows of partition 1 still in the outbox. */
function partitionRows(outbox: FakeOutbox, kafka: PartitionedKafka, partition: number) {
  return outbox.rows.filter((r) => kafka.partitionOf(r) === partition)
}

for (const pipelined of [false, true]) {
  describe(`settling a send early (${pipelined ? 'pipelined' : 'one batch at a time'})`, () => {
    it('live partitions flow while one stalls; a late acknowledgement deletes the held rows', async () => {
      const { outbox, store, kafka, events, relay } = await setup(pipelined, 60_000)
      kafka.stall(1)
      outbox.add(KEYS, 5)
      await relay.start()
      try {
        // Every row of the live partition is delivered while partition 1 has not answered.
        await until(() => partitionRows(outbox, kafka, 0).length === 0)
        const held = events.of('held')
        assert.ok(held.length > 0, 'the unacknowledged rows were held')
        assert.equal(held[0]?.retryInMs, 60_000, 'held for as long as Kafka could still write them')
        // The first row of each stalled key is held; the rest of its key waits behind it, unsent.
        for (const key of [1, 3, 5]) {
          const rows = outbox.rows.filter((r) => r.orderingHash === key)
          assert.equal(rows.length, 5, `key ${key} is all still in the outbox`)
          assert.ok((rows[0]?.attempts ?? 0) >= HELD_ATTEMPTS, `key ${key}'s first row is held`)
          assert.equal(countedAttempts(rows[0]?.attempts ?? 0), 0, 'no attempt used')
        }
        const sentBefore = kafka.log.length
        // New messages on live keys keep flowing while the stall lasts.
        for (const key of [0, 2, 4]) outbox.addOne('t', key, 99)
        await until(() => partitionRows(outbox, kafka, 0).length === 0)
        assert.ok(kafka.log.length > sentBefore)
        const expected = idsByKey(outbox)
        // The broker's partitions move: the outstanding send is acknowledged late.
        kafka.release(1, 'ack')
        await until(() => outbox.rows.length === 0)
        assertKeyOrder(kafka, expected)
        assert.equal(events.of('message-failed').length, 0, 'no attempt was used')
        assert.ok(
          store.calls.some((c) => c.op === 'completeHeld') ||
            store.other?.calls.some((c) => c.op === 'complete') === true ||
            store.calls.some((c) => c.op === 'complete'),
        )
      } finally {
        await relay.stop()
      }
    })

    it('a partition acknowledged after the early settle is deleted at once, not when the slowest partition answers', async () => {
      // Three partitions: 1 comes back (its in-sync replicas shrank), 2 stays stalled (its
      // leader is dead and the client has not given up yet).
      const { outbox, kafka, events, relay } = await setup(pipelined, 60_000, 3)
      kafka.stall(1)
      kafka.stall(2)
      outbox.add(KEYS, 4)
      const expected = idsByKey(outbox)
      await relay.start()
      try {
        await until(() => partitionRows(outbox, kafka, 0).length === 0)
        kafka.release(1, 'ack')
        await until(() => partitionRows(outbox, kafka, 1).length === 0)
        assert.equal(partitionRows(outbox, kafka, 2).length, 8, "partition 2's rows all wait")
        kafka.release(2, 'ack')
        await until(() => outbox.rows.length === 0)
        assertKeyOrder(kafka, expected)
        assert.equal(events.of('message-failed').length, 0, 'no attempt was used')
      } finally {
        await relay.stop()
      }
    })

    it('a late failure holds the rows again for a second, as a failure answered in time, then resends in order', async () => {
      const { outbox, kafka, events, relay } = await setup(pipelined, 60_000)
      kafka.stall(1)
      outbox.add(KEYS, 3)
      const expected = idsByKey(outbox)
      await relay.start()
      try {
        await until(() => partitionRows(outbox, kafka, 0).length === 0)
        const failedAt = Date.now()
        kafka.release(1, 'fail')
        await until(() => outbox.rows.length === 0)
        const waited = Date.now() - failedAt
        assert.ok(waited >= 900 && waited < 4000, `held again for about a second: ${waited} ms`)
        assertKeyOrder(kafka, expected)
        assert.equal(events.of('message-failed').length, 0, 'no attempt was used')
        for (const row of outbox.rows) assert.equal(countedAttempts(row.attempts), 0)
      } finally {
        await relay.stop()
      }
    })
  })
}

describe('settling a send early: when it does not', () => {
  it('a healthy cluster: every send settles whole, nothing is held', async () => {
    const { outbox, events, relay } = await setup(true, 60_000)
    outbox.add(KEYS, 20)
    await relay.start()
    await until(() => outbox.rows.length === 0)
    await relay.stop()
    assert.equal(events.of('held').length, 0)
  })

  it('a transport that does not say how long it may still write waits for the whole send', async () => {
    const { outbox, kafka, events, relay } = await setup(false, undefined)
    kafka.stall(1)
    outbox.add(KEYS, 2)
    await relay.start()
    try {
      await new Promise((resolve) => setTimeout(resolve, SETTLE_EARLY_MIN_MS * 2))
      assert.equal(events.of('held').length, 0)
      assert.equal(outbox.rows.length, 12, 'nothing deleted while the send is outstanding')
      kafka.release(1, 'ack')
      await until(() => outbox.rows.length === 0)
    } finally {
      await relay.stop()
    }
  })

  it('stop() waits for the outstanding send and deletes what it acknowledged', async () => {
    const { outbox, store, kafka, relay } = await setup(false, 60_000)
    kafka.stall(1)
    outbox.add(KEYS, 1)
    await relay.start()
    await until(() => partitionRows(outbox, kafka, 0).length === 0)
    setTimeout(() => kafka.release(1, 'ack'), 50)
    await relay.stop({ timeout: 5000 })
    assert.equal(outbox.rows.length, 0)
    assert.ok(store.calls.some((c) => c.op === 'completeHeld'))
  })
})

describe('SendTimes', () => {
  it('overdue after twice the 90th percentile of healthy sends, at least 200 ms, at most 5 s', () => {
    const times = new SendTimes()
    assert.equal(times.overdueAfter(), SETTLE_EARLY_MIN_MS)
    for (let i = 0; i < 64; i++) times.record(10)
    assert.equal(times.overdueAfter(), SETTLE_EARLY_MIN_MS)
    for (let i = 0; i < 64; i++) times.record(i < 60 ? 150 : 4000)
    assert.equal(times.overdueAfter(), 300, 'a few slow sends do not move it')
    for (let i = 0; i < 64; i++) times.record(9000)
    assert.equal(times.overdueAfter(), 5000)
  })

  it('while partitions stall, the shortest threshold, whatever the history; then the history again', () => {
    const times = new SendTimes()
    for (let i = 0; i < 64; i++) times.record(450)
    assert.equal(times.overdueAfter(1000), 900)
    times.stalled(1000)
    assert.equal(times.overdueAfter(1001), SETTLE_EARLY_MIN_MS)
    assert.equal(times.overdueAfter(1000 + STALL_MEMORY_MS - 1), SETTLE_EARLY_MIN_MS)
    assert.equal(times.overdueAfter(1000 + STALL_MEMORY_MS), 900)
  })
})
