import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { createPostgresJsOutbox } from '../src/adapters/postgres-js/index.ts'
import { createPrismaMysqlOutbox } from '../src/adapters/prisma/mysql.ts'
import type { RelayEvent } from '../src/core/relay.ts'
import { defineTopic, type OutboxRecord } from '../src/index.ts'
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
import { TcpProxy } from './support/tcp-proxy.ts'

/**
 * A network partition between relays and their database (PostgreSQL, MariaDB), made by a TCP
 * proxy the relays connect through (producers connect directly): the proxy forwards nothing and
 * closes nothing, so neither side hears a disconnect. Relay options are the defaults except where a test says otherwise.
 */

const brokers = kafkaBrokers()
const schemas: string[] = []
const databases: string[] = []
const proxies: TcpProxy[] = []
const stops: (() => Promise<void>)[] = []

interface Message {
  id: string
  key: string
  seq: number
}

interface Timed {
  at: number
  event: RelayEvent
}

function throughProxy(proxy: TcpProxy): string {
  const url = new URL(DATABASE_URL)
  url.hostname = '127.0.0.1'
  url.port = String(proxy.port)
  return url.toString()
}

function postgresTarget(): { host: string; port: number } {
  const url = new URL(DATABASE_URL)
  return { host: url.hostname, port: Number(url.port || 5432) }
}

function mariadbTarget(): { host: string; port: number } {
  const url = new URL(MYSQL_URL)
  return { host: url.hostname, port: Number(url.port || 3306) }
}

function mariadbThroughProxy(proxy: TcpProxy): string {
  const url = new URL(MYSQL_URL)
  url.hostname = '127.0.0.1'
  url.port = String(proxy.port)
  return url.toString()
}

async function setUp(
  prefix: string,
  database: 'postgres' | 'mariadb' = 'postgres',
  relayDriver: 'pg' | 'postgres-js' | 'mariadb' = 'pg',
) {
  const schema = uniqueName(prefix)
  const topicName = uniqueName(prefix).replaceAll('_', '-')
  await createTopic(topicName, 3)
  const topic = defineTopic<Message>({
    name: topicName,
    key: (m) => m.key,
    headers: (m) => trackingHeaders(m.id, m.seq),
  })
  let commit: (batch: Message[]) => Promise<void>
  let pending: () => Promise<number>
  let relay: (options: Record<string, unknown>) => ReturnType<ReturnType<typeof createPgOutbox>['relay']>
  if (database === 'postgres') {
    schemas.push(schema)
    const outbox = createPgOutbox({ topics: { events: topic }, schema, kafka: { brokers } })
    await outbox.migrate(DATABASE_URL)
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
    stops.push(() => pool.end())
    commit = (batch) => outbox.transaction(pool, (_client, topics) => topics.events.produceMany(batch))
    pending = () => countRows(schema)
    // Producers write with node-postgres; the relay may run on postgres.js, on the same table.
    const relayOutbox =
      relayDriver === 'pg'
        ? outbox
        : createPostgresJsOutbox({ topics: { events: topic }, schema, kafka: { brokers } })
    relay = (options) => relayOutbox.relay(options)
  } else {
    databases.push(schema)
    const outbox = createMysqlOutbox({ topics: { events: topic }, schema, kafka: { brokers } })
    await outbox.migrate(MYSQL_URL)
    const pool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 2 })
    stops.push(() => pool.end())
    commit = (batch) => outbox.transaction(pool, (_conn, topics) => topics.events.produceMany(batch))
    pending = () => countMysqlRows(schema)
    // Producers write with mysql2; the relay may run on the mariadb driver (Prisma's), same table.
    const relayOutbox =
      relayDriver === 'mariadb'
        ? createPrismaMysqlOutbox({ topics: { events: topic }, schema, kafka: { brokers } })
        : outbox
    relay = (options) => relayOutbox.relay(options) as ReturnType<typeof outbox.relay>
  }
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
    await commit(batch)
  }
  return {
    schema,
    topicName,
    relay,
    pending,
    expected,
    produce,
    /** Commits a few messages every 50 ms until `stopProducing()`. */
    startProducing() {
      producing = true
      producer = (async () => {
        while (producing) {
          await produce(5)
          await new Promise((resolve) => setTimeout(resolve, 50))
        }
      })()
    },
    async stopProducing() {
      producing = false
      await producer
    },
    async drainedAndChecked() {
      await waitFor(async () => (await pending()) === 0, { what: 'outbox drained', timeout: 90_000 })
      const consumed = await readTopic({ brokers, topic: topicName, expectedCount: expected.length })
      const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
      assert.ok(report.ok, formatReport(report))
      assert.equal(report.lost, 0)
      assert.equal(report.outOfOrder, 0)
      return report
    },
  }
}

function recorder(): { events: Timed[]; onEvent: (event: RelayEvent) => void } {
  const events: Timed[] = []
  return { events, onEvent: (event) => events.push({ at: Date.now(), event }) }
}

describe('relays partitioned from their database', () => {
  after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {})
    for (const proxy of proxies) await proxy.close().catch(() => {})
    for (const schema of schemas) await dropSchema(schema)
    for (const database of databases) await dropDatabase(database)
  })

  it('PostgreSQL: a single relay notices within ~15 s, and after the network heals delivers everything in order', () =>
    singleRelayPartitioned('postgres'))
  it('PostgreSQL, exclusive: a standby takes over from a leader partitioned mid-claim within seconds, and no key goes out of order', () =>
    exclusiveLeaderPartitioned('postgres', 'mid-claim'))
  it('PostgreSQL, exclusive: the same with an idle leader', () =>
    exclusiveLeaderPartitioned('postgres', 'idle'))
  it('PostgreSQL, postgres.js relay: a single relay notices a partition and delivers everything after it healed', () =>
    singleRelayPartitioned('postgres', { relayDriver: 'postgres-js' }))
  it('MariaDB, mariadb driver (Prisma) relay: a single relay notices a partition and delivers everything after it healed', () =>
    singleRelayPartitioned('mariadb', { relayDriver: 'mariadb' }))
  it('PostgreSQL: connections dropped for 5 s: the relay notices at once and resumes', () =>
    singleRelayPartitioned('postgres', { fault: 'drop' }))
  it('PostgreSQL: a healthy relay whose batch takes 12 s in Kafka keeps its claim (heartbeats)', () =>
    slowKafkaKeepsClaim('postgres'))
  it('MariaDB: a healthy relay whose batch takes 12 s in Kafka keeps its claim (heartbeats)', () =>
    slowKafkaKeepsClaim('mariadb'))
  it('MariaDB: a single relay notices within ~15 s, and after the network heals delivers everything in order', () =>
    singleRelayPartitioned('mariadb'))
  it('MariaDB, exclusive: a standby takes over from a leader partitioned mid-claim within seconds, and no key goes out of order', () =>
    exclusiveLeaderPartitioned('mariadb', 'mid-claim'))
  it('MariaDB, exclusive: the same with an idle leader', () => exclusiveLeaderPartitioned('mariadb', 'idle'))
})

function viaProxy(database: 'postgres' | 'mariadb', proxy: TcpProxy): string {
  return database === 'postgres' ? throughProxy(proxy) : mariadbThroughProxy(proxy)
}

async function singleRelayPartitioned(
  database: 'postgres' | 'mariadb',
  {
    relayDriver = 'pg',
    fault = 'blackhole',
  }: { relayDriver?: 'pg' | 'postgres-js' | 'mariadb'; fault?: 'blackhole' | 'drop' } = {},
) {
  const proxy = await TcpProxy.start(database === 'postgres' ? postgresTarget() : mariadbTarget())
  proxies.push(proxy)
  const setup = await setUp('ke_part1', database, relayDriver)
  const { events, onEvent } = recorder()
  const relay = setup.relay({ connection: viaProxy(database, proxy), onEvent })
  stops.push(() => relay.stop({ timeout: 2000 }))
  await relay.start()
  setup.startProducing()
  await waitFor(() => events.some((e) => e.event.type === 'delivered'), { what: 'first delivery' })
  await new Promise((resolve) => setTimeout(resolve, 1000))

  const cut = Date.now()
  if (fault === 'blackhole') proxy.blackhole()
  else proxy.drop()
  await new Promise((resolve) => setTimeout(resolve, fault === 'blackhole' ? 20_000 : 5000))
  const firstError = events.find((e) => e.at >= cut && e.event.type === 'error')
  assert.ok(firstError, 'the relay reported an error while partitioned')
  const noticedMs = firstError.at - cut
  proxy.forward()
  const healed = Date.now()
  await new Promise((resolve) => setTimeout(resolve, 3000))
  await setup.stopProducing()
  const report = await setup.drainedAndChecked()
  const resumed = events.find((e) => e.at >= healed && e.event.type === 'delivered')
  assert.ok(resumed, 'the relay delivered again after the network healed')
  console.log(
    `# ${database}${relayDriver === 'pg' ? '' : ` (${relayDriver} relay)`}, single relay, ${fault}: noticed after ${noticedMs} ms (${(firstError.event as { stage: string }).stage}), delivering again ${resumed.at - healed} ms after healing; ${report.expected} messages, ${report.duplicates} duplicates, 0 lost, 0 out of order`,
  )
  assert.ok(
    noticedMs <= (fault === 'blackhole' ? 20_000 : 2000),
    `the relay noticed the ${fault} only after ${noticedMs} ms`,
  )
}

async function exclusiveLeaderPartitioned(database: 'postgres' | 'mariadb', leaderIs: 'mid-claim' | 'idle') {
  const proxy = await TcpProxy.start(database === 'postgres' ? postgresTarget() : mariadbTarget())
  proxies.push(proxy)
  const setup = await setUp('ke_part2', database)
  // Mid-claim: the leader's batches take a second in Kafka under a steady load, so the partition
  // catches its session in an open transaction. Idle: nothing to relay, its session sits between polls.
  const kafka = new KafkaTransport({ brokers })
  const slowKafka = {
    async send(records: readonly OutboxRecord[]) {
      if (leaderIs === 'mid-claim') await new Promise((resolve) => setTimeout(resolve, 1000))
      await kafka.send(records)
    },
    close: () => kafka.close(),
  }
  const leaderLog = recorder()
  const leader = setup.relay({
    connection: viaProxy(database, proxy),
    mode: 'exclusive',
    kafka: slowKafka,
    onEvent: leaderLog.onEvent,
  })
  stops.push(() => leader.stop({ timeout: 2000 }))
  await leader.start()
  await waitFor(() => leader.isLeader, { what: 'the relay behind the proxy leading' })
  const standbyLog = recorder()
  const standby = setup.relay({
    connection: database === 'postgres' ? DATABASE_URL : MYSQL_URL,
    mode: 'exclusive',
    onEvent: standbyLog.onEvent,
  })
  stops.push(() => standby.stop({ timeout: 2000 }))
  await standby.start()
  setup.startProducing()
  await waitFor(() => leaderLog.events.some((e) => e.event.type === 'delivered'), {
    what: 'the leader delivering',
  })
  if (leaderIs === 'idle') {
    await setup.stopProducing()
    await waitFor(async () => (await setup.pending()) === 0, { what: 'the leader idle' })
  }
  await new Promise((resolve) => setTimeout(resolve, 1500))
  assert.equal(standby.isLeader, false)

  const cut = Date.now()
  proxy.blackhole()
  await waitFor(() => standby.isLeader, { what: 'the standby taking over', timeout: 60_000 })
  const takeoverMs = Date.now() - cut
  await waitFor(() => leaderLog.events.some((e) => e.at >= cut && e.event.type === 'error'), {
    what: 'the partitioned leader noticing',
    timeout: 30_000,
  })
  const noticed = leaderLog.events.find((e) => e.at >= cut && e.event.type === 'error') as Timed
  // Once it noticed, the old leader gave its leadership up and deleted nothing more.
  assert.equal(leader.isLeader, false)
  const deletedAfter = leaderLog.events.filter((e) => e.at >= noticed.at && e.event.type === 'delivered')
  assert.equal(deletedAfter.length, 0, 'the partitioned leader reported no delivery after it noticed')

  proxy.forward()
  if (leaderIs === 'idle') await setup.produce(50)
  await new Promise((resolve) => setTimeout(resolve, 2000))
  await setup.stopProducing()
  const report = await setup.drainedAndChecked()
  console.log(
    `# ${database}, exclusive, leader ${leaderIs}: standby leading ${takeoverMs} ms after the partition began; the old leader noticed after ${noticed.at - cut} ms (${(noticed.event as { stage: string }).stage}); ${report.expected} messages, ${report.duplicates} duplicates, 0 lost, 0 out of order`,
  )
  assert.ok(takeoverMs <= 20_000, `takeover took ${takeoverMs} ms`)
}

/**
 * The server ends a relay session silent for 8 s in a claim (so a partitioned leader is replaced
 * quickly), but a healthy relay pings its open claim: a batch that takes longer in Kafka is
 * neither cut off nor sent twice.
 */
async function slowKafkaKeepsClaim(database: 'postgres' | 'mariadb') {
  const setup = await setUp('ke_slow', database)
  const kafka = new KafkaTransport({ brokers })
  let first = true
  const slowOnce = {
    async send(records: readonly OutboxRecord[]) {
      if (first) {
        first = false
        await new Promise((resolve) => setTimeout(resolve, 12_000))
      }
      await kafka.send(records)
    },
    close: () => kafka.close(),
  }
  const { events, onEvent } = recorder()
  const relay = setup.relay({
    connection: database === 'postgres' ? DATABASE_URL : MYSQL_URL,
    kafka: slowOnce,
    onEvent,
  })
  stops.push(() => relay.stop({ timeout: 2000 }))
  await setup.produce(30)
  await relay.start()
  const report = await setup.drainedAndChecked()
  const errors = events.filter((e) => e.event.type === 'error')
  assert.deepEqual(
    errors.map((e) => String((e.event as { error: unknown }).error)),
    [],
    'no error while the batch waited for Kafka',
  )
  assert.equal(report.duplicates, 0)
}
