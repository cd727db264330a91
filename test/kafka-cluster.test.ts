import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Admin } from '@platformatic/kafka'
import pg from 'pg'
import { freePorts } from '../scripts/kafka/ports.ts'
import { type KafkaCluster, startKafkaCluster } from '../scripts/kafka-broker.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import type { OutboxRecord } from '../src/core/record.ts'
import type { SendFailure } from '../src/core/seams.ts'
import { defineTopic, type RelayEvent } from '../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  type TrackedMessage,
  trackingHeaders,
} from '../src/testing/index.ts'
import { KafkaTransport } from '../src/transports/kafka/index.ts'
import { countRows, createTopic, DATABASE_URL, dropSchema, uniqueName, waitFor } from './support/env.ts'
import { TcpProxy } from './support/tcp-proxy.ts'

const schema = uniqueName('ke_cluster')
const schema2 = uniqueName('ke_cluster_isr')
const topicName = uniqueName('cluster').replaceAll('_', '-')
const KEYS = 64
/** 500 messages a second: a transaction of 10 every 20 ms. */
const TICK_MS = 20
const PER_TICK = 10
/**
 * With acks=all every partition whose ISR holds the dead broker waits until the controller
 * fences it (broker.session.timeout.ms, 9 s by default), leaders of live brokers included: the
 * floor of any commit-to-Kafka latency right after a kill, whatever the producer does.
 */
const SESSION_TIMEOUT_MS = 3000
let cluster: KafkaCluster | undefined
/** One per broker, in front of its PROXIED listener. */
let proxies: TcpProxy[] = []

interface Event {
  id: string
  key: string
  seq: number
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number
}

describe('three-broker cluster: one broker dies under load', () => {
  before(async () => {
    const targets = await freePorts(3)
    proxies = await Promise.all(targets.map((port) => TcpProxy.start({ host: '127.0.0.1', port })))
    cluster = await startKafkaCluster({
      brokers: 3,
      quiet: true,
      brokerSessionTimeoutMs: SESSION_TIMEOUT_MS,
      proxiedListeners: targets.map((port, i) => ({ port, advertisedPort: (proxies[i] as TcpProxy).port })),
    })
  })
  after(async () => {
    await cluster?.stop()
    for (const proxy of proxies) await proxy.close().catch(() => {})
    await dropSchema(schema)
    await dropSchema(schema2)
  })

  it('per-broker proxies: a client bootstrapping at proxiedBrokers reaches every broker only through its proxy', async () => {
    const c = cluster as KafkaCluster
    const topic = uniqueName('cluster-proxied').replaceAll('_', '-')
    await createTopic(topic, 6, c.brokers)
    const before = proxies.map((p) => p.accepted)
    const transport = new KafkaTransport({ brokers: c.proxiedBrokers as string[] })
    const expected: TrackedMessage[] = Array.from({ length: 60 }, (_, i) => ({
      id: `p-${i}`,
      key: `k-${i % 12}`,
      seq: Math.floor(i / 12) + 1,
    }))
    try {
      await transport.send(
        expected.map(
          (m): OutboxRecord => ({
            topic,
            key: Buffer.from(m.key as string),
            value: Buffer.from(m.id),
            headers: Object.entries(trackingHeaders(m.id, m.seq)).map(([k, v]) => [k, Buffer.from(v)]),
            orderingHash: null,
          }),
        ),
      )
    } finally {
      await transport.close()
    }
    const consumed = await readTopic({ brokers: c.brokers, topic, expectedCount: expected.length })
    const report = checkDelivery({ expected, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
    const through = proxies.map((p, i) => p.accepted - (before[i] as number))
    // Six partitions over three brokers: every broker leads some, so every proxy carried a connection.
    assert.ok(
      through.every((n) => n > 0),
      `connections through each broker's proxy: ${through.join(', ')}`,
    )
  })

  it('messages of partitions whose leader lives keep flowing; nothing uses an attempt, is lost or reordered', async (t) => {
    const c = cluster as KafkaCluster
    const events = defineTopic<Event>({
      name: topicName,
      partitions: 6,
      replicationFactor: 3,
      // The broker stamps each record when it writes it: commit-to-Kafka latency, on one clock.
      configs: { 'message.timestamp.type': 'LogAppendTime', 'min.insync.replicas': '2' },
      key: (e) => e.key,
      headers: (e) => trackingHeaders(e.id, e.seq),
    })
    const outbox = createPgOutbox({ topics: { events }, schema, kafka: { brokers: c.brokers } })
    await outbox.migrate(DATABASE_URL)
    await outbox.ensureTopics()
    const admin = new Admin({ clientId: 'k-entity-cluster-test', bootstrapBrokers: c.brokers })
    const leaders = new Map<number, number>()
    try {
      const metadata = await admin.metadata({ topics: [topicName], forceUpdate: true })
      for (const [index, partition] of (metadata.topics.get(topicName)?.partitions ?? []).entries())
        leaders.set(index, partition.leader)
    } finally {
      await admin.close()
    }
    const led = new Map<number, number>()
    for (const leader of leaders.values()) led.set(leader, (led.get(leader) ?? 0) + 1)
    const victim = [...led.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] as number
    const livePartitions = new Set([...leaders].filter(([, leader]) => leader !== victim).map(([p]) => p))
    t.diagnostic(`leaders by partition ${JSON.stringify([...leaders])}; killing broker ${victim}`)

    const seen: { at: number; event: RelayEvent }[] = []
    const relay = outbox.relay({
      connection: DATABASE_URL,
      pollingInterval: 10,
      onEvent: (event) => seen.push({ at: Date.now(), event }),
    })
    t.after(() => relay.stop())
    await relay.start()
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 })
    t.after(() => pool.end().catch(() => {}))

    const committed: TrackedMessage[] = []
    const commitTimes = new Map<string, number>()
    const seqs = new Map<string, number>()
    let producing = true
    let n = 0
    const producer = (async () => {
      let next = performance.now()
      while (producing) {
        const batch: Event[] = []
        for (let i = 0; i < PER_TICK; i++) {
          const key = `key-${n % KEYS}`
          const seq = (seqs.get(key) ?? 0) + 1
          seqs.set(key, seq)
          batch.push({ id: `m-${n}`, key, seq })
          n++
        }
        await outbox.transaction(pool, (_client, topics) => topics.events.produceMany(batch))
        const now = Date.now()
        for (const e of batch) {
          commitTimes.set(e.id, now)
          committed.push({ id: e.id, key: e.key, seq: e.seq })
        }
        next += TICK_MS
        const wait = next - performance.now()
        if (wait > 0) await sleep(wait)
      }
    })()

    await sleep(3000)
    const killedAt = Date.now()
    await c.kill(victim, 'SIGKILL')
    await sleep(15_000)
    producing = false
    await producer
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'outbox drained', timeout: 60_000 })
    const restarting = c.restart(victim)

    const consumed = await readTopic({
      brokers: c.brokers,
      topic: topicName,
      expectedCount: committed.length,
    })
    await relay.stop()
    await restarting
    const report = checkDelivery({ expected: committed, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
    assert.equal(report.lost, 0)
    assert.equal(report.outOfOrder, 0)

    const latency = (partitions: (p: number) => boolean) =>
      consumed
        .filter((m) => partitions(m.partition))
        .map((m) => {
          const id = observedFromConsumed([m])[0]?.id as string
          const at = commitTimes.get(id) as number
          return { at, ms: Number(m.timestamp) - at }
        })
        .filter((x) => x.at >= killedAt)
        .map((x) => x.ms)
        .sort((a, b) => a - b)
    const live = latency((p) => livePartitions.has(p))
    const dead = latency((p) => !livePartitions.has(p))
    const failed = seen.filter((s) => s.event.type === 'message-failed')
    const held = seen.filter((s) => s.event.type === 'held')
    const errors = seen.filter((s) => s.event.type === 'error')
    t.diagnostic(
      `committed ${committed.length}, duplicates ${report.duplicates}; after the kill: live partitions ${[...livePartitions].join(',')} p50 ${percentile(live, 50)} ms p99 ${percentile(live, 99)} ms max ${live.at(-1)} ms (${live.length} messages); dead broker's partitions p50 ${percentile(dead, 50)} ms p99 ${percentile(dead, 99)} ms max ${dead.at(-1)} ms; held events ${held.length}, error events ${errors.length}, message-failed ${failed.length}`,
    )
    assert.equal(failed.length, 0, `no message used an attempt: ${JSON.stringify(failed.slice(0, 3))}`)
    assert.ok(live.length > 1000, `${live.length} messages on live partitions after the kill`)
    // Bounded by the fencing time (see SESSION_TIMEOUT_MS), plus slack for a loaded 2-core machine.
    assert.ok(
      percentile(live, 99) <= SESSION_TIMEOUT_MS + 3000,
      `live partitions' p99 ${percentile(live, 99)} ms`,
    )
    assert.equal(c.nodes.find((node) => node.nodeId === victim)?.alive, true, 'the broker is back')
  })
  it('a topic short of in-sync replicas waits without using attempts, in key order, while another topic flows', async (t) => {
    const c = cluster as KafkaCluster
    const strictName = uniqueName('strict').replaceAll('_', '-')
    const lenientName = uniqueName('lenient').replaceAll('_', '-')
    const topic = (name: string, minIsr: string) =>
      defineTopic<Event>({
        name,
        partitions: 3,
        replicationFactor: 3,
        configs: { 'message.timestamp.type': 'LogAppendTime', 'min.insync.replicas': minIsr },
        key: (e) => e.key,
        headers: (e) => trackingHeaders(e.id, e.seq),
      })
    const outbox = createPgOutbox({
      topics: { strict: topic(strictName, '2'), lenient: topic(lenientName, '1') },
      schema: schema2,
      kafka: { brokers: c.brokers },
    })
    await outbox.migrate(DATABASE_URL)
    await outbox.ensureTopics()
    const seen: { at: number; event: RelayEvent }[] = []
    const relay = outbox.relay({
      connection: DATABASE_URL,
      pollingInterval: 10,
      // While both topics wait for the shrunk ISR, every send fails and the relay backs off as
      // from an outage; a short cap keeps that backoff from hiding the one-broker window below.
      retryBackoff: { initial: 100, max: 1000 },
      onEvent: (event) => seen.push({ at: Date.now(), event }),
    })
    t.after(() => relay.stop())
    await relay.start()
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 })
    t.after(() => pool.end().catch(() => {}))
    const committed = { strict: [] as TrackedMessage[], lenient: [] as TrackedMessage[] }
    const seqs = new Map<string, number>()
    let producing = true
    let n = 0
    const producer = (async () => {
      while (producing) {
        const batch = { strict: [] as Event[], lenient: [] as Event[] }
        for (const which of ['strict', 'lenient'] as const) {
          for (let i = 0; i < 5; i++) {
            const key = `${which}-${n % 16}`
            const seq = (seqs.get(key) ?? 0) + 1
            seqs.set(key, seq)
            batch[which].push({ id: `${which}-${n}`, key, seq })
            n++
          }
        }
        await outbox.transaction(pool, async (_client, topics) => {
          await topics.strict.produceMany(batch.strict)
          await topics.lenient.produceMany(batch.lenient)
        })
        for (const which of ['strict', 'lenient'] as const)
          committed[which].push(...batch[which].map((e) => ({ id: e.id, key: e.key, seq: e.seq })))
        await sleep(TICK_MS)
      }
    })()
    await sleep(2000)
    // One broker left: the strict topic (min.insync.replicas 2) refuses writes with
    // NOT_ENOUGH_REPLICAS, the lenient one (1) takes them.
    await Promise.all([c.kill(2), c.kill(3)])
    const downAt = Date.now()
    // The first produce requests after the kill wait for Kafka's request timeout (10 s): the
    // leader holds an acks=all write until its ISR answers, and a shrunk ISR does not complete it.
    await sleep(12_000)
    // The transport alone, on the same broker and topics: the lenient records are acknowledged,
    // the strict ones fail as the broker's answer for their partitions (Kafka is up), not as an outage.
    const transport = new KafkaTransport({ brokers: c.brokers })
    try {
      const record = (name: string, i: number): OutboxRecord => ({
        topic: name,
        key: Buffer.from(`direct-${i}`),
        value: Buffer.from('{}'),
        headers: [],
        orderingHash: null,
      })
      const records = [0, 1, 2].flatMap((i) => [record(strictName, i), record(lenientName, i)])
      const rejection = await transport.send(records).then(
        () => assert.fail('the strict topic took writes with one broker'),
        (error: unknown) => error as { failed?: SendFailure[] },
      )
      const failedTopics = (rejection.failed ?? []).map((f) => records[f.index]?.topic)
      assert.deepEqual(failedTopics, [strictName, strictName, strictName], 'only the strict records failed')
      for (const failure of rejection.failed ?? []) {
        assert.equal(failure.countsAsAttempt, false)
        assert.equal(failure.kafkaAnswered, true, `answered by the broker: ${String(failure.error)}`)
      }
    } finally {
      await transport.close()
    }
    await sleep(Math.max(0, downAt + 16_000 - Date.now()))
    const lenientBefore = committed.lenient.length
    // Writes stamped before this moment were taken with one broker alive.
    const restartAt = Date.now()
    await Promise.all([c.restart(2), c.restart(3)])
    producing = false
    await producer
    await waitFor(async () => (await countRows(schema2)) === 0, { what: 'outbox drained', timeout: 60_000 })
    await relay.stop()
    const held = seen.filter((s) => s.event.type === 'held')
    const failed = seen.filter((s) => s.event.type === 'message-failed')
    const summary: string[] = []
    let lenientDuring = 0
    for (const which of ['strict', 'lenient'] as const) {
      const consumed = await readTopic({
        brokers: c.brokers,
        topic: which === 'strict' ? strictName : lenientName,
        expectedCount: committed[which].length,
      })
      // Untracked: the transport's own records of the check above, not the relay's.
      const tracked = consumed.filter((m) => observedFromConsumed([m], { untracked: 'ignore' }).length > 0)
      const report = checkDelivery({ expected: committed[which], observed: observedFromConsumed(tracked) })
      assert.ok(report.ok, `${which}: ${formatReport(report)}`)
      const during = tracked.filter(
        (m) => Number(m.timestamp) > downAt + 12_000 && Number(m.timestamp) < restartAt,
      )
      summary.push(
        `${which}: committed ${committed[which].length}, written while two brokers were down ${during.length}, duplicates ${report.duplicates}`,
      )
      if (which === 'lenient') lenientDuring = during.length
      else assert.equal(during.length, 0, 'the strict topic refused writes with one broker')
    }
    t.diagnostic(
      `${summary.join('; ')}; held events ${held.length} (${held.reduce((sum, h) => sum + (h.event.type === 'held' ? h.event.ids.length : 0), 0)} messages), message-failed ${failed.length}; lenient committed before restart ${lenientBefore}; first held error: ${held[0]?.event.type === 'held' ? held[0].event.error.slice(0, 200) : '-'}`,
    )
    assert.ok(held.length > 0, 'the strict topic was held')
    assert.equal(failed.length, 0, `no message used an attempt: ${JSON.stringify(failed.slice(0, 2))}`)
    // The strict topic's backlog fills whole claims whose every record a broker refuses: the relay
    // holds those keys instead of taking the batch for an outage, so the lenient rows get claimed.
    assert.ok(
      lenientDuring > 0,
      'the lenient topic took writes while the strict one was short of in-sync replicas',
    )
  })
})
