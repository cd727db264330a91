/**
 * The relay-store contract: what a relay promises on every database, checked against the real
 * database and a real Kafka broker; "delivered" always means read back from the topic.
 *
 * The harness's capability flags decide which cases apply (see `harness.ts`); a case that does
 * not apply is registered as skipped with the reason, so every database's output lists them all.
 * Every test gets a fresh outbox place and fresh topics, and drops them after.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import { setTimeout as sleep, setImmediate as yieldToRelay } from 'node:timers/promises'
import { murmur2 } from '@platformatic/kafka'
import {
  bufferSerializer,
  defineTopic,
  ErrorCodes,
  KEntityError,
  type OutboxRecord,
  type OutboxRelay,
  type RelayEvent,
  type TopicMap,
} from '../../src/index.ts'
import {
  type ConsumedMessage,
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  type TrackedMessage,
  trackingHeaders,
} from '../../src/testing/index.ts'
import { KafkaTransport } from '../../src/transports/kafka/index.ts'
import { createTopic, kafkaBrokers, uniqueName, waitFor } from '../support/env.ts'
import { type OrderEvent, orderTopic, RollbackOnPurpose } from '../support/workload.ts'
import type { StoreContext, StoreHarness, StoreSetupOptions } from './harness.ts'

type Orders = { orders: ReturnType<typeof orderTopic> }

const HOUR = 3_600_000

export function runRelayStoreContract(harness: StoreHarness): void {
  const caps = harness.capabilities
  const lacking = (['single', 'exclusive', 'concurrent'] as const).filter((m) => !caps.modes.includes(m))

  describe(`relay-store contract: ${harness.name}`, () => {
    it(`atomicity: ${harness.load.atomicityTransactions} transactions, 20% rolled back, only committed ones delivered, outbox emptied`, async (t) => {
      const { ctx, topicName } = await orders(t, harness, 3)
      const relay = started(t, ctx.relay({ pollingInterval: 50 }))
      await relay.start()
      const workload = await runWorkload(ctx, {
        transactions: harness.load.atomicityTransactions,
        writers: 8,
        keysPerWriter: 5,
        rollbackRate: 0.2,
      })
      assert.ok(
        workload.rolledBack.length > harness.load.atomicityTransactions / 10,
        `expected ~20% rollbacks, got ${workload.rolledBack.length}`,
      )
      const { report } = await assertDelivered(ctx, topicName, workload.committed, {
        forbidden: workload.rolledBack,
      })
      await relay.stop()
      assert.equal(report.delivered, workload.committed.length)
      assert.equal(report.phantom, 0)
      assert.equal(
        await ctx.countOrders(),
        workload.committed.length,
        'business rows = committed transactions',
      )
    })

    it(`per-key order: ${harness.load.orderedMessages} messages over 50 keys on 8 partitions, Java-compatible partitioning`, async (t) => {
      const { ctx, topicName } = await orders(t, harness, 8)
      const relay = started(t, ctx.relay({ pollingInterval: 20, maxMessagesPerPoll: 500 }))
      await relay.start()
      const workload = await runWorkload(ctx, {
        transactions: harness.load.orderedMessages / 50,
        messagesPerTransaction: 50,
        writers: 5,
        keysPerWriter: 10,
        rollbackRate: 0,
      })
      assert.equal(workload.committed.length, harness.load.orderedMessages)
      const { report, consumed } = await assertDelivered(ctx, topicName, workload.committed)
      await relay.stop()
      assert.equal(report.outOfOrder, 0)
      assert.equal(report.keysOnSeveralPartitions, 0)
      assertJavaPartitioning(consumed.slice(0, 500), 8)
    })

    it('relays messages that were already waiting when the relay starts', async (t) => {
      const { ctx, topicName } = await orders(t, harness, 2)
      const workload = await runWorkload(ctx, {
        transactions: 50,
        writers: 1,
        keysPerWriter: 3,
        rollbackRate: 0,
      })
      assert.equal(await ctx.countOutbox(), 50)
      // A poll interval longer than the test: only the first poll at start can find them.
      const relay = started(t, ctx.relay({ pollingInterval: 60_000 }))
      await relay.start()
      await assertDelivered(ctx, topicName, workload.committed)
      await relay.stop()
    })

    it('maxBytesPerPoll: 40 messages of 300 KB go in batches within a 700 KB budget, a 900 KB one alone, all delivered in key order', async (t) => {
      // 700 KB rather than 1 MB: the larger-than-budget message must still fit Kafka's default
      // largest message (1 MiB), so the case runs on a broker as configured out of the box.
      const KB = 1024
      const budget = 700 * KB
      const topicName = uniqueName('bytes').replaceAll('_', '-')
      await createTopic(topicName, 2)
      const big = defineTopic<Uint8Array>({ name: topicName, serializer: bufferSerializer })
      const ctx = await context(t, harness, { topics: { big } })
      const oversize = 17
      const sent: { key: string; value: Buffer }[] = []
      for (let i = 0; i < 40; i++) {
        const value = Buffer.alloc(i === oversize ? 900 * KB : 300 * KB, i)
        value.write(`m${i};`)
        sent.push({ key: `key-${i % 4}`, value })
      }
      for (let from = 0; from < sent.length; from += 5) {
        await ctx.transaction(async ({ topics }) => {
          for (const m of sent.slice(from, from + 5)) await topics.big.produce(m.value, { key: m.key })
        })
      }
      const kafka = new KafkaTransport({ brokers: kafkaBrokers() })
      t.after(() => kafka.close())
      const sends: OutboxRecord[][] = []
      const recording = {
        async send(records: readonly OutboxRecord[]) {
          sends.push([...records])
          await kafka.send(records)
        },
        close: async () => {},
      }
      // A poll interval longer than the test: a batch cut by the budget must count as full, so
      // the relay claims again at once instead of waiting for the next poll.
      const relay = started(
        t,
        ctx.relay({ kafka: recording, maxBytesPerPoll: budget, pollingInterval: 60_000 }),
      )
      await relay.start()
      await waitFor(async () => (await ctx.countOutbox()) === 0, {
        what: 'the outbox to drain',
        timeout: 60_000,
      })
      await relay.stop()
      const bytes = (r: OutboxRecord) =>
        (r.key?.length ?? 0) +
        (r.value?.length ?? 0) +
        r.headers.reduce((n, [k, v]) => n + k.length + (v?.length ?? 0), 0)
      for (const batch of sends) {
        const total = batch.reduce((n, r) => n + bytes(r), 0)
        if (batch.some((r) => r.value?.length === 900 * KB))
          assert.equal(batch.length, 1, 'the oversize message goes alone')
        else assert.ok(total <= budget, `a batch of ${batch.length} held ${total} bytes`)
      }
      assert.ok(
        sends.some((batch) => batch.length === 2),
        `batches hold 2 messages where they fit: ${sends.map((b) => b.length).join(',')}`,
      )
      const consumed = await readTopic({
        brokers: kafkaBrokers(),
        topic: topicName,
        expectedCount: sent.length,
      })
      assert.equal(consumed.length, sent.length)
      for (const key of ['key-0', 'key-1', 'key-2', 'key-3']) {
        const expected = sent.filter((m) => m.key === key).map((m) => m.value)
        const got = consumed.filter((m) => m.key?.toString() === key).map((m) => m.value)
        assert.equal(got.length, expected.length, key)
        for (const [i, value] of got.entries()) {
          assert.ok(value?.equals(expected[i] as Buffer), `${key}: message ${i} in order and intact`)
        }
      }
    })

    it('keeps key, header and payload bytes exactly, including non-ASCII, quotes, binary, tombstones and null keys', async (t) => {
      const jsonName = uniqueName('json').replaceAll('_', '-')
      const binName = uniqueName('bin').replaceAll('_', '-')
      const json = defineTopic<unknown>({
        name: jsonName,
        key: (m) => (m as { k: string }).k,
        headers: { static: 'yes' },
      })
      const binary = defineTopic<Uint8Array>({ name: binName, serializer: bufferSerializer })
      const ctx = await context(t, harness, { topics: { json, binary }, inMemory: true })
      const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
      const binaryKey = Buffer.from([0, 1, 0xff, 0x80, 0, 0x27, 0x5c, 0x22])
      const key = "ключ-🔑-ü '\\"
      const text = 'Grüße, 世界 \u0000 "quoted"'
      // Header names with quotes and a backslash, an empty value: the stored headers must survive any escaping.
      await ctx.transaction(async ({ topics }) => {
        await topics.json.produce(
          { k: key, text },
          { headers: { trace: 'ž', 'it\'s \\ "odd"': 'v', "it's": '' } },
        )
        await topics.json.produce(null, { key: 'tomb' })
        await topics.binary.produce(allBytes, {
          key: binaryKey,
          headers: { bin: allBytes, empty: Buffer.alloc(0) },
        })
        await topics.binary.produce(Buffer.from('no key'))
      })
      assert.equal(await ctx.countOutbox(), 4)
      const relay = started(t, ctx.relay({ onAppHandle: true }))
      assert.equal(await relay.drain(), 4)
      await relay.stop()
      const brokers = kafkaBrokers()
      const [jsonRead, binRead] = await Promise.all([
        readTopic({ brokers, topic: jsonName, expectedCount: 2 }),
        readTopic({ brokers, topic: binName, expectedCount: 2 }),
      ])
      const [first, tombstone] = jsonRead
      assert.deepEqual(first?.key, Buffer.from(key))
      assert.deepEqual(JSON.parse(first?.value?.toString('utf8') ?? ''), { k: key, text })
      assert.deepEqual(first?.headers, [
        ['static', Buffer.from('yes')],
        ['trace', Buffer.from('ž')],
        ['it\'s \\ "odd"', Buffer.from('v')],
        ["it's", Buffer.alloc(0)],
      ])
      assert.deepEqual(tombstone?.key, Buffer.from('tomb'))
      assert.equal(tombstone?.value, null)
      const withKey = binRead.find((m) => m.key !== null)
      const noKey = binRead.find((m) => m.key === null)
      assert.deepEqual(withKey?.key, binaryKey)
      assert.deepEqual(withKey?.value, allBytes)
      assert.deepEqual(withKey?.headers, [
        ['bin', allBytes],
        ['empty', Buffer.alloc(0)],
      ])
      assert.deepEqual(noKey?.value, Buffer.from('no key'))
      assert.equal(await ctx.countOutbox(), 0)
    })

    if (caps.directTopics === 'sent') {
      it('sends topics mapped with outbox: false straight to Kafka, without a transaction', async (t) => {
        const topicName = uniqueName('direct').replaceAll('_', '-')
        const ctx = await context(t, harness, {
          topics: { audit: defineTopic<string>({ name: topicName, outbox: false }) },
        })
        await ctx.produceOutsideTransaction('audit', 'sent at once')
        const read = await readTopic({ brokers: kafkaBrokers(), topic: topicName, expectedCount: 1 })
        assert.deepEqual(
          read.map((m) => m.value?.toString()),
          ['sent at once'],
        )
        assert.deepEqual(read[0]?.key, Buffer.from('k'))
      })
    } else {
      it('refuses topics mapped with outbox: false when the outbox is created', async (t) => {
        await assert.rejects(
          context(t, harness, { topics: { audit: defineTopic({ name: 'audit', outbox: false }) } }),
          /outbox: false/,
        )
      })
    }

    it('refuses to produce outside a transaction, rejects bad input before writing, rolls back with the transaction', async (t) => {
      const { ctx } = await orders(t, harness, 1)
      const event = { orderId: 'o', customer: 'c', seq: 1 }
      await assert.rejects(ctx.produceOutsideTransaction('orders', event), (error: unknown) => {
        assert.equal((error as KEntityError).code, ErrorCodes.NO_TRANSACTION)
        assert.match((error as Error).message, /transaction/)
        return true
      })
      for (const handle of ctx.invalidHandles) {
        assert.throws(() => ctx.inWith(handle), { code: ErrorCodes.INVALID_ARGUMENT })
      }
      await assert.rejects(
        ctx.transaction(({ topics }) => topics.orders.produceMany([event, { bad: 1n } as never])),
        { code: ErrorCodes.SERIALIZATION_FAILED },
      )
      await assert.rejects(
        ctx.transaction(async ({ topics, insertOrders }) => {
          await insertOrders([{ id: event.orderId, customer: event.customer }])
          await topics.orders.produce(event)
          throw new RollbackOnPurpose()
        }),
        RollbackOnPurpose,
      )
      assert.equal(await ctx.countOutbox(), 0)
      assert.equal(await ctx.countOrders(), 0)
    })

    it(`migrations: a relay before them is told so, the printed script does what migrate() does${caps.idempotentScript ? ' and is idempotent' : ''}, concurrent runs apply once`, async (t) => {
      const versions = harness.migrations
      const current = versions.at(-1)
      const scripted = await context(t, harness, { topics: { orders: orderTopic('orders') }, migrate: false })
      const relay = started(t, scripted.relay())
      await assert.rejects(relay.runOnce(), { code: ErrorCodes.NOT_MIGRATED })
      await relay.stop()
      assert.match(scripted.migrationSql(), /CREATE TABLE/)
      // A DBA applies the printed script with their own tooling; migrate() then finds nothing to do.
      await scripted.runMigrationScript()
      assert.deepEqual(await scripted.migrationVersions(), versions)
      assert.deepEqual(await scripted.migrate(), { applied: [], current })
      if (caps.idempotentScript) {
        // The script applies cleanly over an existing outbox and records nothing twice.
        await scripted.runMigrationScript()
        assert.deepEqual(await scripted.migrationVersions(), versions)
      }
      await scripted.checkMigratedObjects?.()
      const concurrent = await context(t, harness, {
        topics: { orders: orderTopic('orders') },
        migrate: false,
      })
      const results = await Promise.all([concurrent.migrate(), concurrent.migrate()])
      assert.deepEqual(results.map((r) => r.applied).sort(), [[], versions])
      assert.deepEqual(await concurrent.migrate(), { applied: [], current })
    })

    it('producers locking overlapping keys in opposite orders never deadlock', async (t) => {
      const { ctx } = await orders(t, harness, 1)
      const keys = Array.from({ length: 20 }, (_, i) => `customer-${i}`)
      let n = 0
      await Promise.all(
        Array.from({ length: 6 }, async (_, w) => {
          for (let round = 0; round < 40; round++) {
            const ordered = w % 2 === 0 ? keys : [...keys].reverse()
            await ctx.transaction(({ topics }) =>
              topics.orders.produceMany(
                ordered.map((customer) => ({ orderId: `o-${n++}`, customer, seq: 1 })),
              ),
            )
          }
        }),
      )
      assert.equal(await ctx.countOutbox(), 6 * 40 * 20)
    })

    registerIf(
      caps.parallelTransactions,
      'concurrent producers of one key: the second waits until the first commits or rolls back, so id order = commit order',
      'one writer at a time: transactions cannot overlap',
      async (t) => {
        const { ctx } = await orders(t, harness, 1)
        const open = ctx.openTransaction as NonNullable<typeof ctx.openTransaction>
        const event = (orderId: string, customer: string): OrderEvent => ({ orderId, customer, seq: 1 })
        const hash = (customer: string) =>
          orderTopic('x').toRecord(event('x', customer)).orderingHash as number
        if (ctx.keyLock) {
          assert.notEqual(
            ctx.keyLock(hash('customer-k')),
            ctx.keyLock(hash('customer-other')),
            'test keys must not share a lock',
          )
        }
        for (const outcome of ['commit', 'rollback'] as const) {
          const [first, second, other] = await Promise.all([open(), open(), open()])
          try {
            await first.topics.orders.produce(event(`first-${outcome}`, 'customer-k'))
            let secondStored = false
            const secondProduce = second.topics.orders
              .produce(event(`second-${outcome}`, 'customer-k'))
              .then(() => {
                secondStored = true
              })
            // Another key is not held up by the first transaction.
            await other.topics.orders.produce(event(`other-${outcome}`, 'customer-other'))
            await other.commit()
            await sleep(300)
            assert.equal(
              secondStored,
              false,
              'the second producer of the key waits for the first transaction',
            )
            if (outcome === 'commit') await first.commit()
            else await first.rollback()
            await secondProduce
            await second.commit()
          } finally {
            for (const tx of [first, second, other]) await tx.release()
          }
        }
        const order = (await ctx.outboxValues())
          .map((value) => JSON.parse(value) as OrderEvent)
          .filter((e) => e.customer === 'customer-k')
          .map((e) => e.orderId)
        assert.deepEqual(order, ['first-commit', 'second-commit', 'second-rollback'])
      },
    )

    registerIf(
      caps.deadlock !== undefined,
      'after a deadlock ended the transaction, produce() on it is refused and writes nothing',
      'no deadlocks: one writer at a time',
      async (t) => {
        const { ctx } = await orders(t, harness, 1)
        const open = ctx.openTransaction as NonNullable<typeof ctx.openTransaction>
        await ctx.transaction(({ insertOrders }) =>
          insertOrders([
            { id: 'a', customer: 'x' },
            { id: 'b', customer: 'x' },
          ]),
        )
        const [first, second] = await Promise.all([open(), open()])
        try {
          await first.updateOrder('a', 'first')
          await second.updateOrder('b', 'second')
          const outcomes = await Promise.allSettled([
            first.updateOrder('b', 'first'),
            sleep(200).then(() => second.updateOrder('a', 'second')),
          ])
          const victimIndex = outcomes.findIndex((o) => o.status === 'rejected')
          assert.ok(victimIndex >= 0, 'one transaction is the deadlock victim')
          assert.equal(
            ((outcomes[victimIndex] as PromiseRejectedResult).reason as { code?: string }).code,
            caps.deadlock?.driverCode,
          )
          const [victim, survivor] = victimIndex === 0 ? [first, second] : [second, first]
          await assert.rejects(victim.topics.orders.produce({ orderId: 'after', customer: 'c', seq: 1 }), {
            code: caps.deadlock?.produceFails,
          })
          await victim.rollback().catch(() => {})
          await survivor.commit()
        } finally {
          await first.release()
          await second.release()
        }
        assert.equal(await ctx.countOutbox(), 0)
      },
    )

    registerIf(
      caps.syncTransactions,
      "the app's own synchronous transactions, 20% rolled back, relayed on the app's handle meanwhile",
      'the driver has no synchronous transactions',
      async (t) => {
        const { ctx, topicName } = await orders(t, harness, 3)
        const syncTransaction = ctx.syncTransaction as NonNullable<typeof ctx.syncTransaction>
        const relay = started(t, ctx.relay({ pollingInterval: 20, onAppHandle: true }))
        await relay.start()
        const committed: TrackedMessage[] = []
        const rolledBack: TrackedMessage[] = []
        const seqs = new Map<string, number>()
        for (let i = 0; i < 500; i++) {
          const customer = `customer-${i % 7}`
          const seq = (seqs.get(customer) ?? 0) + 1
          seqs.set(customer, seq)
          const tracked = { id: `order-${i}`, key: customer, seq }
          try {
            syncTransaction(({ insertOrder, produce }) => {
              insertOrder(tracked.id, customer)
              produce('orders', { orderId: tracked.id, customer, seq })
              if (i % 5 === 2) throw new RollbackOnPurpose()
            })
            committed.push(tracked)
          } catch (error) {
            if (!(error instanceof RollbackOnPurpose)) throw error
            rolledBack.push(tracked)
          }
          // The app's event loop keeps turning between requests; the relay runs in those gaps.
          if (i % 10 === 0) await yieldToRelay()
        }
        assert.equal(rolledBack.length, 100)
        const { report } = await assertDelivered(ctx, topicName, committed, { forbidden: rolledBack })
        await relay.stop()
        assert.equal(report.phantom, 0)
        assert.equal(await ctx.countOrders(), committed.length, 'business rows = commits')
      },
    )

    it('a message Kafka refuses for good is dead-lettered with its history, the rest of its key follows; list, replay, purge, stats', {
      todo: harness.knownBugs?.['dead-letters'],
    }, async (t) => {
      const { ctx, topicName } = await orders(t, harness, 2)
      const refusing = refusingKafka()
      t.after(() => refusing.close())
      const events = [
        { orderId: 'before', customer: 'k', seq: 1 },
        { orderId: 'poison', customer: 'k', seq: 2 },
        { orderId: 'after', customer: 'k', seq: 3 },
        { orderId: 'elsewhere', customer: 'j', seq: 1 },
      ]
      await ctx.transaction(({ topics }) => topics.orders.produceMany(events))
      const failures: RelayEvent[] = []
      const relay = started(
        t,
        ctx.relay({
          kafka: refusing,
          onEvent: (e) => {
            if (e.type === 'message-failed') failures.push(e)
          },
        }),
      )
      // The first batch isolates the poison message and holds back the later message of its key.
      while ((await relay.runOnce()) > 0);
      await relay.stop()
      assert.equal(await ctx.countOutbox(), 0)
      const expected = events.filter((e) => e.orderId !== 'poison').map(tracked)
      await assertDelivered(ctx, topicName, expected, { forbidden: [{ id: 'poison' }] })
      assert.equal(failures.length, 1)
      assert.deepEqual(await ctx.stats(), { pending: 0, retrying: 0, deadLetters: 1, oldestPendingMs: 0 })
      const deadLetters = ctx.deadLetters()
      const [dead] = await deadLetters.list({ topic: topicName })
      assert.equal(await deadLetters.count(), 1)
      assert.match(dead?.value?.toString() ?? '', /"poison"/)
      assert.deepEqual(dead?.key, Buffer.from('k'))
      assert.ok(dead?.headers.some(([name]) => name === 'event-type'))
      assert.equal(dead?.attempts, 1)
      assert.equal(dead?.errors.length, 1)
      assert.match(dead?.errors[0]?.error ?? '', /record too large/)
      await assert.rejects(deadLetters.purge({}), { code: ErrorCodes.INVALID_ARGUMENT })
      await assert.rejects(deadLetters.replay({}), { code: ErrorCodes.INVALID_ARGUMENT })
      // Replayed, it is a message of its key again, behind everything produced meanwhile.
      assert.equal(await deadLetters.replay({ ids: [dead?.id as string] }), 1)
      assert.equal(await ctx.countOutbox(), 1)
      assert.equal(await deadLetters.count(), 0)
      const again = started(t, ctx.relay({ kafka: refusing }))
      await again.runOnce()
      await again.stop()
      assert.equal(await deadLetters.purge({ topic: topicName }), 1)
      assert.deepEqual(await ctx.stats(), { pending: 0, retrying: 0, deadLetters: 0, oldestPendingMs: 0 })
    })

    it("retries a failed message after its backoff on the database's clock, with the relay's clock an hour ahead", async (t) => {
      const topicName = uniqueName('clock').replaceAll('_', '-')
      await createTopic(topicName, 1)
      const topic = defineTopic<{ id: string; key: string; seq: number }>({
        name: topicName,
        key: (m) => m.key,
        headers: (m) => trackingHeaders(m.id, m.seq),
      })
      const ctx = await context(t, harness, { topics: { events: topic } })
      const expected = [
        { id: 'poison', key: 'a', seq: 1 },
        { id: 'fine', key: 'b', seq: 1 },
        { id: 'after-poison', key: 'a', seq: 2 },
      ]
      await ctx.transaction(({ topics }) => topics.events.produceMany(expected))
      const flaky = flakyKafka('poison')
      const events: RelayEvent[] = []
      const relay = started(
        t,
        ctx.relay({
          kafka: flaky,
          now: () => Date.now() + HOUR,
          retryBackoff: { initial: 250, max: 1000 },
          onEvent: (event) => events.push(event),
        }),
      )
      const startedAt = Date.now()
      await relay.start()
      await waitFor(async () => (await ctx.countOutbox()) === 0, { what: 'outbox drained', timeout: 30_000 })
      const tookMs = Date.now() - startedAt
      await relay.stop({ timeout: 2000 })
      const failed = events.find((e) => e.type === 'message-failed')
      assert.ok(failed && failed.type === 'message-failed', 'the poison message failed once on its own')
      assert.equal(failed.deadLettered, false)
      // The event's time is the relay's (wrong) clock, an hour ahead: for observers only.
      assert.ok((failed.retryAt?.getTime() ?? 0) > Date.now() + HOUR / 2)
      await assertDelivered(ctx, topicName, expected)
      console.log(`# ${harness.name}: all delivered ${tookMs} ms after the relay started`)
      assert.ok(tookMs < 20_000)
    })

    it(`modes: ${lacking.length > 0 ? `${lacking.join(' and ')} refused, saying why; ` : ''}invalid relay options refused`, async (t) => {
      const { ctx } = await orders(t, harness, 1)
      for (const mode of lacking) {
        assert.throws(
          () => ctx.relay({ mode }),
          (error: unknown) => {
            assert.equal((error as KEntityError).code, ErrorCodes.INVALID_ARGUMENT)
            assert.match((error as Error).message, caps.refusedModeMessage)
            return true
          },
        )
      }
      for (const options of ctx.invalidRelayOptions) {
        assert.throws(
          () => ctx.relayWith(options),
          { code: ErrorCodes.INVALID_ARGUMENT },
          JSON.stringify(options),
        )
      }
    })

    if (caps.secondRelay === 'refused') {
      it('a second relay of the outbox is refused while the first runs, and runs once it stopped', async (t) => {
        const { ctx } = await orders(t, harness, 1)
        const first = started(t, ctx.relay({ onAppHandle: true }))
        assert.equal(await first.runOnce(), 0)
        // Another handle on the same database is the same outbox.
        const second = started(t, ctx.relay())
        await assert.rejects(second.runOnce(), { code: ErrorCodes.RELAY_RUNNING })
        await first.stop()
        assert.equal(await second.runOnce(), 0)
        await second.stop()
      })
    } else {
      it('single mode: a second single relay stands by, says why, and takes over when the first stops', async (t) => {
        const { ctx, topicName } = await orders(t, harness, 2)
        const log: (RelayEvent & { relay: number })[] = []
        const [first, second] = [0, 1].map((i) =>
          started(
            t,
            ctx.relay({
              pollingInterval: 50,
              leaderCheckInterval: 200,
              logger: false,
              onEvent: (e) => log.push({ ...e, relay: i }),
            }),
          ),
        ) as [OutboxRelay, OutboxRelay]
        await first.start()
        await waitFor(() => first.isLeader, { what: 'the first relay leading' })
        await second.start()
        await waitFor(
          () => log.some((e) => e.relay === 1 && e.type === 'leadership' && !e.leader && e.reason),
          {
            what: 'the second relay saying why it stands by',
          },
        )
        const workload = await runWorkload(ctx, {
          transactions: 20,
          writers: 1,
          keysPerWriter: 3,
          rollbackRate: 0,
        })
        await waitFor(async () => (await ctx.countOutbox()) === 0, { what: 'the first relay draining' })
        assert.equal(deliveredBy(log, 1), 0, 'the standby delivered nothing')
        assert.equal(second.isLeader, false)
        await first.stop()
        const more = await runWorkload(ctx, {
          transactions: 10,
          writers: 1,
          keysPerWriter: 3,
          rollbackRate: 0,
          prefix: 'later',
        })
        await waitFor(async () => (await ctx.countOutbox()) === 0, {
          what: 'the standby taking over',
          timeout: 15_000,
        })
        assert.equal(deliveredBy(log, 1), 10)
        await second.stop()
        const consumed = await readTopic({ brokers: kafkaBrokers(), topic: topicName, expectedCount: 30 })
        assert.equal(consumed.length, 30)
        const ids = new Set(
          consumed.map((m) => String(m.headers.find(([name]) => name === 'ke-check-id')?.[1])),
        )
        for (const m of [...workload.committed, ...more.committed])
          assert.ok(ids.has(m.id), `${m.id} delivered`)
      })
    }

    registerIf(
      caps.modes.includes('concurrent'),
      'concurrent mode: four relays share 10,000 messages over 64 keys without breaking per-key order',
      'no concurrent mode',
      async (t) => {
        const { ctx, topicName } = await orders(t, harness, 8)
        const shares = new Map<number, number>()
        const relays = [0, 1, 2, 3].map((i) =>
          started(
            t,
            ctx.relay({
              mode: 'concurrent',
              pollingInterval: 20,
              maxMessagesPerPoll: 200,
              onEvent: (e) => {
                if (e.type === 'delivered') shares.set(i, (shares.get(i) ?? 0) + e.count)
              },
            }),
          ),
        )
        for (const relay of relays) await relay.start()
        const workload = await runWorkload(ctx, {
          transactions: 250,
          messagesPerTransaction: 40,
          writers: 4,
          keysPerWriter: 16,
          rollbackRate: 0.1,
        })
        const { report } = await assertDelivered(ctx, topicName, workload.committed, {
          forbidden: workload.rolledBack,
          timeout: 120_000,
        })
        for (const relay of relays) await relay.stop()
        const counts = [...shares.values()]
        assert.equal(
          counts.reduce((a, b) => a + b, 0),
          workload.committed.length,
          'every row deleted exactly once across relays',
        )
        assert.ok(
          counts.filter((n) => n > 0).length >= 2,
          `work was not shared: ${JSON.stringify([...shares])}`,
        )
        console.log(
          `# concurrent shares: ${JSON.stringify([...shares.entries()])}, duplicates ${report.duplicates}`,
        )
      },
    )

    registerIf(
      caps.modes.includes('concurrent') && caps.fencing,
      'concurrent mode: a relay whose session is killed mid-batch loses its claim to the others; nothing lost, order kept',
      'no concurrent mode, or no session to end',
      async (t) => {
        const { ctx, topicName } = await orders(t, harness, 4, ['r0', 'r1', 'r2'])
        const workload = await runWorkload(ctx, {
          transactions: 50,
          messagesPerTransaction: 20,
          writers: 2,
          keysPerWriter: 8,
          rollbackRate: 0,
        })
        const errors: { relay: number; stage: string }[] = []
        // The victim (relay 0) is held in its first send, its claim open, until the test lets it go.
        let victimSending: () => void = () => {}
        const victimCaught = new Promise<void>((resolve) => {
          victimSending = resolve
        })
        let releaseVictim: () => void = () => {}
        const victimReleased = new Promise<void>((resolve) => {
          releaseVictim = resolve
        })
        t.after(() => releaseVictim())
        let victimHeld = false
        const relays = [0, 1, 2].map((i) => {
          const kafka = new KafkaTransport({ brokers: kafkaBrokers(), autoCreateTopics: true })
          return started(
            t,
            ctx.relay({
              tag: `r${i}`,
              mode: 'concurrent',
              // One claim session per relay, so that ending it ends the victim's only open claim.
              pipeline: false,
              pollingInterval: 20,
              maxMessagesPerPoll: 50,
              retryBackoff: { initial: 50, max: 500 },
              kafka: {
                async send(records: readonly OutboxRecord[]) {
                  if (i === 0 && !victimHeld) {
                    victimHeld = true
                    victimSending()
                    await victimReleased
                  } else {
                    // Slow sends, so that the others' claims overlap.
                    await sleep(300)
                  }
                  await kafka.send(records)
                },
                close: () => kafka.close(),
              },
              onEvent: (e) => {
                if (e.type === 'error') errors.push({ relay: i, stage: e.stage })
              },
            }),
          )
        })
        // The victim starts alone, so that it is sure to claim a batch before the others drain it.
        await relays[0]?.start()
        await victimCaught
        for (const relay of relays.slice(1)) await relay.start()
        await ctx.killSession?.('r0', 'claim')
        // Only now does Kafka get the batch: the victim's acknowledgement must find its session gone.
        releaseVictim()
        await waitFor(() => errors.some((e) => e.relay === 0 && e.stage === 'acknowledge'), {
          what: 'the killed relay failing to acknowledge',
          timeout: 15_000,
        })
        const { report } = await assertDelivered(ctx, topicName, workload.committed)
        for (const relay of relays) await relay.stop()
        console.log(`# killed one of three concurrent relays mid-batch; duplicates: ${report.duplicates}`)
      },
    )

    registerIf(
      caps.modes.includes('exclusive') && caps.fencing,
      'exclusive mode: one leader; when its session is killed the other takes over and the deposed one deletes nothing',
      'no exclusive mode, or no session to end',
      async (t) => {
        const { ctx, topicName } = await orders(t, harness, 3, ['r0', 'r1'])
        const log: (RelayEvent & { relay: number; at: number })[] = []
        const sending: { relay: number; at: number }[] = []
        const relays = [0, 1].map((i) => {
          const kafka = new KafkaTransport({
            brokers: kafkaBrokers(),
            autoCreateTopics: true,
            retries: 2,
            requestTimeout: 5000,
          })
          return started(
            t,
            ctx.relay({
              tag: `r${i}`,
              mode: 'exclusive',
              pollingInterval: 100,
              leaderCheckInterval: 200,
              maxMessagesPerPoll: 50,
              retryBackoff: { initial: 100, max: 1000 },
              // Every batch takes 1.5 s to send, so the leader is caught mid-batch when its session ends.
              kafka: {
                async send(records: readonly OutboxRecord[]) {
                  sending.push({ relay: i, at: Date.now() })
                  await sleep(1500)
                  await kafka.send(records)
                },
                close: () => kafka.close(),
              },
              onEvent: (event) => log.push({ ...event, relay: i, at: Date.now() }),
            }),
          )
        })
        const leaders = () => {
          const latest = new Map<number, boolean>()
          for (const e of log) if (e.type === 'leadership') latest.set(e.relay, e.leader)
          return [...latest].filter(([, leader]) => leader).map(([relay]) => relay)
        }
        for (const relay of relays) await relay.start()
        await waitFor(() => leaders().length === 1, { what: 'a leader' })
        await sleep(1000)
        assert.equal(leaders().length, 1, 'exactly one leader while both run')
        const firstLeader = leaders()[0] as number
        const expected = Array.from({ length: 400 }, (_, i) => ({
          orderId: `m-${i}`,
          customer: `k-${i % 10}`,
          seq: Math.floor(i / 10) + 1,
        }))
        for (let i = 0; i < expected.length; i += 50) {
          await ctx.transaction(({ topics }) => topics.orders.produceMany(expected.slice(i, i + 50)))
        }
        await waitFor(() => sending.some((s) => s.relay === firstLeader), { what: 'the leader sending' })
        assert.equal(
          await ctx.leaderTag?.(),
          `r${firstLeader}`,
          'the leader holds the leader lock on its session',
        )
        const killedAt = Date.now()
        await ctx.killSession?.(`r${firstLeader}`, 'leader')
        // Normally the standby takes over; the deposed leader may win the lock back when it
        // reconnects first (a race a loaded machine can tip), which is as safe: then it must
        // delete nothing between the end of its session and its re-election.
        const newLeader = () => log.find((e) => e.type === 'leadership' && e.leader && e.at > killedAt)
        await waitFor(() => newLeader() !== undefined, { what: 'takeover', timeout: 15_000 })
        const takeover = newLeader() as RelayEvent & { relay: number; at: number }
        const reelectedAt = takeover.relay === firstLeader ? takeover.at : Number.POSITIVE_INFINITY
        const takeoverMs = takeover.at - killedAt
        assert.ok(takeoverMs < 5000, `takeover took ${takeoverMs} ms`)
        await waitFor(
          () => log.some((e) => e.relay === firstLeader && e.type === 'error' && e.stage === 'acknowledge'),
          { what: 'the deposed leader failing to acknowledge its batch' },
        )
        const { report } = await assertDelivered(ctx, topicName, expected.map(tracked))
        const total = log.filter((e) => e.type === 'delivered').reduce((sum, e) => sum + e.count, 0)
        assert.equal(total, expected.length, 'every row deleted exactly once')
        const deletedWhileDeposed = log.filter(
          (e) => e.relay === firstLeader && e.type === 'delivered' && e.at > killedAt && e.at < reelectedAt,
        )
        assert.equal(
          deletedWhileDeposed.length,
          0,
          'the deposed leader deleted nothing after its session ended',
        )
        if (takeover.relay !== firstLeader) assert.equal(relays[firstLeader]?.isLeader, false)
        for (const relay of relays) await relay.stop()
        console.log(
          `# takeover after kill: ${takeoverMs} ms by the ${takeover.relay === firstLeader ? 'deposed leader, re-elected' : 'standby'}; duplicates from the interrupted batch: ${report.duplicates}`,
        )
      },
    )

    registerIf(
      caps.listen,
      'listen: a commit by another outbox object wakes an idle relay long before its polling interval',
      'no commit notification across outbox objects: the relay finds such commits by polling',
      async (t) => {
        const { ctx, topicName } = await orders(t, harness, 1)
        const relay = started(t, ctx.relay({ pollingInterval: 60_000 }))
        await relay.start()
        // Let the relay's first poll find nothing and go idle.
        await sleep(500)
        const other = await (ctx.otherWriter as NonNullable<typeof ctx.otherWriter>)()
        t.after(() => other.close())
        const committedAt = Date.now()
        await other.transaction(({ topics }) =>
          topics.orders.produce({ orderId: 'woken', customer: 'k', seq: 1 }),
        )
        await waitFor(async () => (await ctx.countOutbox()) === 0, {
          what: 'the woken relay to deliver',
          timeout: 10_000,
        })
        const wokenMs = Date.now() - committedAt
        const consumed = await readTopic({ brokers: kafkaBrokers(), topic: topicName, expectedCount: 1 })
        assert.equal(consumed.length, 1)
        assert.ok(wokenMs < 10_000, `delivered ${wokenMs} ms after the commit`)
      },
    )

    const pipelineCase = 'pipeline: true claims the next batch while one is sent, and keeps per-key order'
    if (caps.pipeline) {
      it(pipelineCase, async (t) => {
        const { ctx, topicName } = await orders(t, harness, 4)
        const workload = await runWorkload(ctx, {
          transactions: 40,
          messagesPerTransaction: 50,
          writers: 4,
          keysPerWriter: 8,
          rollbackRate: 0,
        })
        const relay = started(t, ctx.relay({ pipeline: true, maxMessagesPerPoll: 100 }))
        assert.equal(await relay.drain(), workload.committed.length)
        await relay.stop()
        await assertDelivered(ctx, topicName, workload.committed)
      })
    } else {
      it('pipeline: true is refused where the store cannot pipeline, never ignored', async (t) => {
        const { ctx } = await orders(t, harness, 1)
        assert.throws(() => ctx.relay({ pipeline: true }), { code: ErrorCodes.INVALID_ARGUMENT })
      })
    }
  })
}

/** Registers `fn`, or a skipped test saying why the store does not have the capability. */
function registerIf(
  applies: boolean,
  name: string,
  why: string,
  fn: (t: TestContext) => Promise<void>,
): void {
  if (applies) it(name, fn)
  else it(name, { skip: why }, () => {})
}

/** A context whose teardown runs after the test, whatever happens. */
async function context<M extends TopicMap>(
  t: TestContext,
  harness: StoreHarness,
  options: Omit<StoreSetupOptions<M>, 'name' | 'brokers'>,
): Promise<StoreContext<M>> {
  const ctx = await harness.setup({ ...options, name: uniqueName('ke_rs'), brokers: kafkaBrokers() })
  t.after(() => ctx.teardown())
  return ctx
}

/** A context with the `orders` topic on a new Kafka topic of `partitions` partitions. */
async function orders(t: TestContext, harness: StoreHarness, partitions: number, tags?: readonly string[]) {
  const topicName = uniqueName('orders').replaceAll('_', '-')
  await createTopic(topicName, partitions)
  const ctx = await context<Orders>(t, harness, { topics: { orders: orderTopic(topicName) }, tags })
  return { ctx, topicName }
}

/** Stopped after the test even when an assertion fails, or the open relay would keep the process alive. */
function started(t: TestContext, relay: OutboxRelay): OutboxRelay {
  t.after(() => relay.stop())
  return relay
}

function deliveredBy(log: readonly (RelayEvent & { relay: number })[], relay: number): number {
  return log.reduce((sum, e) => sum + (e.relay === relay && e.type === 'delivered' ? e.count : 0), 0)
}

function assertJavaPartitioning(consumed: readonly ConsumedMessage[], partitions: number): void {
  for (const message of consumed) {
    // Java's DefaultPartitioner: toPositive(murmur2(key)) % partitions.
    const expected = (murmur2(message.key as Buffer) & 0x7fffffff) % partitions
    assert.equal(message.partition, expected, `key ${message.key} landed on ${message.partition}`)
  }
}

/**
 * Waits for the outbox to drain, reads the topic back and checks it: every expected message,
 * nothing forbidden, per-key order kept.
 */
async function assertDelivered(
  ctx: StoreContext<TopicMap>,
  topic: string,
  expected: readonly TrackedMessage[],
  { forbidden, timeout = 60_000 }: { forbidden?: readonly { id: string }[]; timeout?: number } = {},
) {
  await waitFor(async () => (await ctx.countOutbox()) === 0, { what: 'the outbox to drain', timeout })
  const consumed = await readTopic({ brokers: kafkaBrokers(), topic, expectedCount: expected.length })
  const report = checkDelivery({ expected, forbidden, observed: observedFromConsumed(consumed) })
  assert.ok(report.ok, formatReport(report))
  return { report, consumed }
}

function tracked(event: OrderEvent): TrackedMessage {
  return { id: event.orderId, key: event.customer, seq: event.seq }
}

interface Workload {
  transactions: number
  /** Writers run in parallel; each owns its keys, so its sequence numbers are commit order. */
  writers: number
  keysPerWriter: number
  messagesPerTransaction?: number
  rollbackRate: number
  /** Order ids start with it (default `order`), so that a second workload in one test has its own. */
  prefix?: string
}

/**
 * Business transactions inserting order rows and producing one event per order in the same
 * transaction, some rolled back on purpose. Returns what must and must not be delivered.
 */
async function runWorkload(ctx: StoreContext<Orders>, options: Workload) {
  const committed: TrackedMessage[] = []
  const rolledBack: TrackedMessage[] = []
  let begun = 0
  const writer = async (w: number) => {
    const seqs = new Map<string, number>()
    while (begun < options.transactions) {
      const txNo = begun++
      const events: OrderEvent[] = []
      for (let m = 0; m < (options.messagesPerTransaction ?? 1); m++) {
        const customer = `customer-${w}-${Math.floor(Math.random() * options.keysPerWriter)}`
        const seq = (seqs.get(customer) ?? 0) + 1
        seqs.set(customer, seq)
        events.push({ orderId: `${options.prefix ?? 'order'}-${txNo}-${m}`, customer, seq })
      }
      const tracked = events.map((e) => ({ id: e.orderId, key: e.customer, seq: e.seq }))
      const rollback = Math.random() < options.rollbackRate
      try {
        await ctx.transaction(async ({ topics, insertOrders }) => {
          await insertOrders(events.map((e) => ({ id: e.orderId, customer: e.customer })))
          await topics.orders.produceMany(events)
          if (rollback) throw new RollbackOnPurpose()
        })
        committed.push(...tracked)
      } catch (error) {
        if (!(error instanceof RollbackOnPurpose)) throw error
        rolledBack.push(...tracked)
      }
    }
  }
  await Promise.all(Array.from({ length: options.writers }, (_, w) => writer(w)))
  return { committed, rolledBack }
}

/** Real Kafka, except that it refuses for good any batch carrying the "poison" order. */
function refusingKafka() {
  const kafka = new KafkaTransport({ brokers: kafkaBrokers(), autoCreateTopics: true })
  return {
    async send(records: readonly OutboxRecord[]) {
      if (records.some((r) => r.value?.toString().includes('"poison"'))) {
        throw new KEntityError(ErrorCodes.TRANSPORT_FAILED, 'record too large (simulated)', {
          retryable: false,
        })
      }
      await kafka.send(records)
    },
    close: () => kafka.close(),
  }
}

/**
 * Real Kafka, except that the first 4 sends carrying `poisonId` fail as a broker hiccup would:
 * the relay retries its batch twice, then sends the messages one by one, finds the poison
 * message failing alone and records that failure with a retry time.
 */
function flakyKafka(poisonId: string) {
  const kafka = new KafkaTransport({ brokers: kafkaBrokers() })
  let refusals = 0
  return {
    async send(records: readonly OutboxRecord[]) {
      const carries = records.some((r) =>
        r.headers.some(([name, value]) => name === 'ke-check-id' && String(value) === poisonId),
      )
      if (carries && refusals < 4) {
        refusals++
        throw new KEntityError(ErrorCodes.TRANSPORT_FAILED, 'injected transient failure', { retryable: true })
      }
      await kafka.send(records)
    },
    close: () => kafka.close(),
  }
}
