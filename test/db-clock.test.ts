import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { defineTopic, ErrorCodes, KEntityError, type OutboxRecord, type RelayEvent } from '../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  trackingHeaders,
} from '../src/testing/index.ts'
import { KafkaTransport } from '../src/transports/kafka/index.ts'
import { countMysqlRows, dropDatabase, MYSQL_URL } from './contract/mysql-support.ts'
import {
  countRows,
  createTopic,
  DATABASE_URL,
  dropSchema,
  kafkaBrokers,
  uniqueName,
  waitFor,
} from './support/env.ts'

/**
 * Retry times come from the database's clock, not the relay's: with the relay's clock an hour
 * ahead, a message whose first sends fail is retried after its backoff (a quarter of a second),
 * not an hour later. Kafka is real; the transport refuses the message's first sends on purpose
 * (a transient error), since what is tested is the relay's timing, not Kafka's.
 */

const brokers = kafkaBrokers()
const HOUR = 3_600_000
const cleanups: (() => Promise<void>)[] = []

interface Message {
  id: string
  key: string
  seq: number
}

/**
 * Real Kafka, except that the first 4 sends carrying `poisonId` fail as a broker hiccup would:
 * the relay retries its batch twice, then sends the messages one by one, finds the poison
 * message failing alone and records that failure with a retry time.
 */
function flakyKafka(poisonId: string) {
  const kafka = new KafkaTransport({ brokers })
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

function topicFor(name: string) {
  return defineTopic<Message>({ name, key: (m) => m.key, headers: (m) => trackingHeaders(m.id, m.seq) })
}

const expected: Message[] = [
  { id: 'poison', key: 'a', seq: 1 },
  { id: 'fine', key: 'b', seq: 1 },
  { id: 'after-poison', key: 'a', seq: 2 },
]

async function checkRetriedSoon(
  events: { at: number; event: RelayEvent }[],
  topicName: string,
  drained: () => Promise<boolean>,
  started: number,
) {
  await waitFor(drained, { what: 'outbox drained', timeout: 30_000 })
  const tookMs = Date.now() - started
  const failed = events.find((e) => e.event.type === 'message-failed')?.event
  assert.ok(failed && failed.type === 'message-failed', 'the poison message failed once on its own')
  assert.equal(failed.deadLettered, false)
  // The event's time is the relay's (wrong) clock, an hour ahead: for observers only.
  assert.ok((failed.retryAt?.getTime() ?? 0) > Date.now() + HOUR / 2)
  const consumed = await readTopic({ brokers, topic: topicName, expectedCount: expected.length })
  const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
  assert.ok(report.ok, formatReport(report))
  return tookMs
}

describe('retry times on the database clock, relay clock one hour ahead', () => {
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  })

  it('PostgreSQL: the failed message is retried after its backoff, not after an hour', async () => {
    const schema = uniqueName('ke_clock')
    cleanups.push(() => dropSchema(schema))
    const topicName = uniqueName('clock').replaceAll('_', '-')
    await createTopic(topicName, 1)
    const outbox = createPgOutbox({ topics: { events: topicFor(topicName) }, schema, kafka: { brokers } })
    await outbox.migrate(DATABASE_URL)
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
    cleanups.push(() => pool.end())
    await outbox.transaction(pool, (_c, topics) => topics.events.produceMany(expected))
    const events: { at: number; event: RelayEvent }[] = []
    const relay = outbox.relay({
      connection: DATABASE_URL,
      kafka: flakyKafka('poison'),
      now: () => Date.now() + HOUR,
      retryBackoff: { initial: 250, max: 1000 },
      onEvent: (event) => events.push({ at: Date.now(), event }),
    })
    cleanups.push(() => relay.stop({ timeout: 2000 }))
    const started = Date.now()
    await relay.start()
    const tookMs = await checkRetriedSoon(
      events,
      topicName,
      async () => (await countRows(schema)) === 0,
      started,
    )
    console.log(`# PostgreSQL: all delivered ${tookMs} ms after the relay started`)
    assert.ok(tookMs < 20_000)
  })

  it('MariaDB: the failed message is retried after its backoff, not after an hour', async () => {
    const database = uniqueName('ke_clock')
    cleanups.push(() => dropDatabase(database))
    const topicName = uniqueName('clock').replaceAll('_', '-')
    await createTopic(topicName, 1)
    const outbox = createMysqlOutbox({
      topics: { events: topicFor(topicName) },
      schema: database,
      kafka: { brokers },
    })
    await outbox.migrate(MYSQL_URL)
    const pool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 1 })
    cleanups.push(() => pool.end())
    await outbox.transaction(pool, (_c, topics) => topics.events.produceMany(expected))
    const events: { at: number; event: RelayEvent }[] = []
    const relay = outbox.relay({
      connection: MYSQL_URL,
      kafka: flakyKafka('poison'),
      now: () => Date.now() + HOUR,
      retryBackoff: { initial: 250, max: 1000 },
      onEvent: (event) => events.push({ at: Date.now(), event }),
    })
    cleanups.push(() => relay.stop({ timeout: 2000 }))
    const started = Date.now()
    await relay.start()
    const tookMs = await checkRetriedSoon(
      events,
      topicName,
      async () => (await countMysqlRows(database)) === 0,
      started,
    )
    console.log(`# MariaDB: all delivered ${tookMs} ms after the relay started`)
    assert.ok(tookMs < 20_000)
  })
})
