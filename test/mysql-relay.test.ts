import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { murmur2 } from '@platformatic/kafka'
import mysql from 'mysql2/promise'
import { createMysqlOutbox, type Mysql2Outbox } from '../src/adapters/mysql2/index.ts'
import { lockName } from '../src/dialects/mysql/index.ts'
import { keyLockSlot } from '../src/dialects/mysql/names.ts'
import {
  bufferSerializer,
  defineTopic,
  ErrorCodes,
  KEntityError,
  type OutboxRecord,
  type RelayEvent,
} from '../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  type TrackedMessage,
} from '../src/testing/index.ts'
import { KafkaTransport } from '../src/transports/kafka/index.ts'
import {
  countMysqlRows,
  createOrdersTable,
  dropDatabase,
  MYSQL_URL,
  withMysql,
} from './contract/mysql-support.ts'
import { createTopic, kafkaBrokers, uniqueName, waitFor } from './support/env.ts'
import { type OrderEvent, orderTopic, RollbackOnPurpose } from './support/workload.ts'

const brokers = kafkaBrokers()
const databases: string[] = []
const pool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 12 })

type OrdersOutbox = Mysql2Outbox<{ orders: ReturnType<typeof orderTopic> }>

async function setup(partitions: number) {
  const database = uniqueName('ke_my')
  databases.push(database)
  const topicName = uniqueName('orders').replaceAll('_', '-')
  await createTopic(topicName, partitions)
  const outbox: OrdersOutbox = createMysqlOutbox({
    topics: { orders: orderTopic(topicName) },
    schema: database,
    kafka: { brokers, autoCreateTopics: true },
  })
  assert.deepEqual((await outbox.migrate(MYSQL_URL)).applied, [1])
  await createOrdersTable(database)
  return { database, topicName, outbox }
}

interface Workload {
  outbox: OrdersOutbox
  database: string
  transactions: number
  writers: number
  keysPerWriter: number
  messagesPerTransaction?: number
  rollbackRate: number
}

/**
 * Business transactions inserting order rows and producing one event per order in the same
 * transaction, some rolled back on purpose. Each writer owns its keys, so its sequence numbers
 * are the commit order of those keys.
 */
async function runWorkload(options: Workload) {
  const committed: TrackedMessage[] = []
  const rolledBack: TrackedMessage[] = []
  let started = 0
  const writer = async (w: number) => {
    const seqs = new Map<string, number>()
    while (started < options.transactions) {
      const txNo = started++
      const events: OrderEvent[] = []
      for (let m = 0; m < (options.messagesPerTransaction ?? 1); m++) {
        const customer = `customer-${w}-${Math.floor(Math.random() * options.keysPerWriter)}`
        const seq = (seqs.get(customer) ?? 0) + 1
        seqs.set(customer, seq)
        events.push({ orderId: `order-${txNo}-${m}`, customer, seq })
      }
      const tracked = events.map((e) => ({ id: e.orderId, key: e.customer, seq: e.seq }))
      const rollback = Math.random() < options.rollbackRate
      try {
        await options.outbox.transaction(pool, async (connection, topics) => {
          await connection.query(`INSERT INTO \`${options.database}\`.orders (id, customer) VALUES ?`, [
            events.map((e) => [e.orderId, e.customer]),
          ])
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

describe('MySQL/MariaDB outbox with a real Kafka broker', () => {
  after(async () => {
    await pool.end()
    for (const database of databases) await dropDatabase(database)
  })

  it('atomicity: 500 transactions, 20% rolled back, only committed ones delivered, outbox emptied', async (t) => {
    const { database, topicName, outbox } = await setup(3)
    const relay = outbox.relay({ connection: MYSQL_URL, pollingInterval: 50 })
    // Stopped even when an assertion fails, or the open relay would keep the test process alive.
    t.after(() => relay.stop())
    await relay.start()
    const started = performance.now()
    const workload = await runWorkload({
      outbox,
      database,
      transactions: 500,
      writers: 8,
      keysPerWriter: 5,
      rollbackRate: 0.2,
    })
    const produceMs = performance.now() - started
    assert.ok(workload.rolledBack.length > 50, `expected ~100 rollbacks, got ${workload.rolledBack.length}`)
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: workload.committed.length })
    await waitFor(async () => (await countMysqlRows(database)) === 0, { what: 'the outbox to drain' })
    await relay.stop()
    const report = checkDelivery({
      expected: workload.committed,
      forbidden: workload.rolledBack,
      observed: observedFromConsumed(consumed),
    })
    assert.ok(report.ok, formatReport(report))
    assert.equal(report.delivered, workload.committed.length)
    assert.equal(report.phantom, 0)
    assert.equal(
      await countMysqlRows(database, 'orders'),
      workload.committed.length,
      'business rows = commits',
    )
    console.log(`# 500 transactions on 8 connections in ${Math.round(produceMs)} ms`)
  })

  it('per-key order: 5,000 messages over 50 keys on 8 partitions, Java-compatible partitioning', async (t) => {
    const { database, topicName, outbox } = await setup(8)
    const relay = outbox.relay({ connection: MYSQL_URL, pollingInterval: 50, maxMessagesPerPoll: 500 })
    t.after(() => relay.stop())
    await relay.start()
    const workload = await runWorkload({
      outbox,
      database,
      transactions: 100,
      messagesPerTransaction: 50,
      writers: 5,
      keysPerWriter: 10,
      rollbackRate: 0,
    })
    assert.equal(workload.committed.length, 5000)
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: 5000 })
    await relay.stop()
    const report = checkDelivery({ expected: workload.committed, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
    assert.equal(report.outOfOrder, 0)
    assert.equal(report.keysOnSeveralPartitions, 0)
    for (const message of consumed.slice(0, 500)) {
      const expected = (murmur2(message.key as Buffer) & 0x7fffffff) % 8
      assert.equal(message.partition, expected, `key ${message.key} landed on ${message.partition}`)
    }
    assert.equal(await countMysqlRows(database), 0)
  })

  it('keeps key, header and payload bytes exactly, including non-ASCII, binary, tombstones and null keys', async (t) => {
    const database = uniqueName('ke_my_bytes')
    databases.push(database)
    const jsonName = uniqueName('json').replaceAll('_', '-')
    const binName = uniqueName('bin').replaceAll('_', '-')
    const json = defineTopic<unknown>({
      name: jsonName,
      key: (m) => (m as { k: string }).k,
      headers: { static: 'yes' },
    })
    const binary = defineTopic<Uint8Array>({ name: binName, serializer: bufferSerializer })
    const outbox = createMysqlOutbox({
      topics: { json, binary },
      schema: database,
      kafka: { brokers, autoCreateTopics: true },
    })
    await outbox.migrate(MYSQL_URL)
    const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
    const binaryKey = Buffer.from([0, 1, 0xff, 0x80, 0, 0x27, 0x5c, 0x22])
    // A header name with a quote and a backslash: the JSON headers must survive any escaping.
    await outbox.transaction(pool, async (_connection, topics) => {
      await topics.json.produce(
        { k: "ключ-🔑-ü '\\", text: 'Grüße, 世界 \u0000 "quoted"' },
        { headers: { trace: 'ž', 'it\'s \\ "odd"': 'v' } },
      )
      await topics.json.produce(null, { key: 'tomb' })
      await topics.binary.produce(allBytes, {
        key: binaryKey,
        headers: { bin: allBytes, empty: Buffer.alloc(0) },
      })
      await topics.binary.produce(Buffer.from('no key'))
    })
    const relay = outbox.relay({ connection: MYSQL_URL })
    t.after(() => relay.stop())
    assert.equal(await relay.drain(), 4)
    await relay.stop()
    const [jsonRead, binRead] = await Promise.all([
      readTopic({ brokers, topic: jsonName, expectedCount: 2 }),
      readTopic({ brokers, topic: binName, expectedCount: 2 }),
    ])
    const [first, tombstone] = jsonRead
    assert.deepEqual(first?.key, Buffer.from("ключ-🔑-ü '\\"))
    assert.deepEqual(JSON.parse(first?.value?.toString('utf8') ?? ''), {
      k: "ключ-🔑-ü '\\",
      text: 'Grüße, 世界 \u0000 "quoted"',
    })
    assert.deepEqual(first?.headers, [
      ['static', Buffer.from('yes')],
      ['trace', Buffer.from('ž')],
      ['it\'s \\ "odd"', Buffer.from('v')],
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
    assert.equal(await countMysqlRows(database), 0)
  })

  it('concurrent producers of one key: the second waits until the first commits or rolls back, so id order = commit order', async () => {
    const { database, outbox } = await setup(1)
    const event = (orderId: string, customer: string): OrderEvent => ({ orderId, customer, seq: 1 })
    const [first, second, other] = await Promise.all([
      pool.getConnection(),
      pool.getConnection(),
      pool.getConnection(),
    ])
    const otherKey = 'customer-other'
    const hash = (customer: string) =>
      outbox.outbox.topics.orders.toRecord(event('x', customer)).orderingHash as number
    assert.notEqual(
      keyLockSlot(hash('customer-k')),
      keyLockSlot(hash(otherKey)),
      'test keys must not share a slot',
    )
    try {
      for (const outcome of ['commit', 'rollback'] as const) {
        await first.beginTransaction()
        await outbox.in(first).orders.produce(event(`first-${outcome}`, 'customer-k'))
        await second.beginTransaction()
        let secondStored = false
        const secondProduce = outbox
          .in(second)
          .orders.produce(event(`second-${outcome}`, 'customer-k'))
          .then(() => {
            secondStored = true
          })
        // Another key is not held up by the first transaction.
        await other.beginTransaction()
        await outbox.in(other).orders.produce(event(`other-${outcome}`, otherKey))
        await other.commit()
        await sleep(300)
        assert.equal(secondStored, false, 'the second producer of the key waits for the first transaction')
        if (outcome === 'commit') await first.commit()
        else await first.rollback()
        await secondProduce
        await second.commit()
      }
      const order = await withMysql(async (c) => {
        const [rows] = await c.query(
          `SELECT JSON_UNQUOTE(JSON_EXTRACT(CAST(value AS CHAR), '$.orderId')) AS orderId FROM \`${database}\`.outbox WHERE ordering_hash = ? ORDER BY id`,
          [hash('customer-k')],
        )
        return (rows as { orderId: string }[]).map((r) => r.orderId)
      })
      assert.deepEqual(order, ['first-commit', 'second-commit', 'second-rollback'])
    } finally {
      for (const connection of [first, second, other]) connection.release()
    }
  })

  it('producers locking overlapping keys in opposite orders never deadlock', async () => {
    const { database, outbox } = await setup(1)
    const keys = Array.from({ length: 20 }, (_, i) => `customer-${i}`)
    let n = 0
    await Promise.all(
      Array.from({ length: 6 }, async (_, w) => {
        for (let t = 0; t < 40; t++) {
          const ordered = w % 2 === 0 ? keys : [...keys].reverse()
          await outbox.transaction(pool, async (_c, topics) => {
            await topics.orders.produceMany(
              ordered.map((customer) => ({ orderId: `o-${n++}`, customer, seq: 1 })),
            )
          })
        }
      }),
    )
    assert.equal(await countMysqlRows(database), 6 * 40 * 20)
  })

  it('refuses to produce outside a transaction, and after a deadlock ended the transaction', async () => {
    const { database, outbox } = await setup(1)
    const [first, second] = await Promise.all([pool.getConnection(), pool.getConnection()])
    const orders = `\`${database}\`.orders`
    try {
      const event = { orderId: 'outside', customer: 'c', seq: 1 }
      await assert.rejects(outbox.in(first).orders.produce(event), (error: unknown) => {
        assert.equal((error as KEntityError).code, ErrorCodes.NO_TRANSACTION)
        return true
      })
      // A real deadlock: InnoDB rolls the victim's whole transaction back and leaves its session
      // in autocommit, where an outbox write would commit on its own.
      await first.query(`INSERT INTO ${orders} (id, customer) VALUES ('a', 'x'), ('b', 'x')`)
      await first.beginTransaction()
      await second.beginTransaction()
      await first.query(`UPDATE ${orders} SET customer = 'first' WHERE id = 'a'`)
      await second.query(`UPDATE ${orders} SET customer = 'second' WHERE id = 'b'`)
      const outcomes = await Promise.allSettled([
        first.query(`UPDATE ${orders} SET customer = 'first' WHERE id = 'b'`),
        sleep(200).then(() => second.query(`UPDATE ${orders} SET customer = 'second' WHERE id = 'a'`)),
      ])
      const victimIndex = outcomes.findIndex((o) => o.status === 'rejected')
      assert.ok(victimIndex >= 0, 'one transaction is the deadlock victim')
      assert.equal(
        ((outcomes[victimIndex] as PromiseRejectedResult).reason as { code?: string }).code,
        'ER_LOCK_DEADLOCK',
      )
      const [victim, survivor] = victimIndex === 0 ? [first, second] : [second, first]
      await assert.rejects(outbox.in(victim).orders.produce(event), { code: ErrorCodes.NO_TRANSACTION })
      await survivor.commit()
      assert.throws(() => outbox.in(pool as never), { code: ErrorCodes.INVALID_ARGUMENT })
      assert.throws(() => outbox.in(null as never), { code: ErrorCodes.INVALID_ARGUMENT })
      assert.throws(() => outbox.relay({ claimTimeout: 10, connection: MYSQL_URL }), {
        code: ErrorCodes.INVALID_ARGUMENT,
      })
      assert.equal(await countMysqlRows(database), 0)
    } finally {
      first.release()
      second.release()
    }
  })

  it('migrations: concurrent runs apply once, the printed script is idempotent, a missing table is reported', async (t) => {
    const database = uniqueName('ke_my_migrate')
    databases.push(database)
    const outbox = createMysqlOutbox({
      topics: { orders: orderTopic('orders') },
      schema: database,
      kafka: { brokers, autoCreateTopics: true },
    })
    const relay = outbox.relay({ connection: MYSQL_URL })
    t.after(() => relay.stop())
    await assert.rejects(relay.runOnce(), { code: ErrorCodes.NOT_MIGRATED })
    await relay.stop()
    const results = await Promise.all([outbox.migrate(MYSQL_URL), outbox.migrate(MYSQL_URL)])
    assert.deepEqual(results.map((r) => r.applied).sort(), [[], [1]])
    assert.deepEqual(await outbox.migrate(MYSQL_URL), { applied: [], current: 1 })
    // The script applies cleanly over an existing schema and records nothing twice.
    const statements = outbox
      .migrationSql()
      .split(/;\n/)
      .map((s) => s.trim())
      .filter((s) => s.length > 0 && !s.startsWith('--'))
    await withMysql(async (c) => {
      for (const statement of statements) await c.query(statement.replace(/^--.*\n/, ''))
      const [slots] = await c.query(`SELECT COUNT(*) AS n FROM \`${database}\`.outbox_key_locks`)
      assert.equal(Number((slots as { n: number }[])[0]?.n), 65_536)
      const [versions] = await c.query(`SELECT version FROM \`${database}\`.outbox_migrations`)
      assert.deepEqual(versions, [{ version: 1 }])
    })
  })

  it('a message Kafka refuses for good is dead-lettered with its error, the rest of its key follows; list, replay, purge, stats', async (t) => {
    const { database, topicName, outbox } = await setup(2)
    const kafka = new KafkaTransport({ brokers, autoCreateTopics: true })
    const refusing = {
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
    const events = [
      { orderId: 'before', customer: 'k', seq: 1 },
      { orderId: 'poison', customer: 'k', seq: 2 },
      { orderId: 'after', customer: 'k', seq: 3 },
      { orderId: 'elsewhere', customer: 'j', seq: 1 },
    ]
    await outbox.transaction(pool, (_c, topics) => topics.orders.produceMany(events))
    const failures: RelayEvent[] = []
    const relay = outbox.relay({
      connection: MYSQL_URL,
      kafka: refusing,
      onEvent: (e) => {
        if (e.type === 'message-failed') failures.push(e)
      },
    })
    t.after(() => relay.stop())
    // The first batch isolates the poison message and holds back the later message of its key.
    while ((await relay.runOnce()) > 0);
    await relay.stop()
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: 3 })
    const report = checkDelivery({
      expected: events
        .filter((e) => e.orderId !== 'poison')
        .map((e) => ({ id: e.orderId, key: e.customer, seq: e.seq })),
      forbidden: [{ id: 'poison' }],
      observed: observedFromConsumed(consumed),
    })
    assert.ok(report.ok, formatReport(report))
    assert.equal(failures.length, 1)
    assert.equal(await countMysqlRows(database), 0)
    assert.deepEqual(await outbox.stats(MYSQL_URL), {
      pending: 0,
      retrying: 0,
      deadLetters: 1,
      oldestPendingMs: 0,
    })
    const deadLetters = outbox.deadLetters(MYSQL_URL)
    const [dead] = await deadLetters.list({ topic: topicName })
    assert.equal(await deadLetters.count(), 1)
    assert.match(dead?.value?.toString() ?? '', /"poison"/)
    assert.deepEqual(dead?.key, Buffer.from('k'))
    assert.ok(dead?.headers.some(([name]) => name === 'event-type'))
    assert.equal(dead?.attempts, 1)
    assert.equal(dead?.errors.length, 1)
    assert.match(dead?.errors[0]?.error ?? '', /record too large/)
    await assert.rejects(deadLetters.purge({}), { code: ErrorCodes.INVALID_ARGUMENT })
    // Replayed, it is a message of its key again, behind everything produced meanwhile.
    assert.equal(await deadLetters.replay({ ids: [dead?.id as string] }), 1)
    assert.equal(await countMysqlRows(database), 1)
    assert.equal(await deadLetters.count(), 0)
    const again = outbox.relay({ connection: MYSQL_URL, kafka: refusing })
    t.after(() => again.stop())
    await again.runOnce()
    await again.stop()
    assert.equal(await deadLetters.purge({ topic: topicName }), 1)
    assert.deepEqual(await outbox.stats(MYSQL_URL), {
      pending: 0,
      retrying: 0,
      deadLetters: 0,
      oldestPendingMs: 0,
    })
  })

  it('concurrent mode: four relays share 10,000 messages over 64 keys without breaking per-key order', async () => {
    const { database, topicName, outbox } = await setup(8)
    const delivered = new Map<number, number>()
    const relays = Array.from({ length: 4 }, (_, i) =>
      outbox.relay({
        connection: MYSQL_URL,
        mode: 'concurrent',
        pollingInterval: 20,
        maxMessagesPerPoll: 200,
        onEvent: (e) => {
          if (e.type === 'delivered') delivered.set(i, (delivered.get(i) ?? 0) + e.count)
        },
      }),
    )
    try {
      for (const relay of relays) await relay.start()
      const workload = await runWorkload({
        outbox,
        database,
        transactions: 250,
        messagesPerTransaction: 40,
        writers: 4,
        keysPerWriter: 16,
        rollbackRate: 0.1,
      })
      await waitFor(async () => (await countMysqlRows(database)) === 0, {
        what: 'outbox drained',
        timeout: 120_000,
      })
      const consumed = await readTopic({
        brokers,
        topic: topicName,
        expectedCount: workload.committed.length,
      })
      const report = checkDelivery({
        expected: workload.committed,
        forbidden: workload.rolledBack,
        observed: observedFromConsumed(consumed),
      })
      assert.ok(report.ok, formatReport(report))
      const shares = [...delivered.values()]
      assert.equal(
        shares.reduce((a, b) => a + b, 0),
        workload.committed.length,
        'every row deleted exactly once across relays',
      )
      assert.ok(
        shares.filter((n) => n > 0).length >= 2,
        `work was not shared: ${JSON.stringify([...delivered])}`,
      )
      console.log(
        `# concurrent shares: ${JSON.stringify([...delivered.entries()])}, duplicates ${report.duplicates}`,
      )
    } finally {
      for (const relay of relays) await relay.stop()
    }
  })

  it('concurrent mode: a relay whose session is killed mid-batch loses its claim to the others; nothing lost, order kept', async () => {
    const { database, topicName, outbox } = await setup(4)
    const workload = await runWorkload({
      outbox,
      database,
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
    let victimHeld = false
    // The victim's session is the only one whose default database is the outbox's: that is how
    // the test finds its connection id in PROCESSLIST (live, unlike the cached INNODB_TRX).
    const victimUrl = new URL(MYSQL_URL)
    victimUrl.pathname = `/${database}`
    const relays = Array.from({ length: 3 }, (_, i) => {
      const kafka = new KafkaTransport({ brokers, autoCreateTopics: true })
      return outbox.relay({
        connection: i === 0 ? victimUrl.toString() : MYSQL_URL,
        mode: 'concurrent',
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
      })
    })
    try {
      // The victim starts alone, so that it is sure to claim a batch before the others drain it.
      await relays[0]?.start()
      await victimCaught
      for (const relay of relays.slice(1)) await relay.start()
      const victim = await withMysql(async (c) => {
        const [rows] = await c.query('SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = ?', [
          database,
        ])
        const ids = (rows as { id: number }[]).map((row) => Number(row.id))
        assert.equal(ids.length, 1, `one session of the victim relay: ${JSON.stringify(ids)}`)
        const id = ids[0] as number
        // Its claim is open for as long as its send is held; INNODB_TRX may lag ~100 ms behind.
        await waitFor(
          async () => {
            const [trx] = await c.query(
              'SELECT 1 FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ? AND trx_rows_locked > 0',
              [id],
            )
            return (trx as unknown[]).length === 1
          },
          { what: "the victim's open claim in INNODB_TRX", interval: 150, timeout: 10_000 },
        )
        return id
      })
      await withMysql((c) => c.query(`KILL ${victim}`))
      // Only now does Kafka get the batch: the victim's acknowledgement must find its session gone.
      releaseVictim()
      await waitFor(() => errors.some((e) => e.relay === 0 && e.stage === 'acknowledge'), {
        what: 'the killed relay failing to acknowledge',
        timeout: 15_000,
      })
      await waitFor(async () => (await countMysqlRows(database)) === 0, {
        what: 'outbox drained',
        timeout: 60_000,
      })
      const consumed = await readTopic({
        brokers,
        topic: topicName,
        expectedCount: workload.committed.length,
      })
      const report = checkDelivery({ expected: workload.committed, observed: observedFromConsumed(consumed) })
      assert.ok(report.ok, formatReport(report))
      console.log(`# killed one of three concurrent relays mid-batch; duplicates: ${report.duplicates}`)
    } finally {
      releaseVictim()
      for (const relay of relays) await relay.stop()
    }
  })

  it('exclusive mode: one leader; when its session is killed the other takes over and the deposed one deletes nothing', async () => {
    const { database, topicName, outbox } = await setup(3)
    const log: (RelayEvent & { relay: number; at: number })[] = []
    const sending: { relay: number; at: number }[] = []
    const relays = [0, 1].map((i) => {
      const kafka = new KafkaTransport({ brokers, autoCreateTopics: true, retries: 2, requestTimeout: 5000 })
      return outbox.relay({
        connection: MYSQL_URL,
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
      })
    })
    const leaders = () => {
      const latest = new Map<number, boolean>()
      for (const e of log) if (e.type === 'leadership') latest.set(e.relay, e.leader)
      return [...latest].filter(([, leader]) => leader).map(([relay]) => relay)
    }
    try {
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
        await outbox.transaction(pool, (_c, topics) => topics.orders.produceMany(expected.slice(i, i + 50)))
      }
      await waitFor(() => sending.some((s) => s.relay === firstLeader), { what: 'the leader sending' })
      const holder = await withMysql(async (c) => {
        const [rows] = await c.query('SELECT IS_USED_LOCK(?) AS holder', [
          lockName({ schema: database, table: 'outbox' }, 'leader'),
        ])
        return (rows as { holder: number | null }[])[0]?.holder
      })
      assert.ok(holder, 'the leader holds the user lock on its session')
      const killedAt = Date.now()
      await withMysql((c) => c.query(`KILL ${Number(holder)}`))

      await waitFor(() => leaders().some((relay) => relay !== firstLeader), {
        what: 'takeover',
        timeout: 15_000,
      })
      const takeover = log.find((e) => e.type === 'leadership' && e.leader && e.relay !== firstLeader)
      const takeoverMs = (takeover?.at ?? Date.now()) - killedAt
      assert.ok(takeoverMs < 5000, `takeover took ${takeoverMs} ms`)
      await waitFor(
        () => log.some((e) => e.relay === firstLeader && e.type === 'error' && e.stage === 'acknowledge'),
        { what: 'the deposed leader failing to acknowledge its batch' },
      )
      await waitFor(async () => (await countMysqlRows(database)) === 0, {
        what: 'outbox drained',
        timeout: 60_000,
      })
      const consumed = await readTopic({ brokers, topic: topicName, expectedCount: expected.length })
      const report = checkDelivery({
        expected: expected.map((e) => ({ id: e.orderId, key: e.customer, seq: e.seq })),
        observed: observedFromConsumed(consumed),
      })
      assert.ok(report.ok, formatReport(report))
      const delivered = log.filter((e) => e.type === 'delivered').reduce((sum, e) => sum + e.count, 0)
      assert.equal(delivered, expected.length, 'every row deleted exactly once')
      const deletedWhileDeposed = log.filter(
        (e) => e.relay === firstLeader && e.type === 'delivered' && e.at > killedAt,
      )
      assert.equal(
        deletedWhileDeposed.length,
        0,
        'the deposed leader deleted nothing after its session ended',
      )
      assert.equal(relays[firstLeader]?.isLeader, false)
      console.log(
        `# takeover after KILL: ${takeoverMs} ms; duplicates from the interrupted batch: ${report.duplicates}`,
      )
    } finally {
      for (const relay of relays) await relay.stop()
    }
  })
})
