import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import pg from 'pg'
import { freePorts } from '../scripts/kafka/ports.ts'
import { type KafkaBroker, startKafkaBroker } from '../scripts/kafka-broker.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import type { RelayEvent } from '../src/core/relay.ts'
import { defineTopic } from '../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  trackingHeaders,
} from '../src/testing/index.ts'
import {
  countRows,
  createTopic,
  DATABASE_URL,
  dropSchema,
  uniqueName,
  waitFor,
  withClient,
} from './support/env.ts'
import { TcpProxy } from './support/tcp-proxy.ts'

/**
 * The network between a relay and Kafka fails: a TCP proxy sits in front of a second listener
 * of the test's own broker, which advertises the proxy's port, so the relay's every Kafka
 * connection (bootstrap and the broker it is sent to) passes the proxy. Producers write to
 * PostgreSQL directly and the checker reads Kafka on the broker's own listener, never the proxy.
 */

/**
 * The relay's Kafka client: a request unanswered for REQUEST_TIMEOUT_MS is retried on a new
 * connection, RETRIES times, so a send into a partition fails after about GIVE_UP_MS; the
 * blackhole lasts twice that, so the relay has to report it and hold the messages meanwhile.
 */
const REQUEST_TIMEOUT_MS = 2000
const RETRIES = 2
const GIVE_UP_MS = REQUEST_TIMEOUT_MS * (RETRIES + 1) + 250 * RETRIES

let broker: KafkaBroker
let proxy: TcpProxy
const schemas: string[] = []
const cleanups: (() => Promise<void>)[] = []

interface Message {
  id: string
  key: string
  seq: number
}

interface Timed {
  at: number
  event: RelayEvent
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function setUp(prefix: string) {
  const schema = uniqueName(prefix)
  schemas.push(schema)
  const topicName = uniqueName(prefix).replaceAll('_', '-')
  const direct = [broker.brokers]
  await createTopic(topicName, 3, direct)
  const topic = defineTopic<Message>({
    name: topicName,
    key: (m) => m.key,
    headers: (m) => trackingHeaders(m.id, m.seq),
  })
  const outbox = createPgOutbox({ topics: { events: topic }, schema })
  await outbox.migrate(DATABASE_URL)
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
  cleanups.push(() => pool.end())
  const events: Timed[] = []
  const relay = outbox.relay({
    connection: DATABASE_URL,
    kafka: {
      brokers: [broker.proxiedBrokers as string],
      requestTimeout: REQUEST_TIMEOUT_MS,
      retries: RETRIES,
    },
    onEvent: (event) => events.push({ at: Date.now(), event }),
  })
  cleanups.push(() => relay.stop({ timeout: 2000 }))
  const expected: Message[] = []
  const seqs = new Map<string, number>()
  let producing = false
  let producer: Promise<void> | undefined
  const produce = async (count: number) => {
    const batch: Message[] = []
    for (let i = 0; i < count; i++) {
      const key = `k-${expected.length % 7}`
      const seq = (seqs.get(key) ?? 0) + 1
      seqs.set(key, seq)
      const message = { id: `m-${expected.length}`, key, seq }
      expected.push(message)
      batch.push(message)
    }
    await outbox.transaction(pool, (_client, topics) => topics.events.produceMany(batch))
  }
  return {
    schema,
    relay,
    produce,
    events,
    expected,
    startProducing() {
      producing = true
      producer = (async () => {
        while (producing) {
          await produce(5)
          await sleep(50)
        }
      })()
    },
    async stopProducing() {
      producing = false
      await producer
    },
    /** Waits for the outbox to empty, reads the topic back directly, checks it: nothing lost, no key out of order. */
    async drainedAndChecked(timeout: number) {
      await waitFor(async () => (await countRows(schema)) === 0, { what: 'outbox drained', timeout })
      const drainedAt = Date.now()
      const consumed = await readTopic({ brokers: direct, topic: topicName, expectedCount: expected.length })
      const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
      assert.ok(report.ok, formatReport(report))
      assert.equal(report.lost, 0)
      assert.equal(report.outOfOrder, 0)
      return { report, drainedAt }
    },
  }
}

describe('a relay partitioned from Kafka (TCP proxy)', () => {
  before(async () => {
    const [proxiedPort] = (await freePorts(1)) as [number]
    proxy = await TcpProxy.start({ host: '127.0.0.1', port: proxiedPort })
    broker = await startKafkaBroker({
      quiet: true,
      proxiedListener: { port: proxiedPort, advertisedPort: proxy.port },
    })
  })

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
    await proxy?.close().catch(() => {})
    await broker?.stop()
    for (const schema of schemas) await dropSchema(schema)
  })

  it('blackhole for twice the time a send takes to give up: the relay reports it, uses no attempt, dead-letters nothing, and delivers everything once the network heals', async () => {
    const setup = await setUp('ke_kpart1')
    await setup.relay.start()
    setup.startProducing()
    await waitFor(() => setup.events.some((e) => e.event.type === 'delivered'), { what: 'first delivery' })
    await sleep(1000)

    const cut = Date.now()
    proxy.blackhole()
    let waiting = 0
    try {
      await sleep(2 * GIVE_UP_MS)
      waiting = await countRows(setup.schema)
    } finally {
      if (proxy.mode === 'blackhole') proxy.forward()
    }
    const healed = Date.now()
    const errors = setup.events.filter((e) => e.at >= cut && e.at < healed && e.event.type === 'error')
    assert.ok(errors.length > 0, 'the relay reported the partition')
    const firstError = errors[0] as Timed
    // Said as what it is: a broker that stopped answering, not a refused or dropped connection.
    assert.match(String((firstError.event as { error: unknown }).error), /Kafka stopped answering/)
    assert.ok(waiting > 0, 'messages piled up in the outbox while Kafka was unreachable')
    const retried = await withClient(async (c) => {
      const result = await c.query(
        `SELECT count(*)::int AS n FROM "${setup.schema}".outbox WHERE attempts > 0`,
      )
      return result.rows[0].n as number
    })
    assert.equal(retried, 0, 'no message used an attempt while Kafka was unreachable')
    await sleep(2000)
    await setup.stopProducing()
    const { report, drainedAt } = await setup.drainedAndChecked(60_000)
    const failed = setup.events.filter((e) => e.event.type === 'message-failed')
    assert.deepEqual(failed, [], 'no message used an attempt or was dead-lettered')
    assert.equal(await countRows(setup.schema, 'outbox_dead_letters'), 0)
    const resumed = setup.events.find((e) => e.at >= healed && e.event.type === 'delivered')
    assert.ok(resumed, 'the relay delivered again after the network healed')
    const resumeMs = resumed.at - healed
    console.log(
      `# kafka blackhole ${healed - cut} ms: first error after ${firstError.at - cut} ms (${(firstError.event as { stage: string }).stage}), ${errors.length} errors, ${waiting} messages waiting; delivering again ${resumeMs} ms after healing, drained ${drainedAt - healed} ms after; ${report.expected} messages, ${report.duplicates} duplicates, 0 lost, 0 out of order`,
    )
    assert.ok(firstError.at - cut <= GIVE_UP_MS + 2000, `noticed only after ${firstError.at - cut} ms`)
    assert.ok(resumeMs <= 30_000, `delivering again only ${resumeMs} ms after the network healed`)
  })

  it('200 ms added each way: delivery continues, in key order', async () => {
    const setup = await setUp('ke_kpart2')
    await setup.relay.start()
    setup.startProducing()
    await waitFor(() => setup.events.some((e) => e.event.type === 'delivered'), { what: 'first delivery' })
    const slowed = Date.now()
    proxy.delay(200)
    try {
      await sleep(6000)
    } finally {
      proxy.forward()
    }
    const during = setup.events.filter((e) => e.at >= slowed && e.event.type === 'delivered')
    await setup.stopProducing()
    const { report } = await setup.drainedAndChecked(60_000)
    assert.ok(during.length > 0, 'the relay delivered while every chunk was 200 ms late')
    const failed = setup.events.filter((e) => e.event.type === 'message-failed')
    assert.deepEqual(failed, [], 'latency used no attempt')
    const sent = during.reduce((n, e) => n + (e.event as { count: number }).count, 0)
    console.log(
      `# kafka +200 ms: ${during.length} deliveries (${sent} messages) in 6 s of latency, ${setup.events.filter((e) => e.at >= slowed && e.event.type === 'error').length} errors; ${report.expected} messages, ${report.duplicates} duplicates, 0 lost, 0 out of order`,
    )
  })

  it('every connection reset again and again during sends: nothing lost, no key out of order', async () => {
    const setup = await setUp('ke_kpart3')
    await setup.relay.start()
    setup.startProducing()
    await waitFor(() => setup.events.some((e) => e.event.type === 'delivered'), { what: 'first delivery' })
    const begin = Date.now()
    const resetsBefore = proxy.resets
    for (let i = 0; i < 5; i++) {
      proxy.drop()
      try {
        await sleep(300)
      } finally {
        proxy.forward()
      }
      await sleep(1200)
    }
    const healed = Date.now()
    await sleep(1000)
    await setup.stopProducing()
    const { report, drainedAt } = await setup.drainedAndChecked(60_000)
    const errors = setup.events.filter((e) => e.at >= begin && e.event.type === 'error')
    const failed = setup.events.filter((e) => e.event.type === 'message-failed')
    assert.deepEqual(failed, [], 'resets used no attempt')
    const resets = proxy.resets - resetsBefore
    assert.ok(resets >= 5, `the relay's connections were reset (${resets})`)
    console.log(
      `# kafka drop x5: ${resets} connections reset, ${errors.length} errors, drained ${drainedAt - healed} ms after the last reset; ${report.expected} messages, ${report.duplicates} duplicates, 0 lost, 0 out of order`,
    )
  })

  it('idle through a blackhole: the first send after healing, on a connection the partition left dead, is delivered within about one request timeout', async () => {
    const setup = await setUp('ke_kpart4')
    await setup.relay.start()
    await setup.produce(20)
    await waitFor(async () => (await countRows(setup.schema)) === 0, { what: 'first batch delivered' })
    proxy.blackhole()
    try {
      await sleep(3000)
    } finally {
      proxy.forward()
    }
    const healed = Date.now()
    await setup.produce(20)
    const { report, drainedAt } = await setup.drainedAndChecked(60_000)
    const failed = setup.events.filter((e) => e.event.type === 'message-failed')
    assert.deepEqual(failed, [], 'the dead connection used no attempt')
    const errors = setup.events.filter((e) => e.at >= healed && e.event.type === 'error')
    console.log(
      `# kafka idle through a blackhole: delivered ${drainedAt - healed} ms after healing (${errors.length} errors); ${report.expected} messages, ${report.duplicates} duplicates, 0 lost, 0 out of order`,
    )
    assert.ok(drainedAt - healed <= GIVE_UP_MS + 5000, `took ${drainedAt - healed} ms after healing`)
  })
})
