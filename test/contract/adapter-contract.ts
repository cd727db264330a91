/**
 * The adapter contract: the promises every data-layer adapter on every database keeps, checked
 * against the real database and a real Kafka broker, with delivery verified by reading the topic
 * back (`checkDelivery`).
 *
 * Adding an adapter: write a `ContractHarness` (see `harness-pg.ts` for the smallest one) and
 * call `runAdapterContract(harness)` from the test file of its database
 * (`test/contract-<dialect>.test.ts`). Nothing else.
 *
 * Every test gets a fresh Kafka topic and a fresh outbox location (`schema`), so harnesses
 * never share state between tests; `teardown` drops what `setup` created. PostgreSQL harnesses
 * reached over `DATABASE_URL` can take counts and cleanup from `postgres-support.ts`.
 *
 * The cases: commit (row and message together, delivered, outbox emptied); rollback (neither,
 * nothing delivered); produceMany of 200 (one statement, per-key order); exact bytes of keys,
 * headers and payloads; produce without a transaction and with a handle whose transaction ended
 * (both KE_NO_TRANSACTION, nothing written); PostgreSQL only: produce after a failed statement
 * (KE_TRANSACTION_ABORTED); 50 concurrent transactions with 20% rolled back while a relay runs;
 * when the harness has `nested`, a rolled-back savepoint taking its messages with it; and, when it
 * `holdsWrites`, a held write that fails failing the whole transaction, caught or not.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { OutboxRelay, RelayOptions, TopicProducers } from '../../src/index.ts'
import { ErrorCodes } from '../../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  type TrackedMessage,
} from '../../src/testing/index.ts'
import { createTopic, kafkaBrokers, uniqueName, waitFor, withoutOutbox } from '../support/env.ts'
import { type OrderEvent, orderTopic, RollbackOnPurpose } from '../support/workload.ts'

/** The one topic map every contract test uses: `orders`, keyed by customer, with tracking headers. */
export type ContractTopics = { orders: ReturnType<typeof orderTopic> }

export type { OrderEvent }

export interface ContractSetup {
  topics: ContractTopics
  /**
   * A fresh lower-case identifier, unique to this test: the PostgreSQL schema of the outbox and
   * of `orders`, the MySQL database, or whatever isolates one test on the harness's database.
   */
  schema: string
  /** The Kafka broker every relay of this test must send to. */
  brokers: string[]
}

export interface ContractHarness<Tx> {
  /** Shown in the test names, e.g. `drizzle (node-postgres)`. */
  name: string
  dialect: 'postgres' | 'mysql' | 'sqlite'
  /**
   * Creates everything one test needs: an outbox with `topics` at `schema`, migrated; a business
   * table `orders (id text primary key, customer text)` next to it; and the context below.
   */
  setup(options: ContractSetup): Promise<ContractContext<Tx>>
  /**
   * The data layer's own nested transaction (a savepoint) inside `tx`: `fn` runs in it, it is
   * released if `fn` resolves and rolled back to if `fn` throws, and the error is rethrown.
   * Omit it only when the data layer has no nested transactions (the savepoint case is then
   * not registered for this harness).
   */
  nested?: <R>(tx: Tx, fn: (inner: Tx) => Promise<R>) => Promise<R>
  /**
   * `producers` are the topics of the adapter's `transaction()` helper, which hold their writes
   * until the transaction's next query or its COMMIT (PostgreSQL on node-postgres): registers the
   * cases of a held write that fails.
   */
  holdsWrites?: boolean
}

export interface ContractContext<Tx> {
  /**
   * Runs `fn` in the data layer's own transaction (through the adapter's `transaction` helper
   * where it has one): commit if it resolves, rollback if it throws, the error rethrown.
   */
  transaction<R>(fn: (tx: Tx) => Promise<R>): Promise<R>
  /** Inserts one business row into `orders` through the data layer, inside `tx`. */
  insertOrder(tx: Tx, id: string, customer: string): Promise<void>
  /** The adapter's typed producers bound to `tx` (normally `outbox.in(tx)`). */
  producers(tx: Tx): TopicProducers<ContractTopics>
  /**
   * Produces `event` on `orders` through the adapter with the data layer's plain, non-transaction
   * handle (pool, root `db`, ...), as an app that forgot the transaction would. Must reject.
   */
  produceOutsideTransaction(event: OrderEvent): Promise<void>
  /** A relay for this outbox, sending to `brokers`. The suite stops every relay it gets. */
  relay(options?: RelayOptions): OutboxRelay
  /** Rows in the outbox table, read on a separate connection. */
  countOutbox(): Promise<number>
  /** Rows in `orders`, read on a separate connection. */
  countOrders(): Promise<number>
  /**
   * How many distinct SQL statements wrote the rows now in the outbox, when the database can
   * tell (PostgreSQL: distinct `cmin`). Omit it otherwise; the batch case then checks delivery only.
   */
  outboxStatements?(): Promise<number>
  /** Closes connections and drops what `setup` created. */
  teardown(): Promise<void>
  /**
   * For the inbox contract (`inbox-contract.ts`): the outbox, what its `transaction()` takes
   * (`db` of `outbox.consume`), and what its `migrate()` took (for `migrateInbox`). Where the
   * handler must be synchronous (SQLite), `insertOrder` is the synchronous form of the context's.
   */
  inbox?: {
    outbox: unknown
    db: unknown
    target: unknown
    insertOrder?: (tx: Tx, id: string, customer: string) => void
  }
}

const PARTITIONS = 3

export function runAdapterContract<Tx>(harness: ContractHarness<Tx>): void {
  describe(`adapter contract: ${harness.name} on ${harness.dialect}`, () => {
    it('commit stores the business row and the message together, and the message is delivered', async () => {
      await withContext(harness, async ({ ctx, topic, brokers }) => {
        const event = { orderId: 'order-1', customer: 'alice', seq: 1 }
        await ctx.transaction(async (tx) => {
          await ctx.insertOrder(tx, event.orderId, event.customer)
          await ctx.producers(tx).orders.produce(event)
        })
        assert.equal(await ctx.countOrders(), 1)
        assert.equal(await ctx.countOutbox(), 1)
        await drain(ctx, 1)
        assert.equal(await ctx.countOutbox(), 0, 'a delivered message is deleted from the outbox')
        const consumed = await readTopic({ brokers, topic, expectedCount: 1 })
        assertDelivered({ expected: [tracked(event)], consumed })
        const [record] = consumed
        assert.deepEqual(record?.key, Buffer.from('alice'))
        assert.deepEqual(JSON.parse(record?.value?.toString('utf8') ?? 'null'), event)
      })
    })

    it('rollback stores neither the business row nor the message, and nothing is delivered', async () => {
      await withContext(harness, async ({ ctx, topic, brokers }) => {
        const rolledBack = { orderId: 'order-rolled-back', customer: 'bob', seq: 1 }
        await assert.rejects(
          ctx.transaction(async (tx) => {
            await ctx.insertOrder(tx, rolledBack.orderId, rolledBack.customer)
            await ctx.producers(tx).orders.produce(rolledBack)
            throw new RollbackOnPurpose()
          }),
          RollbackOnPurpose,
        )
        assert.equal(await ctx.countOrders(), 0)
        assert.equal(await ctx.countOutbox(), 0)
        // A committed marker proves the relay ran and the topic was read, so "nothing" is not vacuous.
        const marker = { orderId: 'order-marker', customer: 'bob', seq: 2 }
        await ctx.transaction(async (tx) => {
          await ctx.insertOrder(tx, marker.orderId, marker.customer)
          await ctx.producers(tx).orders.produce(marker)
        })
        await drain(ctx, 1)
        const consumed = await readTopic({ brokers, topic, expectedCount: 1 })
        const report = assertDelivered({
          expected: [tracked(marker)],
          forbidden: [tracked(rolledBack)],
          consumed,
        })
        assert.equal(report.phantom, 0)
        assert.equal(consumed.length, 1)
      })
    })

    it('produceMany of 200 in one transaction is one statement and arrives in per-key order', async () => {
      await withContext(harness, async ({ ctx, topic, brokers }) => {
        const seqs = new Map<string, number>()
        const events: OrderEvent[] = Array.from({ length: 200 }, (_, i) => {
          const customer = `customer-${(i * 7) % 9}`
          const seq = (seqs.get(customer) ?? 0) + 1
          seqs.set(customer, seq)
          return { orderId: `order-${i}`, customer, seq }
        })
        await ctx.transaction(async (tx) => {
          await ctx.insertOrder(tx, 'order-batch', 'batch')
          await ctx.producers(tx).orders.produceMany(events)
        })
        assert.equal(await ctx.countOutbox(), 200)
        if (ctx.outboxStatements) assert.equal(await ctx.outboxStatements(), 1, 'one INSERT for the batch')
        await drain(ctx, 200)
        const consumed = await readTopic({ brokers, topic, expectedCount: 200 })
        const report = assertDelivered({ expected: events.map(tracked), consumed })
        assert.equal(report.outOfOrder, 0)
        assert.equal(await ctx.countOutbox(), 0)
      })
    })

    it('keys, headers and payloads keep their exact bytes, including binary and non-ASCII', async () => {
      await withContext(harness, async ({ ctx, topic, brokers }) => {
        const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
        const binaryKey = Buffer.from([0, 1, 0xff, 0x80, 0, 0x5c, 0x22, 0x2c, 0x7b])
        const text = { orderId: 'order-text', customer: 'ключ-🔑-ü "q" \\ {a,b}', seq: 1 }
        const binary = { orderId: 'order-binary', customer: 'Grüße, 世界 \u0000', seq: 1 }
        const unkeyed = { orderId: 'order-unkeyed', customer: 'nobody', seq: 1 }
        await ctx.transaction(async (tx) => {
          const producers = ctx.producers(tx)
          await producers.orders.produce(text, { headers: { trace: 'ž', empty: '' } })
          await producers.orders.produceMany([binary], { key: binaryKey, headers: { bin: allBytes } })
          await producers.orders.produce(unkeyed, { key: null })
        })
        await drain(ctx, 3)
        const consumed = await readTopic({ brokers, topic, expectedCount: 3 })
        const byId = new Map(consumed.map((record) => [header(record.headers, 'ke-check-id'), record]))
        const first = byId.get(text.orderId)
        assert.deepEqual(first?.key, Buffer.from(text.customer))
        assert.deepEqual(JSON.parse(first?.value?.toString('utf8') ?? 'null'), text)
        assert.deepEqual(
          first?.headers.filter(([name]) => name === 'trace' || name === 'empty'),
          [
            ['trace', Buffer.from('ž')],
            ['empty', Buffer.alloc(0)],
          ],
        )
        const second = byId.get(binary.orderId)
        assert.deepEqual(second?.key, binaryKey)
        assert.deepEqual(JSON.parse(second?.value?.toString('utf8') ?? 'null'), binary)
        assert.deepEqual(
          second?.headers.find(([name]) => name === 'bin'),
          ['bin', allBytes],
        )
        assert.equal(byId.get(unkeyed.orderId)?.key, null)
        assert.equal(consumed.length, 3)
      })
    })

    it('producing outside a transaction fails with KE_NO_TRANSACTION and writes nothing', async () => {
      await withContext(harness, async ({ ctx }) => {
        await assert.rejects(
          ctx.produceOutsideTransaction({ orderId: 'order-outside', customer: 'carol', seq: 1 }),
          hasCode(ErrorCodes.NO_TRANSACTION),
        )
        assert.equal(await ctx.countOutbox(), 0)
      })
    })

    it('a transaction handle used after its transaction ended is refused with KE_NO_TRANSACTION', async () => {
      await withContext(harness, async ({ ctx }) => {
        let leaked: Tx | undefined
        await ctx.transaction(async (tx) => {
          leaked = tx
        })
        await assert.rejects(
          ctx.producers(leaked as Tx).orders.produce({ orderId: 'order-late', customer: 'erin', seq: 1 }),
          hasCode(ErrorCodes.NO_TRANSACTION),
        )
        assert.equal(await ctx.countOutbox(), 0)
      })
    })

    if (harness.dialect === 'postgres') {
      it('after a failed statement PostgreSQL aborts the transaction: produce fails with KE_TRANSACTION_ABORTED', async () => {
        await withContext(harness, async ({ ctx }) => {
          await assert.rejects(
            ctx.transaction(async (tx) => {
              await ctx.insertOrder(tx, 'order-dup', 'frank')
              await assert.rejects(ctx.insertOrder(tx, 'order-dup', 'frank'))
              await ctx.producers(tx).orders.produce({ orderId: 'order-dup', customer: 'frank', seq: 1 })
            }),
            hasCode(ErrorCodes.TRANSACTION_ABORTED),
          )
          assert.equal(await ctx.countOutbox(), 0)
          assert.equal(await ctx.countOrders(), 0)
        })
      })
    }

    it('50 concurrent transactions, 20% rolled back: committed ones delivered in order, outbox drained', async () => {
      await withContext(harness, async ({ ctx, topic, brokers }) => {
        const relay = track(ctx.relay({ pollingInterval: 50 }))
        await relay.start()
        const committed: TrackedMessage[] = []
        const rolledBack: TrackedMessage[] = []
        await Promise.all(
          Array.from({ length: 50 }, async (_, i) => {
            // Each transaction owns its key, so seq is commit order for it whatever the interleaving.
            const events = [1, 2].map((seq) => ({
              orderId: `order-${i}-${seq}`,
              customer: `customer-${i}`,
              seq,
            }))
            const rollback = i % 5 === 0
            try {
              await ctx.transaction(async (tx) => {
                for (const event of events) await ctx.insertOrder(tx, event.orderId, event.customer)
                await ctx.producers(tx).orders.produceMany(events)
                if (rollback) throw new RollbackOnPurpose()
              })
              committed.push(...events.map(tracked))
            } catch (error) {
              if (!(error instanceof RollbackOnPurpose)) throw error
              rolledBack.push(...events.map(tracked))
            }
          }),
        )
        assert.equal(committed.length, 80)
        assert.equal(rolledBack.length, 20)
        const consumed = await readTopic({ brokers, topic, expectedCount: committed.length })
        await waitFor(async () => (await ctx.countOutbox()) === 0, { what: 'the relay to empty the outbox' })
        const report = assertDelivered({ expected: committed, forbidden: rolledBack, consumed })
        assert.equal(report.phantom, 0)
        assert.equal(await ctx.countOrders(), committed.length, 'business rows = committed orders')
      })
    })

    if (harness.holdsWrites === true && harness.dialect === 'postgres') heldWriteCases(harness)

    const nested = harness.nested
    if (nested !== undefined) {
      it('a rolled-back nested transaction (savepoint) takes its messages with it', async () => {
        await withContext(harness, async ({ ctx, topic, brokers }) => {
          const outer = { orderId: 'order-outer', customer: 'dave', seq: 1 }
          const discarded = { orderId: 'order-discarded', customer: 'dave', seq: 2 }
          const kept = { orderId: 'order-kept', customer: 'dave', seq: 3 }
          await ctx.transaction(async (tx) => {
            await ctx.insertOrder(tx, outer.orderId, outer.customer)
            await ctx.producers(tx).orders.produce(outer)
            await assert.rejects(
              nested(tx, async (inner) => {
                await ctx.insertOrder(inner, discarded.orderId, discarded.customer)
                await ctx.producers(inner).orders.produce(discarded)
                throw new RollbackOnPurpose()
              }),
              RollbackOnPurpose,
            )
            await nested(tx, async (inner) => {
              await ctx.insertOrder(inner, kept.orderId, kept.customer)
              await ctx.producers(inner).orders.produce(kept)
            })
            // The outer transaction is still usable after the savepoint rolled back.
            await ctx.producers(tx).orders.produceMany([])
          })
          assert.equal(await ctx.countOrders(), 2)
          assert.equal(await ctx.countOutbox(), 2)
          await drain(ctx, 2)
          const consumed = await readTopic({ brokers, topic, expectedCount: 2 })
          const report = assertDelivered({
            expected: [tracked(outer), tracked(kept)],
            forbidden: [tracked(discarded)],
            consumed,
          })
          assert.equal(report.phantom, 0)
        })
      })
    }
  })
}

interface TestScope<Tx> {
  ctx: ContractContext<Tx>
  topic: string
  brokers: string[]
  schema: string
}

const relays = new Set<OutboxRelay>()

function track(relay: OutboxRelay): OutboxRelay {
  relays.add(relay)
  return relay
}

async function withContext<Tx>(
  harness: ContractHarness<Tx>,
  body: (scope: TestScope<Tx>) => Promise<void>,
): Promise<void> {
  const brokers = kafkaBrokers()
  const topic = uniqueName('contract').replaceAll('_', '-')
  await createTopic(topic, PARTITIONS, brokers)
  const schema = uniqueName('ke_contract')
  const ctx = await harness.setup({ topics: { orders: orderTopic(topic) }, schema, brokers })
  try {
    await body({ ctx, topic, brokers, schema })
  } finally {
    for (const relay of relays) await relay.stop()
    relays.clear()
    await ctx.teardown()
  }
}

/** Relays everything that is ready with a fresh relay and checks it sent `count` messages. */
async function drain<Tx>(ctx: ContractContext<Tx>, count: number): Promise<void> {
  const relay = track(ctx.relay())
  assert.equal(await relay.drain(), count, 'messages relayed')
}

function tracked(event: OrderEvent): TrackedMessage {
  return { id: event.orderId, key: event.customer, seq: event.seq }
}

function assertDelivered(input: {
  expected: TrackedMessage[]
  forbidden?: TrackedMessage[]
  consumed: Awaited<ReturnType<typeof readTopic>>
}) {
  const report = checkDelivery({
    expected: input.expected,
    forbidden: input.forbidden ?? [],
    observed: observedFromConsumed(input.consumed),
  })
  assert.ok(report.ok, formatReport(report))
  assert.equal(report.delivered, input.expected.length)
  return report
}

function header(headers: readonly (readonly [string, Buffer | null])[], name: string): string | undefined {
  return headers.find(([candidate]) => candidate === name)?.[1]?.toString('utf8')
}

function hasCode(code: string) {
  return (error: unknown) => {
    assert.equal((error as { code?: unknown }).code, code, String(error))
    assert.match(String((error as Error).message), /transaction/)
    return true
  }
}

/**
 * For a harness with `nested`: messages produced in a savepoint that was released still roll back
 * with the outer transaction. Registered by the test files that check it for their data layers.
 */
export function outerRollbackCase<Tx>(harness: ContractHarness<Tx>, brokers: string[]): void {
  it(`${harness.name}: messages of a released savepoint are rolled back with the outer transaction`, async () => {
    const nested = harness.nested
    assert.ok(nested, `${harness.name} has nested transactions`)
    // Nothing is relayed: the topic only names where messages would go.
    const ctx = await harness.setup({
      topics: { orders: orderTopic('ke-unused') },
      schema: uniqueName('ke_outer_sp'),
      brokers,
    })
    try {
      await assert.rejects(
        ctx.transaction(async (tx) => {
          await nested(tx, async (inner) => {
            await ctx.insertOrder(inner, 'order-inner', 'gina')
            await ctx.producers(inner).orders.produce({ orderId: 'order-inner', customer: 'gina', seq: 1 })
          })
          throw new RollbackOnPurpose()
        }),
        RollbackOnPurpose,
      )
      assert.equal(await ctx.countOutbox(), 0)
      assert.equal(await ctx.countOrders(), 0)
    } finally {
      await ctx.teardown()
    }
  })
}

/**
 * A held write reaches the database only with a later statement of the transaction: if it fails
 * there, the whole transaction must fail, never a COMMIT that the server turns into a rollback
 * while the app believes it committed. The outbox table is moved away (on a connection of the
 * test's own, before the transaction touches it) so that the write fails.
 */
function heldWriteCases<Tx>(harness: ContractHarness<Tx>): void {
  it('a held write that fails with the COMMIT fails the transaction, and nothing of it is stored', async () => {
    await withContext(harness, async ({ ctx, schema }) => {
      await withoutOutbox(schema, () =>
        assert.rejects(
          ctx.transaction(async (tx) => {
            await ctx.insertOrder(tx, 'order-held-last', 'gina')
            await ctx.producers(tx).orders.produce({ orderId: 'order-held-last', customer: 'gina', seq: 1 })
          }),
          (error: unknown) => {
            assert.equal((error as { code?: unknown }).code, ErrorCodes.NOT_MIGRATED, String(error))
            return true
          },
        ),
      )
      assert.equal(await ctx.countOrders(), 0)
      assert.equal(await ctx.countOutbox(), 0)
    })
  })

  it("a held write that fails ahead of the app's next query fails the transaction even when the app catches that query's error", async () => {
    await withContext(harness, async ({ ctx, schema }) => {
      await withoutOutbox(schema, () =>
        assert.rejects(
          ctx.transaction(async (tx) => {
            await ctx.insertOrder(tx, 'order-first', 'hana')
            await ctx.producers(tx).orders.produce({ orderId: 'order-first', customer: 'hana', seq: 1 })
            // The write rides on this statement and fails; an app may catch such an error and go on.
            await assert.rejects(ctx.insertOrder(tx, 'order-second', 'hana'))
          }),
          (error: unknown) => {
            assert.equal((error as { code?: unknown }).code, ErrorCodes.NOT_MIGRATED, String(error))
            return true
          },
        ),
      )
      assert.equal(await ctx.countOrders(), 0)
      assert.equal(await ctx.countOutbox(), 0)
    })
  })
}
