/**
 * The inbox contract: `outbox.consume()` runs the handler inside a transaction of the adapter's
 * own data layer, with the inbox row, for every adapter whose database has the inbox. The handler
 * inserts its business row through the transaction it is given; each message's effect must exist
 * once, a repeated message id is skipped, and a throwing handler's write is rolled back and its
 * message dead-lettered. Real database, real Kafka; "handled" means the effect row is there.
 *
 * On SQLite the handler is synchronous (its drivers are): the same handler, without awaits, and
 * an async one refused with KE_INVALID_ARGUMENT saying why.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { KafkaConsumer } from '../../src/consumer/kafka-consumer.ts'
import { isKEntityError } from '../../src/core/errors.ts'
import { MESSAGE_ID_HEADER } from '../../src/core/topic.ts'
import { produceRaw } from '../consumer/kafka.ts'
import { createTopic, kafkaBrokers, uniqueName, waitFor } from '../support/env.ts'
import { orderTopic } from '../support/workload.ts'
import type { ContractHarness } from './adapter-contract.ts'

const DISTINCT = 24
/** Every fourth message is sent twice with the same message id, as a relay may. */
const RESENT_EVERY = 4
/** Distinct messages produced at once, for the batch case. */
const BATCHED = 60

type Order = { value: { orderId: string; customer: string } }

interface InboxOutbox {
  consume(topic: unknown, options: Record<string, unknown>): KafkaConsumer<unknown>
  migrateInbox(target?: unknown): void | Promise<void>
}

export function runInboxContract<Tx>(harness: ContractHarness<Tx>): void {
  describe(`inbox contract: ${harness.name} on ${harness.dialect}`, () => {
    const synchronous = harness.dialect === 'sqlite'
    if (synchronous) {
      it('an async handler is refused with KE_INVALID_ARGUMENT saying why it must be synchronous', async () => {
        await withInbox(harness, async ({ outbox, db, topic, brokers }) => {
          assert.throws(
            () =>
              outbox.consume(topic, {
                groupId: 'g',
                db,
                kafka: { brokers },
                handler: async () => {},
                logger: false,
              }),
            (error: unknown) =>
              isKEntityError(error, 'KE_INVALID_ARGUMENT') &&
              /SQLite: the handler is an async function; the handler must be synchronous/.test(
                (error as Error).message,
              ),
          )
        })
      })
    }
    it("the handler writes through the adapter's transaction: each effect once, a repeated message id skipped, a throwing handler rolled back and dead-lettered", async () => {
      await withInbox(harness, async ({ ctx, outbox, db, target, topic, brokers, insertOrder }) => {
        if (synchronous)
          assert.ok(insertOrder, `harness ${harness.name} gives no synchronous inbox.insertOrder`)
        await outbox.migrateInbox(target)
        const messages: { key: string; value: string; headers: Record<string, string> }[] = []
        for (let i = 0; i < DISTINCT; i++) {
          const event = { orderId: `order-${i}`, customer: `c${i % 5}`, seq: i }
          const message = {
            key: event.customer,
            value: JSON.stringify(event),
            headers: { [MESSAGE_ID_HEADER]: `m-${i}` },
          }
          messages.push(message)
          if (i % RESENT_EVERY === 0) messages.push(message)
        }
        messages.push({
          key: 'bad',
          value: JSON.stringify({ orderId: 'order-bad', customer: 'bad', seq: 0 }),
          headers: { [MESSAGE_ID_HEADER]: 'm-bad' },
        })
        await produceRaw(brokers, topic.name, messages)
        // Kept to explain a failure: a stuck consumer says why only in its log.
        const logged: string[] = []
        const keep = (level: string) => (context: object | string, message?: string) => {
          if (logged.length < 20) logged.push(`${level} ${message ?? ''} ${JSON.stringify(context)}`)
        }
        const logger = { error: keep('error'), warn: keep('warn'), info: () => {}, debug: () => {} }
        const consumer = outbox.consume(topic, {
          groupId: uniqueName('ke-inbox-contract'),
          db,
          logger,
          maxWaitMs: 100,
          retry: { attempts: 2, initialDelayMs: 20 },
          // The same handler either way: the write, then (after it, so that only the rollback
          // can take the row away again) the failure of the bad order.
          handler: synchronous
            ? (message: Order, tx: Tx) => {
                insertOrder?.(tx, message.value.orderId, message.value.customer)
                if (message.value.customer === 'bad') throw new Error('this order cannot be applied')
              }
            : async (message: Order, tx: Tx) => {
                await ctx.insertOrder(tx, message.value.orderId, message.value.customer)
                if (message.value.customer === 'bad') throw new Error('this order cannot be applied')
              },
        })
        try {
          await waitFor(
            () =>
              consumer.counts.handled + consumer.counts.duplicates + consumer.counts.deadLettered >=
              messages.length,
            {
              what: () =>
                `every message handled, skipped or dead-lettered (counts ${JSON.stringify(consumer.counts)}; log: ${logged.join(' | ')})`,
              timeout: 30_000,
            },
          )
        } finally {
          await consumer.close()
        }
        const resent = Math.ceil(DISTINCT / RESENT_EVERY)
        // A second application of an effect would fail on the orders primary key and be
        // dead-lettered, so exact counts here mean each effect happened exactly once.
        assert.equal(
          await ctx.countOrders(),
          DISTINCT,
          'one row per distinct message, none for the failed one',
        )
        assert.equal(consumer.counts.handled, DISTINCT)
        assert.equal(consumer.counts.duplicates, resent)
        assert.equal(consumer.counts.deadLettered, 1)
      })
    })
    it('distinct messages produced together commit in batches: the batch INSERT works through the adapter', async () => {
      await withInbox(harness, async ({ ctx, outbox, db, target, topic, brokers, insertOrder }) => {
        await outbox.migrateInbox(target)
        const messages = Array.from({ length: BATCHED }, (_, i) => ({
          key: `c${i % 7}`,
          value: JSON.stringify({ orderId: `order-${i}`, customer: `c${i % 7}`, seq: i }),
          headers: { [MESSAGE_ID_HEADER]: `b-${i}` },
        }))
        await produceRaw(brokers, topic.name, messages)
        const consumer = outbox.consume(topic, {
          groupId: uniqueName('ke-inbox-batch'),
          db,
          logger: false,
          maxWaitMs: 100,
          handler: synchronous
            ? (message: Order, tx: Tx) => insertOrder?.(tx, message.value.orderId, message.value.customer)
            : (message: Order, tx: Tx) => ctx.insertOrder(tx, message.value.orderId, message.value.customer),
        })
        try {
          await waitFor(() => consumer.counts.handled >= BATCHED, {
            what: () => `every message handled (counts ${JSON.stringify(consumer.counts)})`,
            timeout: 30_000,
          })
        } finally {
          await consumer.close()
        }
        assert.equal(await ctx.countOrders(), BATCHED)
        // A batch that fails falls back to a transaction per message and still handles them all:
        // only this count tells that the batch form itself works with this data layer.
        assert.ok(consumer.counts.batches > 0, `no batch committed: ${JSON.stringify(consumer.counts)}`)
        assert.ok(
          consumer.counts.batches < BATCHED / 2,
          `${consumer.counts.batches} transactions for ${BATCHED} messages: batches mostly failed`,
        )
      })
    })
  })
}

async function withInbox<Tx>(
  harness: ContractHarness<Tx>,
  body: (scope: {
    ctx: Awaited<ReturnType<ContractHarness<Tx>['setup']>>
    outbox: InboxOutbox
    db: unknown
    target: unknown
    topic: ReturnType<typeof orderTopic>
    brokers: string[]
    insertOrder: ((tx: Tx, id: string, customer: string) => void) | undefined
  }) => Promise<void>,
): Promise<void> {
  const brokers = kafkaBrokers()
  const name = uniqueName('inbox-contract').replaceAll('_', '-')
  await createTopic(name, 2, brokers)
  const topic = orderTopic(name)
  const ctx = await harness.setup({ topics: { orders: topic }, schema: uniqueName('ke_inbox_c'), brokers })
  try {
    const inbox = ctx.inbox
    assert.ok(inbox, `harness ${harness.name} gives no inbox access (add inbox: { outbox, db, target })`)
    await body({
      ctx,
      outbox: inbox.outbox as InboxOutbox,
      db: inbox.db,
      target: inbox.target,
      topic,
      brokers,
      insertOrder: inbox.insertOrder,
    })
  } finally {
    await ctx.teardown()
  }
}
