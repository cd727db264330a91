import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { after, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createNodeSqliteOutbox } from '../src/adapters/node-sqlite/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import type { Logger, OutboxRelay, RelayEvent } from '../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  type TrackedMessage,
} from '../src/testing/index.ts'
import { countMysqlRows, createOrdersTable, dropDatabase, MYSQL_URL } from './contract/mysql-support.ts'
import {
  countRows,
  createTopic,
  DATABASE_URL,
  dropSchema,
  kafkaBrokers,
  uniqueName,
  waitFor,
  withClient,
} from './support/env.ts'
import {
  dropOrderSchemas,
  type OrderEvent,
  orderOutbox,
  orderTopic,
  runOrderWorkload,
} from './support/workload.ts'

const brokers = kafkaBrokers()
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 8 })

/** What each relay of a test did, by its index. */
class RelayLog {
  readonly events: (RelayEvent & { relay: number; at: number })[] = []
  listener(relay: number) {
    return (event: RelayEvent) => this.events.push({ ...event, relay, at: Date.now() })
  }
  delivered(relay: number): number {
    return this.events
      .filter((e) => e.relay === relay && e.type === 'delivered')
      .reduce((sum, e) => sum + (e.type === 'delivered' ? e.count : 0), 0)
  }
  leading(relay: number): boolean {
    const last = this.events.filter((e) => e.relay === relay && e.type === 'leadership').at(-1)
    return last?.type === 'leadership' && last.leader
  }
  /** Deliveries of every relay: reported once the rows are deleted, so after the outbox empties. */
  total(): number {
    return this.events.reduce((sum, e) => sum + (e.type === 'delivered' ? e.count : 0), 0)
  }
  reasons(relay: number): string[] {
    return this.events.flatMap((e) =>
      e.relay === relay && e.type === 'leadership' && e.reason !== undefined ? [e.reason] : [],
    )
  }
}

/** The warnings the relays log with code KE_RELAY_STANDBY, through a pino-like logger. */
function standbyWarnings(): { messages: string[]; logger: Logger; stop(): void } {
  const messages: string[] = []
  const ignore = () => {}
  const logger: Logger = {
    error: ignore,
    info: ignore,
    debug: ignore,
    warn: (context: unknown, message?: unknown) => {
      if ((context as { code?: string }).code === 'KE_RELAY_STANDBY') messages.push(String(message))
    },
  }
  return { messages, logger, stop: ignore }
}

/** `count` messages over `keys` keys, each key's sequence in production order. */
function keyedEvents(prefix: string, count: number, keys: number, from = 0): OrderEvent[] {
  return Array.from({ length: count }, (_, i) => ({
    orderId: `${prefix}-${from + i}`,
    customer: `k-${(from + i) % keys}`,
    seq: Math.floor((from + i) / keys) + 1,
  }))
}

const tracked = (events: OrderEvent[]): TrackedMessage[] =>
  events.map((e) => ({ id: e.orderId, key: e.customer, seq: e.seq }))

describe('safe relay defaults: one leader per outbox, modes never mixed', () => {
  after(async () => {
    await pool.end()
    await dropOrderSchemas()
  })

  it("two 'single' relays on one outbox: only one ever claims, the other says why once and takes over when the first stops", async (t) => {
    const { schema, topicName, outbox, ordersTable } = await orderOutbox(8, 'ke_safe')
    const log = new RelayLog()
    const warnings = standbyWarnings()
    const relays: OutboxRelay[] = [0, 1].map((i) =>
      // No mode: 'single' is the default this test is about.
      outbox.relay({
        connection: DATABASE_URL,
        pollingInterval: 20,
        leaderCheckInterval: 200,
        maxMessagesPerPoll: 100,
        onEvent: log.listener(i),
        logger: warnings.logger,
      }),
    )
    t.after(async () => {
      warnings.stop()
      for (const relay of relays) await relay.stop()
    })
    await relays[0]?.start()
    await waitFor(() => log.leading(0), { what: 'the first relay leading' })
    await relays[1]?.start()
    await waitFor(() => log.reasons(1).length > 0, { what: 'the second relay saying why it waits' })

    // 2,000 messages over 64 keys, produced while both run.
    const workload = await runOrderWorkload({
      pool,
      outbox,
      ordersTable,
      transactions: 200,
      messagesPerTransaction: 10,
      writers: 4,
      keysPerWriter: 16,
      rollbackRate: 0,
    })
    assert.equal(workload.committed.length, 2000)
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'outbox drained', timeout: 120_000 })
    await waitFor(() => log.total() === 2000, { what: 'deliveries reported' })
    assert.equal(log.delivered(0), 2000, 'the leader relayed everything')
    assert.equal(log.delivered(1), 0, 'the standby claimed nothing')
    // Its sessions never held an outbox row: only the leader's sessions ever ran a claim.
    assert.equal(log.leading(1), false)

    const reasons = log.reasons(1)
    assert.equal(reasons.length, 1, `one line, not one per check: ${JSON.stringify(reasons)}`)
    assert.match(reasons[0] ?? '', /another relay already holds this outbox/)
    assert.match(reasons[0] ?? '', /mode: 'exclusive'/)
    assert.match(reasons[0] ?? '', /mode: 'concurrent'/)
    await waitFor(() => warnings.messages.length > 0, { what: 'the standby warning' })
    assert.equal(warnings.messages.length, 1)

    // The first one stops: the second takes over and relays what comes next.
    await relays[0]?.stop()
    const later = keyedEvents('later', 300, 64)
    await outbox.transaction(pool, (_client, topics) => topics.orders.produceMany(later))
    await waitFor(() => log.leading(1), { what: 'the second relay taking over', timeout: 10_000 })
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'outbox drained again' })
    await waitFor(() => log.total() === 2300, { what: 'deliveries reported' })
    assert.equal(log.delivered(1), 300)

    const expected = [...workload.committed, ...tracked(later)]
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: expected.length })
    const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
    assert.equal(report.outOfOrder, 0)
  })

  it('a concurrent relay beside a single one waits and claims nothing; a single one beside concurrent ones waits too', async (t) => {
    const { schema, topicName, outbox } = await orderOutbox(4, 'ke_safe')
    const log = new RelayLog()
    const warnings = standbyWarnings()
    const options = {
      connection: DATABASE_URL,
      pollingInterval: 20,
      leaderCheckInterval: 200,
      maxMessagesPerPoll: 50,
      logger: warnings.logger,
    }
    const single = outbox.relay({ ...options, mode: 'single', onEvent: log.listener(0) })
    const concurrent = outbox.relay({ ...options, mode: 'concurrent', onEvent: log.listener(1) })
    const lateSingle = outbox.relay({ ...options, onEvent: log.listener(2) })
    t.after(async () => {
      warnings.stop()
      for (const relay of [single, concurrent, lateSingle]) await relay.stop()
    })
    await single.start()
    await waitFor(() => log.leading(0), { what: 'the single relay leading' })
    await concurrent.start()
    await waitFor(() => log.reasons(1).length > 0, { what: 'the concurrent relay saying why it waits' })
    assert.match(log.reasons(1)[0] ?? '', /cannot mix modes/)

    const first = keyedEvents('first', 400, 16)
    for (let i = 0; i < first.length; i += 50) {
      await outbox.transaction(pool, (_client, topics) => topics.orders.produceMany(first.slice(i, i + 50)))
    }
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'outbox drained' })
    await waitFor(() => log.total() === first.length, { what: 'deliveries reported' })
    assert.equal(log.delivered(0), first.length)
    assert.equal(log.delivered(1), 0, 'the concurrent relay claimed nothing beside the leader')

    // The leader goes: the concurrent relay starts working; a single relay started now waits.
    await single.stop()
    const second = keyedEvents('second', 200, 16, first.length)
    await outbox.transaction(pool, (_client, topics) => topics.orders.produceMany(second))
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'drained by the concurrent relay' })
    await waitFor(() => log.total() === first.length + second.length, { what: 'deliveries reported' })
    assert.equal(log.delivered(1), second.length)
    await lateSingle.start()
    await waitFor(() => log.reasons(2).length > 0, { what: 'the late single relay saying why it waits' })
    assert.match(log.reasons(2)[0] ?? '', /concurrent relays are running/)
    const third = keyedEvents('third', 200, 16, first.length + second.length)
    await outbox.transaction(pool, (_client, topics) => topics.orders.produceMany(third))
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'drained beside the waiting one' })
    await waitFor(() => log.total() === first.length + second.length + third.length, {
      what: 'deliveries reported',
    })
    assert.equal(log.delivered(2), 0, 'the single relay claimed nothing beside a concurrent one')
    assert.equal(log.delivered(1), second.length + third.length)
    assert.ok(warnings.messages.length >= 2, 'both waits were reported as process warnings')

    const expected = tracked([...first, ...second, ...third])
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: expected.length })
    const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
  })

  it("MariaDB: two 'single' relays on one outbox: only one ever claims, and order holds over 2,000 messages", async (t) => {
    const database = uniqueName('ke_my_safe')
    const topicName = uniqueName('safe-my').replaceAll('_', '-')
    await createTopic(topicName, 8)
    const outbox = createMysqlOutbox({
      topics: { orders: orderTopic(topicName) },
      schema: database,
      kafka: { brokers },
    })
    const mysqlPool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 4 })
    const log = new RelayLog()
    const relays = [0, 1].map((i) =>
      outbox.relay({
        connection: MYSQL_URL,
        pollingInterval: 20,
        leaderCheckInterval: 200,
        maxMessagesPerPoll: 100,
        onEvent: log.listener(i),
        logger: false,
      }),
    )
    t.after(async () => {
      for (const relay of relays) await relay.stop()
      await mysqlPool.end()
      await dropDatabase(database)
    })
    await outbox.migrate(MYSQL_URL)
    await createOrdersTable(database)
    for (const relay of relays) await relay.start()
    await waitFor(() => log.leading(0) || log.leading(1), { what: 'a leader' })
    const leader = log.leading(0) ? 0 : 1
    const standby = 1 - leader
    await waitFor(() => log.reasons(standby).length > 0, { what: 'the standby saying why it waits' })

    const events = keyedEvents('my', 2000, 64)
    for (let i = 0; i < events.length; i += 100) {
      await outbox.transaction(mysqlPool, (_connection, topics) =>
        topics.orders.produceMany(events.slice(i, i + 100)),
      )
    }
    await waitFor(async () => (await countMysqlRows(database)) === 0, {
      what: 'outbox drained',
      timeout: 120_000,
    })
    await waitFor(() => log.total() === events.length, { what: 'deliveries reported' })
    assert.equal(log.delivered(leader), events.length)
    assert.equal(log.delivered(standby), 0, 'the standby claimed nothing')
    assert.equal(log.reasons(standby).length, 1)

    await relays[leader]?.stop()
    const later = keyedEvents('my', 200, 64, events.length)
    await outbox.transaction(mysqlPool, (_connection, topics) => topics.orders.produceMany(later))
    await waitFor(() => log.leading(standby), { what: 'takeover', timeout: 10_000 })
    await waitFor(async () => (await countMysqlRows(database)) === 0, { what: 'drained again' })
    await waitFor(() => log.total() === events.length + later.length, { what: 'deliveries reported' })
    assert.equal(log.delivered(standby), later.length)

    const expected = tracked([...events, ...later])
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: expected.length })
    const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
    assert.equal(report.outOfOrder, 0)
  })
})

describe('SQLite: one relay per outbox across processes', () => {
  it('a relay in another process holds the database file: this one stands by, says why once, and takes over when that process dies', async (t) => {
    const directory = mkdtempSync(join(tmpdir(), 'ke-safe-sqlite-'))
    const file = join(directory, 'app.db')
    const topicName = uniqueName('safe-sqlite').replaceAll('_', '-')
    await createTopic(topicName, 4)
    const outbox = createNodeSqliteOutbox({ topics: { orders: orderTopic(topicName) }, kafka: { brokers } })
    const db = new DatabaseSync(file)
    outbox.migrate(db)
    const src = (path: string) => fileURLToPath(new URL(`../src/${path}`, import.meta.url))
    // The other process: a real relay of the same outbox on the same file.
    const other = spawn(
      process.execPath,
      [
        ...process.execArgv,
        '--input-type=module',
        '-e',
        `import { createNodeSqliteOutbox } from ${JSON.stringify(src('adapters/node-sqlite/index.ts'))}
import { defineTopic } from ${JSON.stringify(src('index.ts'))}
const outbox = createNodeSqliteOutbox({ topics: { orders: defineTopic({ name: ${JSON.stringify(topicName)} }) }, kafka: { brokers: ${JSON.stringify(brokers)} } })
const relay = outbox.relay({ connection: ${JSON.stringify(file)}, pollingInterval: 20, onEvent: (e) => process.send(e) })
await relay.start()`,
      ],
      { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
    )
    const otherEvents: RelayEvent[] = []
    other.on('message', (event) => otherEvents.push(event as RelayEvent))
    const log = new RelayLog()
    const relay = outbox.relay({ connection: file, pollingInterval: 20, onEvent: log.listener(0) })
    t.after(async () => {
      other.kill('SIGKILL')
      await relay.stop()
      db.close()
      rmSync(directory, { recursive: true, force: true })
    })
    await waitFor(() => otherEvents.some((e) => e.type === 'leadership' && e.leader), {
      what: 'the other process leading',
    })
    await relay.start()
    await waitFor(() => log.reasons(0).length > 0, { what: 'this relay saying why it waits' })
    assert.match(log.reasons(0)[0] ?? '', /another relay already holds this outbox/)

    const produce = (events: OrderEvent[]) => {
      db.exec('BEGIN')
      outbox.in(db).orders.produceMany(events)
      db.exec('COMMIT')
    }
    const pending = () => Number(db.prepare('SELECT count(*) AS n FROM k_entity_outbox').get()?.n)
    const first = keyedEvents('sq', 300, 16)
    produce(first)
    await waitFor(() => pending() === 0, { what: 'drained by the other process' })
    const otherDelivered = () =>
      otherEvents.reduce((sum, e) => sum + (e.type === 'delivered' ? e.count : 0), 0)
    await waitFor(() => otherDelivered() === first.length, { what: "the other process's deliveries" })
    assert.equal(log.delivered(0), 0, 'this relay claimed nothing while the other process held the file')
    assert.equal(log.reasons(0).length, 1)

    other.kill('SIGKILL')
    await new Promise((resolve) => other.once('exit', resolve))
    const second = keyedEvents('sq', 100, 16, first.length)
    produce(second)
    await waitFor(() => log.leading(0), { what: 'takeover after the other process died', timeout: 10_000 })
    await waitFor(() => pending() === 0, { what: 'drained by this relay' })
    await waitFor(() => log.total() === second.length, { what: 'deliveries reported' })
    assert.equal(log.delivered(0), second.length)

    const expected = tracked([...first, ...second])
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: expected.length })
    const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
  })
})

describe('in(client): messages are never committed apart from their business rows', () => {
  const schema = uniqueName('ke_safe_in')
  const topicName = uniqueName('safe-in').replaceAll('_', '-')
  const outbox = createPgOutbox({ topics: { orders: orderTopic(topicName) }, schema, kafka: { brokers } })
  const clients: pg.Client[] = []
  const connect = async () => {
    const client = new pg.Client({ connectionString: DATABASE_URL })
    await client.connect()
    clients.push(client)
    return client
  }
  const event = (orderId: string, seq = 1) => ({ orderId, customer: 'c-1', seq })
  const stored = (table: 'orders' | 'outbox') =>
    withClient(async (client) => {
      const column = table === 'orders' ? 'id' : "convert_from(value, 'UTF8')::jsonb->>'orderId'"
      const { rows } = await client.query(`SELECT ${column} AS id FROM "${schema}".${table} ORDER BY 1`)
      return rows.map((row) => row.id as string)
    })
  const clear = () => withClient((client) => client.query(`TRUNCATE "${schema}".orders, "${schema}".outbox`))
  const insertOrder = (client: pg.Client, id: string) =>
    client.query(`INSERT INTO "${schema}".orders (id, customer) VALUES ($1, 'c-1')`, [id])

  let ready: Promise<void> | undefined
  const setup = () => {
    ready ??= (async () => {
      await createTopic(topicName, 1)
      await outbox.migrate(DATABASE_URL)
      await withClient((c) =>
        c.query(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY, customer text NOT NULL)`),
      )
    })()
    return ready
  }

  after(async () => {
    for (const client of clients) await client.end().catch(() => {})
    await dropSchema(schema)
  })

  it('by default writes at produce(): the row is in the outbox before the COMMIT, and a failing INSERT rejects produce()', async () => {
    await setup()
    await clear()
    const client = await connect()
    await client.query('BEGIN')
    await insertOrder(client, 'o-1')
    await outbox.in(client).orders.produce(event('m-1'))
    const seen = await client.query(`SELECT count(*)::int AS n FROM "${schema}".outbox`)
    assert.equal(seen.rows[0].n, 1, 'visible to its own transaction before the COMMIT')
    assert.equal(await countRows(schema), 0, 'and to no one else yet')
    await client.query('COMMIT')
    assert.deepEqual(await stored('outbox'), ['m-1'])

    // A write that fails is reported by produce() itself.
    await withClient((admin) => admin.query(`ALTER TABLE "${schema}".outbox RENAME TO outbox_away`))
    try {
      await client.query('BEGIN')
      await insertOrder(client, 'o-2')
      await assert.rejects(outbox.in(client).orders.produce(event('m-2')), (error: { code?: string }) =>
        ['42P01', 'KE_NOT_MIGRATED'].includes(error.code ?? ''),
      )
      await client.query('ROLLBACK')
    } finally {
      await withClient((admin) => admin.query(`ALTER TABLE "${schema}".outbox_away RENAME TO outbox`))
    }
    assert.deepEqual(await stored('orders'), ['o-1'])
  })

  it('holdWrites: a COMMIT sent past the wrapped query is refused, in every form, and nothing of the transaction is committed', async () => {
    await setup()
    await clear()
    const client = await connect()
    // Taken before in() wraps the client's query, as an app or a library may hold it.
    const bypass = client.query.bind(client) as (...args: unknown[]) => Promise<pg.QueryResult>
    // A named COMMIT the connection has prepared already, so only its Bind goes out later.
    await bypass('BEGIN')
    await bypass({ name: 'ke_test_commit', text: 'COMMIT' })
    const forms: [string, () => Promise<unknown>][] = [
      ['simple text', () => bypass('COMMIT')],
      ['object form', () => bypass({ text: 'COMMIT' })],
      ['extended protocol', () => bypass({ text: 'COMMIT', queryMode: 'extended' })],
      ['named prepared statement', () => bypass({ name: 'ke_test_commit', text: 'COMMIT' })],
      [
        'callback',
        () =>
          new Promise<void>((resolve, reject) =>
            bypass('END', (error: Error | null) => (error ? reject(error) : resolve())),
          ),
      ],
      ['COMMIT AND CHAIN', () => bypass('COMMIT AND CHAIN')],
      ['PREPARE TRANSACTION', () => bypass("PREPARE TRANSACTION 'ke_test'")],
      ['in a multi-statement query', () => bypass(`SELECT 1; /* done */ commit`)],
      ['SAVEPOINT', () => bypass('SAVEPOINT s')],
      ['RELEASE', () => bypass('RELEASE SAVEPOINT s')],
      ['ROLLBACK TO', () => bypass('ROLLBACK TO SAVEPOINT s')],
    ]
    for (const [form, send] of forms) {
      await client.query('BEGIN')
      await client.query('SAVEPOINT s')
      await insertOrder(client, `o-${form}`)
      await outbox.in(client, { holdWrites: true }).orders.produce(event(`m-${form}`))
      await assert.rejects(send(), (error: { code?: string; message: string; hint?: string }) => {
        assert.equal(error.code, 'KE001', `${form}: ${error.message}`)
        assert.match(error.message, /bypassed the client query method/)
        assert.match(error.hint ?? '', /client\.query/)
        return true
      })
      // node-postgres rejects on the error, before it reads the server's transaction state.
      await client.query('SELECT 1')
      assert.equal(client.getTransactionStatus(), 'I', `${form}: no transaction left open`)
      assert.deepEqual(await stored('orders'), [], `${form}: no business row committed`)
      assert.deepEqual(await stored('outbox'), [], `${form}: no message committed`)
    }
    // A plain ROLLBACK past the wrapped query drops the held message with its transaction.
    await client.query('BEGIN')
    await outbox.in(client, { holdWrites: true }).orders.produce(event('m-rolled-back'))
    await bypass('ROLLBACK')
    await client.query('BEGIN')
    await insertOrder(client, 'o-after')
    await client.query('COMMIT')
    assert.deepEqual(await stored('orders'), ['o-after'])
    assert.deepEqual(await stored('outbox'), [], 'nothing rode on the next transaction')
    // Past the wrapped query, statements that keep the transaction open do no harm.
    await client.query('BEGIN')
    await outbox.in(client, { holdWrites: true }).orders.produce(event('m-kept'))
    await bypass('SELECT 1')
    await client.query('COMMIT')
    assert.deepEqual(await stored('outbox'), ['m-kept'])
  })

  it('holdWrites: the COMMIT through client.query carries the held messages; business rows and messages are committed and delivered together', async () => {
    await setup()
    await clear()
    const client = await connect()
    const events = [event('h-1', 1), event('h-2', 2), event('h-3', 3)]
    await client.query('BEGIN')
    for (const e of events) {
      await insertOrder(client, e.orderId)
      await outbox.in(client, { holdWrites: true }).orders.produce(e)
    }
    assert.equal((await client.query('COMMIT')).command, 'COMMIT')
    assert.deepEqual(await stored('orders'), ['h-1', 'h-2', 'h-3'])
    assert.deepEqual(await stored('outbox'), ['h-1', 'h-2', 'h-3'])
    const relay = outbox.relay({ connection: DATABASE_URL })
    try {
      assert.equal(await relay.drain(), events.length)
    } finally {
      await relay.stop()
    }
    const consumed = await readTopic({ brokers, topic: topicName, expectedCount: events.length })
    const report = checkDelivery({ expected: tracked(events), observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
  })

  it('holdWrites is checked: a boolean, and only with writeWithCommit', async () => {
    await setup()
    const client = await connect()
    assert.throws(
      () => outbox.in(client, { holdWrites: 'yes' as never }),
      /'holdWrites' must be true or false/,
    )
    assert.throws(() => outbox.in(client, 'hold' as never), /options must be an object/)
    const eager = createPgOutbox({
      topics: { orders: orderTopic(topicName) },
      schema,
      writeWithCommit: false,
    })
    assert.throws(() => eager.in(client, { holdWrites: true }), /needs writeWithCommit/)
  })
})
