// The pipelined relay (a companion session claims the next batch while one is in flight) with an
// in-memory store and Kafka: per-key order and no loss when a send fails halfway, and stop()
// during a send. Pure logic; test/pg-pipeline.test.ts covers the same on PostgreSQL and Kafka.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { OutboxRelay, type SendFailure, type StoredMessage } from '../../src/index.ts'
import { Events, FakeKafka, FakeOutbox, FakeStore, singleStore, storedBytes, until } from './fakes.ts'

const KEYS = [0, 1, 2, 3, 4]
const fast = {
  maxMessagesPerPoll: 10,
  pollingInterval: 5,
  retryBackoff: { initial: 1, max: 5 },
  logger: false,
} as const

/** Per key, Kafka got the key's messages in id order (first occurrences; a resend is a duplicate). */
function assertKeyOrder(kafka: FakeKafka, ids: Map<number, string[]>): void {
  for (const [key, expected] of ids) assert.deepEqual(kafka.order(key), expected, `key ${key}`)
}

function idsByKey(outbox: FakeOutbox): Map<number, string[]> {
  const byKey = new Map<number, string[]>()
  for (const row of outbox.rows) {
    const key = row.orderingHash as number
    byKey.set(key, [...(byKey.get(key) ?? []), row.id])
  }
  return byKey
}

/** Every row gone from the outbox was acknowledged by Kafka (or dead-lettered): nothing lost. */
function assertNothingLost(outbox: FakeOutbox, all: string[], kafka: FakeKafka): void {
  const left = new Set(outbox.ids())
  const dead = new Set(outbox.deadLetters.map((d) => d.id))
  const delivered = kafka.delivered()
  for (const id of all) {
    assert.ok(left.has(id) || dead.has(id) || delivered.has(id), `${id} left the outbox unacknowledged`)
  }
}

async function drainWith(answer: ConstructorParameters<typeof FakeKafka>[0]) {
  const outbox = new FakeOutbox()
  outbox.add(KEYS, 20)
  const all = outbox.ids()
  const expected = idsByKey(outbox)
  const store = new FakeStore(outbox, { pipelined: true })
  const kafka = new FakeKafka(answer)
  const events = new Events()
  const relay = new OutboxRelay(store, kafka, { ...fast, onEvent: events.onEvent })
  await relay.start()
  await until(() => outbox.rows.length === 0)
  await relay.stop()
  return { outbox, all, expected, store, kafka, events }
}

describe('pipelined relay, in memory', () => {
  it('claims ahead on the companion session', async () => {
    const { store, kafka, outbox } = await drainWith(() => undefined)
    const claims = (s: FakeStore | undefined) => s?.calls.filter((c) => c.op === 'claim' && c.ids.length > 0)
    // Batches alternate between the two sessions.
    assert.ok((claims(store.other)?.length ?? 0) >= 4, 'the companion claimed ahead')
    assert.ok((claims(store)?.length ?? 0) >= 4)
    // 100 messages in batches of 10: every batch was one send.
    assert.equal(kafka.sends.length, 10)
    assert.equal(outbox.rows.length, 0)
  })

  it('a send that fails halfway (Kafka answers per record) keeps per-key order and loses nothing', async () => {
    const { outbox, all, expected, kafka, events } = await drainWith((records, send) =>
      send === 3
        ? records.slice(5).map(
            (_, i): SendFailure => ({
              index: 5 + i,
              error: new Error('REQUEST_TIMED_OUT'),
              retryable: true,
              countsAsAttempt: true,
            }),
          )
        : undefined,
    )
    assertKeyOrder(kafka, expected)
    assertNothingLost(outbox, all, kafka)
    assert.equal(outbox.deadLetters.length, 0)
    // The second half's keys each failed once, at their first unacknowledged message only.
    const failed = events.of('message-failed')
    assert.ok(failed.length >= 1 && failed.length <= 5, `${failed.length} message-failed events`)
    for (const event of failed) assert.equal(event.attempts, 1)
  })

  it('a send rejected as a whole after Kafka wrote half of it resends, never reorders', async () => {
    const outbox = new FakeOutbox()
    outbox.add(KEYS, 20)
    const all = outbox.ids()
    const expected = idsByKey(outbox)
    const store = new FakeStore(outbox, { pipelined: true })
    const kafka = new FakeKafka()
    let sends = 0
    // Kafka writes the first half of the third send, then the connection drops: no per-record answer.
    const transport = {
      async send(records: readonly StoredMessage[]) {
        sends++
        if (sends !== 3) return kafka.send(records)
        kafka.log.push(...records.slice(0, 5))
        throw new Error('connection reset')
      },
      close: async () => {},
    }
    const relay = new OutboxRelay(store, transport, fast)
    await relay.start()
    await until(() => outbox.rows.length === 0)
    await relay.stop()
    assertKeyOrder(kafka, expected)
    assertNothingLost(outbox, all, kafka)
    // The written half came again: duplicates, each after its original.
    assert.ok(kafka.log.length > all.length)
  })

  for (const pipelined of [true, false]) {
    it(`stop() during a send deletes nothing Kafka did not acknowledge (${pipelined ? 'pipelined' : 'one batch at a time'})`, async () => {
      const outbox = new FakeOutbox()
      outbox.add(KEYS, 20)
      const all = outbox.ids()
      const store = pipelined ? new FakeStore(outbox, { pipelined: true }) : singleStore(outbox)
      const kafka = new FakeKafka()
      let hang: ((error: Error) => void) | undefined
      let inFlight: string[] = []
      const transport = {
        send(records: readonly StoredMessage[]): Promise<void> {
          // The second batch never gets an answer until the producer is closed.
          if (kafka.sends.length === 1 && hang === undefined) {
            inFlight = records.map((r) => r.id)
            return new Promise((_, reject) => {
              hang = reject
            })
          }
          return kafka.send(records)
        },
        async close() {
          hang?.(new Error('producer closed'))
        },
      }
      const relay = new OutboxRelay(store, transport, fast)
      await relay.start()
      await until(() => hang !== undefined)
      await relay.stop({ timeout: 20 })
      assert.equal(inFlight.length, 10)
      const left = new Set(outbox.ids())
      for (const id of inFlight) assert.ok(left.has(id), `in-flight ${id} was deleted`)
      assertNothingLost(outbox, all, kafka)
      // Exactly the first batch is gone (once its delete ran); everything else waits in the outbox.
      assert.ok(outbox.rows.length >= all.length - 10)
      assert.equal(relay.isRunning, false)
    })
  }

  describe('byte budget (maxBytesPerPoll)', () => {
    const KB = 1024
    /** 40 messages of 300 KB over 5 keys; message 13 is larger than the budget. */
    function bigOutbox(oversize: number): FakeOutbox {
      const outbox = new FakeOutbox()
      outbox.add(KEYS, 8)
      for (const row of outbox.rows) row.value = Buffer.alloc(row.id === '13' ? oversize : 300 * KB, row.id)
      return outbox
    }

    // 1000 KB: batches of 3, message 13 (1001 KB) alone. 700 KB: batches of 2; message 13
    // (900 KB) follows a batch of one 300 KB message, short in count and in bytes, which must
    // still count as full (the relay cannot see the row that did not fit).
    const cases = [
      [1000 * KB, 1001 * KB],
      [700 * KB, 900 * KB],
    ] as const
    for (const [budget, oversize] of cases) {
      for (const pipelined of [true, false]) {
        it(`every claim, the one ahead too, stays within ${budget / KB} KB; a ${oversize / KB} KB message goes alone (${pipelined ? 'pipelined' : 'one batch at a time'})`, async () => {
          const outbox = bigOutbox(oversize)
          const all = outbox.ids()
          const expected = idsByKey(outbox)
          const sizes = new Map(outbox.rows.map((row) => [row.id, storedBytes(row)]))
          const store = pipelined ? new FakeStore(outbox, { pipelined: true }) : singleStore(outbox)
          const kafka = new FakeKafka()
          // A long polling interval: a batch cut by the budget must count as full and claim again
          // at once (and ahead), or this drain would take 40 s.
          const relay = new OutboxRelay(store, kafka, {
            ...fast,
            maxMessagesPerPoll: 100,
            maxBytesPerPoll: budget,
            pollingInterval: 60_000,
          })
          const started = performance.now()
          await relay.start()
          await until(() => outbox.rows.length === 0)
          await relay.stop()
          assert.ok(performance.now() - started < 5000, 'drained without waiting for the polling interval')
          const claims = [store, store.other]
            .flatMap((s) => s?.calls ?? [])
            .filter((c): c is { op: 'claim'; ids: string[] } => c.op === 'claim' && c.ids.length > 0)
          for (const claim of claims) {
            const bytes = claim.ids.reduce((sum, id) => sum + (sizes.get(id) ?? 0), 0)
            if (claim.ids.includes('13'))
              assert.deepEqual(claim.ids, ['13'], 'the oversize message goes alone')
            else assert.ok(bytes <= budget, `claim of ${claim.ids.length} rows holds ${bytes} bytes`)
            // 300 KB messages under a 1000 KB budget: 3 a batch, never fewer unless cut by message 13.
            assert.ok(claim.ids.length <= 3)
          }
          if (pipelined) {
            const ahead = store.other?.calls.filter((c) => c.op === 'claim' && c.ids.length > 0) ?? []
            assert.ok(ahead.length >= 3, `the companion claimed ahead ${ahead.length} times`)
          }
          assertKeyOrder(kafka, expected)
          assertNothingLost(outbox, all, kafka)
          assert.equal(kafka.delivered().size, all.length)
        })
      }
    }
  })
})
