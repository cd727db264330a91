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
} from '../../src/index.ts'

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

/**
 * A pause the loop asked for, and the ms since the wait before it ended (at least the poll's own
 * time): the loop waits what is left of its nominal pause after the poll's time, so `ms` is at
 * most the nominal pause and `ms + sincePoll` at least it, however slow a loaded machine makes
 * the poll.
 */
interface Pause {
  ms: number
  sincePoll: number
}

/** Answers claims from a script, then with nothing; records every pause the loop asks for. */
function scriptedStore(claims: number[]): { store: RelayStore; pauses: Pause[]; done: Promise<void> } {
  const pauses: Pause[] = []
  // Polls after a full batch follow without a wait, so a poll started at the latest when the
  // last wait (or the store) ended: the time since is an upper bound of the poll's own time.
  let pollStartedAt = performance.now()
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
      if (claimed <= claims.length) pauses.push({ ms, sincePoll: performance.now() - pollStartedAt })
      pollStartedAt = performance.now()
    },
  })
  return { store, pauses, done }
}

/** `sendMs`: how long each send to Kafka takes. */
async function pausesFor(claims: number[], options: RelayOptions, sendMs = 0): Promise<Pause[]> {
  const { store, pauses, done } = scriptedStore(claims)
  const send =
    sendMs === 0 ? async () => {} : () => new Promise<void>((resolve) => setTimeout(resolve, sendMs))
  const relay = new OutboxRelay(store, { send, close: async () => {} }, options)
  await relay.start()
  await done
  await relay.stop()
  return pauses
}

/**
 * Each pause is its nominal value less the poll's own time (see `Pause`): never more than
 * nominal, and, with the poll's time added back, not short of it (a loaded machine makes polls
 * slow, not the loop's arithmetic wrong).
 */
function assertPauses(actual: Pause[], expected: number[]): void {
  const shown = actual.map((p) => `${p.ms}+${p.sincePoll.toFixed(1)}`).join(', ')
  assert.equal(actual.length, expected.length, `pauses ${shown}, expected ${expected.join(', ')}`)
  actual.forEach((pause, i) => {
    const nominal = expected[i] as number
    assert.ok(
      pause.ms <= nominal && pause.ms + pause.sincePoll >= nominal - 5,
      `pause ${i}: ${pause.ms} ms after a poll of ${pause.sincePoll.toFixed(1)} ms, expected ${nominal} in all`,
    )
  })
}

describe('relay loop pacing', () => {
  it('single mode: a full batch claims again at once, a short or empty one waits the polling interval', async () => {
    const pauses = await pausesFor([10, 3, 0], { pollingInterval: 5000, maxMessagesPerPoll: 10 })
    // The full batch of 10 asked for no pause; the short one and the empty one each waited 5 s.
    assertPauses(pauses, [5000, 5000])
  })

  it('the polling interval runs from the start of one poll to the start of the next: the batch time is not added', async () => {
    // Each short batch spends about 150 ms in Kafka's hands, so only what is left of the 400 ms
    // interval is waited; counted from the batch's end it would be 400 ms again.
    const pauses = await pausesFor([3, 3], { pollingInterval: 400, maxMessagesPerPoll: 10 }, 150)
    assert.equal(pauses.length, 2)
    for (const pause of pauses) {
      assert.ok(
        pause.ms <= 250 && pause.ms + pause.sincePoll >= 395,
        `paused ${pause.ms} ms after a poll of ${pause.sincePoll.toFixed(1)} ms, expected 400 in all`,
      )
    }
  })

  it('concurrent mode: a short claim polls again after 10 ms, doubling while claims stay empty', async () => {
    const pauses = await pausesFor([3, 0, 0, 0, 2, 0], {
      mode: 'concurrent',
      pollingInterval: 5000,
      maxMessagesPerPoll: 10,
    })
    assertPauses(pauses, [10, 20, 40, 80, 10, 20])
  })

  it('concurrent mode: the pause never exceeds the polling interval', async () => {
    const pauses = await pausesFor([0, 0, 0, 0, 0, 0, 0, 0], {
      mode: 'concurrent',
      pollingInterval: 300,
      maxMessagesPerPoll: 10,
    })
    assertPauses(pauses, [20, 40, 80, 160, 300, 300, 300, 300])
  })
})

describe('relay loop wake-up', () => {
  it('tells the store how many messages the batch before each wait found (0 after an empty claim)', async () => {
    const claims = [3, 0, 7, 10, 2]
    let claimed = 0
    const found: (number | undefined)[] = []
    let finish: () => void = () => {}
    const done = new Promise<void>((resolve) => {
      finish = resolve
    })
    const store = inMemoryStore({
      async claim() {
        const count = claims[claimed++] ?? 0
        if (claimed > claims.length) finish()
        return messages(count)
      },
      async waitForWork(_ms, _signal, count) {
        if (claimed <= claims.length) found.push(count)
      },
    })
    const relay = new OutboxRelay(
      store,
      { send: async () => {}, close: async () => {} },
      {
        maxMessagesPerPoll: 10,
        pollingInterval: 5,
        logger: false,
      },
    )
    await relay.start()
    await done
    await relay.stop()
    // The full batch of 10 claims again at once, without a wait.
    assert.deepEqual(found, [3, 0, 7, 2])
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
