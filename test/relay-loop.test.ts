// The relay loop's pacing, with an in-memory store and transport (pure logic: no database,
// no Kafka; delivery itself is covered by the integration tests).
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  ErrorCodes,
  KEntityError,
  OutboxRelay,
  type RelayOptions,
  type RelayStore,
  type StoredMessage,
} from '../src/index.ts'

function messages(count: number, orderingHash: (i: number) => number | null = () => null): StoredMessage[] {
  return Array.from({ length: count }, (_, i) => ({
    id: String(i + 1),
    topic: 't',
    key: null,
    value: Buffer.from('v'),
    headers: [],
    orderingHash: orderingHash(i),
    attempts: 0,
  }))
}

/** A store that is always connected and leading, claims nothing and keeps nothing, but for `overrides`. */
function inMemoryStore(overrides: Partial<RelayStore>): RelayStore {
  return {
    healthy: true,
    async connect() {},
    async tryAcquireLeadership() {
      return true
    },
    async claim() {
      return []
    },
    async complete() {},
    async abandon() {},
    async waitForWork() {},
    async close() {},
    ...overrides,
  }
}

/** Answers claims from a script, then with nothing; records every pause the loop asks for. */
function scriptedStore(claims: number[]): { store: RelayStore; pauses: number[]; done: Promise<void> } {
  const pauses: number[] = []
  let finish: () => void = () => {}
  const done = new Promise<void>((resolve) => {
    finish = resolve
  })
  let claimed = 0
  const store = inMemoryStore({
    async claim() {
      const count = claims[claimed++] ?? 0
      if (claimed > claims.length) finish()
      return messages(count)
    },
    async waitForWork(ms) {
      // Only pauses that follow a scripted claim: the loop may run on while the test stops it.
      if (claimed <= claims.length) pauses.push(ms)
    },
  })
  return { store, pauses, done }
}

async function pausesFor(claims: number[], options: RelayOptions): Promise<number[]> {
  const { store, pauses, done } = scriptedStore(claims)
  const relay = new OutboxRelay(store, { send: async () => {}, close: async () => {} }, options)
  await relay.start()
  await done
  await relay.stop()
  return pauses
}

describe('relay loop pacing', () => {
  it('single mode: a full batch claims again at once, a short or empty one waits the polling interval', async () => {
    const pauses = await pausesFor([10, 3, 0], { pollingInterval: 5000, maxMessagesPerPoll: 10 })
    // The full batch of 10 asked for no pause; the short one and the empty one each waited 5 s.
    assert.deepEqual(pauses, [5000, 5000])
  })

  it('concurrent mode: a short claim polls again after 10 ms, doubling while claims stay empty', async () => {
    const pauses = await pausesFor([3, 0, 0, 0, 2, 0], {
      mode: 'concurrent',
      pollingInterval: 5000,
      maxMessagesPerPoll: 10,
    })
    assert.deepEqual(pauses, [10, 20, 40, 80, 10, 20])
  })

  it('concurrent mode: the pause never exceeds the polling interval', async () => {
    const pauses = await pausesFor([0, 0, 0, 0, 0, 0, 0, 0], {
      mode: 'concurrent',
      pollingInterval: 300,
      maxMessagesPerPoll: 10,
    })
    assert.deepEqual(pauses, [20, 40, 80, 160, 300, 300, 300, 300])
  })
})

describe('isolating a bad message', () => {
  it('bisects the batch: about log2(n) sends, only the bad message fails, only its key waits', async () => {
    const batch = messages(100, (i) => i % 4)
    const bad = batch[50] as StoredMessage
    let sends = 0
    const sent: string[] = []
    let completed: {
      acknowledged: readonly string[]
      failures: readonly { ids: string[]; deadLetter?: boolean }[]
    } = { acknowledged: [], failures: [] }
    const store = inMemoryStore({
      async claim() {
        return batch
      },
      async complete(acknowledged, failures = []) {
        completed = { acknowledged, failures }
      },
    })
    const transport = {
      async send(records: readonly StoredMessage[]) {
        sends++
        if (records.some((r) => r.id === bad.id)) {
          throw new KEntityError(ErrorCodes.TRANSPORT_FAILED, 'refused for good', { retryable: false })
        }
        sent.push(...records.map((r) => r.id))
      },
      async close() {},
    }
    const relay = new OutboxRelay(store, transport as never)
    await relay.runOnce()
    await relay.stop()
    const blocked = batch.filter((m) => m.orderingHash === bad.orderingHash && Number(m.id) > Number(bad.id))
    assert.deepEqual(
      completed.failures.map((f) => [f.ids, f.deadLetter]),
      [[[bad.id], true]],
    )
    assert.equal(completed.acknowledged.length, 100 - 1 - blocked.length)
    assert.ok(!blocked.some((m) => sent.includes(m.id)), 'nothing of its key after it was sent')
    // Sent in id order: bisection never reorders.
    assert.deepEqual(
      sent,
      [...sent].sort((a, b) => Number(a) - Number(b)),
    )
    assert.ok(sends <= 20, `${sends} sends for a batch of 100 (one by one would take 100)`)
  })
})
