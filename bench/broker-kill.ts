// Commit→ack latency during a broker kill: our relay beside the raw @platformatic/kafka producer.
//
// Usage: node bench/broker-kill.ts [--session-timeout=3000] [--lag-timeout=MS] [--seconds-after-kill=15] [--settle-early=false]
// `--lag-timeout`: replica.lag.time.max.ms (default: the session timeout).
// Env: DATABASE_URL.
//
// A three-broker cluster (replication factor 3, min.insync.replicas 2, broker.session.timeout.ms
// as given) and one topic of 6 partitions. Two writers share the topic, the same 64 keys and so
// the same partitions, at 500 messages a second each:
// - relay: transactions of 10 messages every 20 ms into a PostgreSQL outbox, relayed by our relay
//   (pipelined, polling every 10 ms); latency = COMMIT returned → our Kafka transport saw the
//   record acknowledged (a wrapper around it, so the relay's own loop and retries are included);
// - raw: the same 10 messages every 20 ms, queued per partition; one sender per partition sends
//   its queue as one Producer.send() (acks=all, idempotent, as our transport configures it) and
//   awaits it before the next, as the Java producer's per-partition batches go; a failed send is
//   sent again. Latency = queued → send() resolved. That is Kafka's and the client's floor: no
//   outbox, and no partition waits for another's acknowledgement.
// `--settle-early=false` hides the transport's `landsWithinMs`, so the relay waits for every send
// as a whole (the relay before issue 18's fix), with the same measurement.
// After a few seconds the broker leading most partitions is killed (SIGKILL); latencies of the
// messages written after the kill are reported separately for the partitions whose leader lived
// ("live") and those the dead broker led ("dead").
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { Admin, compatibilityPartitioner, Producer, stringSerializers } from '@platformatic/kafka'
import pg from 'pg'
import { startKafkaCluster } from '../scripts/kafka-broker.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import type { OutboxRecord } from '../src/core/record.ts'
import type { MessageTransport, SendFailure, SendProgress } from '../src/core/seams.ts'
import { defineTopic } from '../src/index.ts'
import { trackingHeaders } from '../src/testing/index.ts'
import { KafkaTransport } from '../src/transports/kafka/index.ts'

const { values } = parseArgs({
  options: {
    'session-timeout': { type: 'string', default: '3000' },
    'lag-timeout': { type: 'string' },
    'seconds-after-kill': { type: 'string', default: '15' },
    'settle-early': { type: 'string', default: 'true' },
  },
})
const SESSION_TIMEOUT_MS = Number(values['session-timeout'])
const LAG_TIMEOUT_MS = Number(values['lag-timeout'] ?? values['session-timeout'])
if (!Number.isInteger(LAG_TIMEOUT_MS) || LAG_TIMEOUT_MS < 500)
  throw new Error(`--lag-timeout must be an integer of at least 500 (ms), got ${values['lag-timeout']}`)
const AFTER_KILL_MS = Number(values['seconds-after-kill']) * 1000
if (!Number.isInteger(SESSION_TIMEOUT_MS) || SESSION_TIMEOUT_MS < 500)
  throw new Error(
    `--session-timeout must be an integer of at least 500 (ms), got ${values['session-timeout']}`,
  )
if (!Number.isFinite(AFTER_KILL_MS) || AFTER_KILL_MS <= 0)
  throw new Error(`--seconds-after-kill must be a positive number, got ${values['seconds-after-kill']}`)
if (values['settle-early'] !== 'true' && values['settle-early'] !== 'false')
  throw new Error(`--settle-early must be true or false, got ${values['settle-early']}`)
const SETTLE_EARLY = values['settle-early'] === 'true'
const TIMELINE = process.env.BENCH_TIMELINE === '1'
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const KEYS = 64
const TICK_MS = 20
const PER_TICK = 10
const PARTITIONS = 6

/**
 * Records, per tracking id, when our transport saw Kafka acknowledge it: as each produce call
 * returns (`SendProgress`), else when the send settles (partial sends included).
 */
class AckTimes implements MessageTransport {
  readonly acks = new Map<string, number>()
  /** Per tracking id, when the relay first handed it to the transport: splits commit→ack in two. */
  readonly handed = new Map<string, number>()
  readonly inner: MessageTransport
  readonly landsWithinMs: number | undefined

  constructor(inner: MessageTransport, settleEarly: boolean) {
    this.inner = inner
    this.landsWithinMs = settleEarly ? inner.landsWithinMs : undefined
  }

  #record(records: readonly OutboxRecord[], indexes: Iterable<number>): void {
    const at = Date.now()
    for (const index of indexes) {
      const id = trackingId(records[index] as OutboxRecord)
      if (id !== undefined && !this.acks.has(id)) this.acks.set(id, at)
    }
  }

  /** With BENCH_TIMELINE=1: every send, when it was called, its size and when it settled. */
  readonly sends: { at: number; count: number; acks: number[]; settled?: number; failed?: number }[] = []

  async send(records: readonly OutboxRecord[], progress?: SendProgress): Promise<void> {
    const now = Date.now()
    const entry = { at: now, count: records.length, acks: [] as number[] } as (typeof this.sends)[number]
    this.sends.push(entry)
    for (const record of records) {
      const id = trackingId(record)
      if (id !== undefined && !this.handed.has(id)) this.handed.set(id, now)
    }
    let failed: SendFailure[] = []
    try {
      await this.inner.send(records, {
        acknowledged: (indexes) => {
          entry.acks.push(Date.now() - now)
          this.#record(records, indexes)
          progress?.acknowledged(indexes)
        },
      })
    } catch (error) {
      failed =
        (error as { failed?: SendFailure[] }).failed ?? records.map((_, index) => ({ index }) as SendFailure)
      throw error
    } finally {
      entry.settled = Date.now() - now
      entry.failed = failed.length
      const unsent = new Set(failed.map((f) => f.index))
      this.#record(
        records,
        records.map((_, index) => index).filter((index) => !unsent.has(index)),
      )
    }
  }

  close(): Promise<void> {
    return this.inner.close()
  }
}

function trackingId(record: OutboxRecord): string | undefined {
  return record.headers.find(([name]) => name === 'ke-check-id')?.[1]?.toString()
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number
}

function summary(ms: number[]): string {
  const sorted = [...ms].sort((a, b) => a - b)
  return `n ${sorted.length}, p50 ${percentile(sorted, 50)} ms, p99 ${percentile(sorted, 99)} ms, max ${sorted.at(-1)} ms`
}

const partitionOf = (key: string) =>
  compatibilityPartitioner(undefined as never, Buffer.from(key) as never) % PARTITIONS

const cluster = await startKafkaCluster({
  brokers: 3,
  quiet: true,
  brokerSessionTimeoutMs: SESSION_TIMEOUT_MS,
  replicaLagTimeMs: LAG_TIMEOUT_MS,
})
const suffix = `${process.pid}-${Date.now().toString(36)}`
const topicName = `broker-kill-${suffix}`
const schema = `ke_broker_kill_${suffix.replaceAll('-', '_')}`
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 })
try {
  interface Event {
    id: string
    key: string
    seq: number
  }
  const events = defineTopic<Event>({
    name: topicName,
    partitions: PARTITIONS,
    replicationFactor: 3,
    configs: { 'min.insync.replicas': '2' },
    key: (e) => e.key,
    headers: (e) => trackingHeaders(e.id, e.seq),
  })
  const transport = new AckTimes(new KafkaTransport({ brokers: cluster.brokers }), SETTLE_EARLY)
  const outbox = createPgOutbox({ topics: { events }, schema, kafka: transport })
  await outbox.migrate(DATABASE_URL)
  await outbox.ensureTopics({ kafka: { brokers: cluster.brokers } })
  const admin = new Admin({ clientId: 'broker-kill-bench', bootstrapBrokers: cluster.brokers })
  const leaders = new Map<number, number>()
  const metadata = await admin.metadata({ topics: [topicName], forceUpdate: true })
  for (const [index, partition] of (metadata.topics.get(topicName)?.partitions ?? []).entries())
    leaders.set(index, partition.leader)
  await admin.close()
  const led = new Map<number, number>()
  for (const leader of leaders.values()) led.set(leader, (led.get(leader) ?? 0) + 1)
  const victim = [...led.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] as number
  const live = new Set([...leaders].filter(([, leader]) => leader !== victim).map(([p]) => p))

  const raw = new Producer({
    clientId: 'broker-kill-raw',
    bootstrapBrokers: cluster.brokers,
    idempotent: true,
    acks: -1,
    partitioner: compatibilityPartitioner,
    serializers: stringSerializers,
  })
  await raw.send({ messages: [{ topic: topicName, key: 'warm', value: 'warm' }] })
  let held = 0
  const timeline: { at: number; text: string }[] = []
  const relay = outbox.relay({
    connection: DATABASE_URL,
    pollingInterval: 10,
    onEvent: (event) => {
      if (TIMELINE) {
        const { type, ...rest } = event as { type: string } & Record<string, unknown>
        const brief =
          type === 'delivered'
            ? `count ${rest.count} claim ${Math.round(rest.claimMs as number)} send ${Math.round(rest.sendMs as number)} delete ${Math.round(rest.deleteMs as number)} total ${Math.round(rest.durationMs as number)}`
            : type === 'held'
              ? `${(rest.ids as string[]).length} ids, ${String(rest.error).slice(0, 80)}`
              : JSON.stringify(rest).slice(0, 160)
        timeline.push({ at: Date.now(), text: `${type} ${brief}` })
      }
      if (event.type === 'held') held += event.ids.length
    },
  })
  await relay.start()

  const relayCommits = new Map<string, { at: number; key: string }>()
  const rawTimes: { at: number; key: string; ms: number }[] = []
  let rawFailures = 0
  let producing = true
  let n = 0
  /** Runs `tick` every TICK_MS while producing, on a fixed schedule (a slow tick is not made up by waiting). */
  const everyTick = async (tick: () => Promise<void> | void): Promise<void> => {
    let next = performance.now()
    while (producing) {
      await tick()
      next += TICK_MS
      const wait = next - performance.now()
      if (wait > 0) await sleep(wait)
    }
  }
  const relayWriter = everyTick(async () => {
    const batch: Event[] = []
    for (let i = 0; i < PER_TICK; i++, n++) batch.push({ id: `m-${n}`, key: `key-${n % KEYS}`, seq: n })
    await outbox.transaction(pool, (_client, topics) => topics.events.produceMany(batch))
    const now = Date.now()
    for (const e of batch) relayCommits.set(e.id, { at: now, key: e.key })
  })
  // Raw: per partition, a queue and one sender that sends everything queued as one Producer.send()
  // and awaits it before the next, as the Java producer's per-partition batches go: no partition
  // ever waits for another's acknowledgement.
  const queues = Array.from({ length: PARTITIONS }, () => [] as { at: number; key: string; value: string }[])
  const rawSender = async (partition: number): Promise<void> => {
    const queue = queues[partition] as { at: number; key: string; value: string }[]
    while (producing || queue.length > 0) {
      if (queue.length === 0) {
        await sleep(2)
        continue
      }
      const batch = queue.splice(0, queue.length)
      try {
        await raw.send({
          messages: batch.map((m) => ({ topic: topicName, key: m.key, value: m.value, partition })),
        })
        const now = Date.now()
        for (const m of batch) rawTimes.push({ at: m.at, key: m.key, ms: now - m.at })
      } catch {
        rawFailures += batch.length
        queue.unshift(...batch)
        await sleep(100)
      }
    }
  }
  const rawSenders = Array.from({ length: PARTITIONS }, (_, p) => rawSender(p))
  let r = 0
  const rawWriter = everyTick(() => {
    const at = Date.now()
    for (let i = 0; i < PER_TICK; i++, r++) {
      const key = `key-${r % KEYS}`
      queues[partitionOf(key)]?.push({ at, key, value: `raw-${r}` })
    }
  })

  await sleep(4000)
  const killedAt = Date.now()
  await cluster.kill(victim, 'SIGKILL')
  await sleep(AFTER_KILL_MS)
  producing = false
  await Promise.all([relayWriter, rawWriter])
  await Promise.all(rawSenders)
  const deadline = Date.now() + 60_000
  while (transport.acks.size < relayCommits.size && Date.now() < deadline) await sleep(100)
  await relay.stop()
  await raw.close()

  const relayAfter = (which: (p: number) => boolean) =>
    [...relayCommits]
      .filter(([, c]) => c.at >= killedAt && which(partitionOf(c.key)))
      .map(([id, c]) => (transport.acks.get(id) ?? Number.NaN) - c.at)
  /** The relay's latency split at the hand-over to the transport: outbox wait, then Kafka. */
  const relaySplit = (which: (p: number) => boolean) => {
    const after = [...relayCommits].filter(([, c]) => c.at >= killedAt && which(partitionOf(c.key)))
    const waited = after.map(([id, c]) => (transport.handed.get(id) ?? Number.NaN) - c.at)
    const kafka = after.map(
      ([id]) => (transport.acks.get(id) ?? Number.NaN) - (transport.handed.get(id) ?? Number.NaN),
    )
    return `commit→handed to transport ${summary(waited)}; handed→ack ${summary(kafka)}`
  }
  const rawAfter = (which: (p: number) => boolean) =>
    rawTimes.filter((x) => x.at >= killedAt && which(partitionOf(x.key))).map((x) => x.ms)
  const isLive = (p: number) => live.has(p)
  const isDead = (p: number) => !live.has(p)
  const beforeKill = (ms: number[]) => summary(ms)
  const relayBefore = [...relayCommits]
    .filter(([, c]) => c.at < killedAt)
    .map(([id, c]) => (transport.acks.get(id) ?? Number.NaN) - c.at)
  const rawBefore = rawTimes.filter((x) => x.at < killedAt).map((x) => x.ms)
  const lines = [
    `before the kill: relay ${beforeKill(relayBefore)}; raw ${beforeKill(rawBefore)}`,
    `settle early ${SETTLE_EARLY}; rows held ${held}; session timeout ${SESSION_TIMEOUT_MS} ms; replica lag ${LAG_TIMEOUT_MS} ms; leaders ${JSON.stringify([...leaders])}; killed broker ${victim}; live partitions ${[...live].join(',')}`,
    `relay, live partitions: ${summary(relayAfter(isLive))}`,
    `raw,   live partitions: ${summary(rawAfter(isLive))}`,
    `relay, dead broker's partitions: ${summary(relayAfter(isDead))}`,
    `raw,   dead broker's partitions: ${summary(rawAfter(isDead))}`,
    `relay, live partitions, split: ${relaySplit(isLive)}`,
    `relay, dead partitions, split: ${relaySplit(isDead)}`,
    `relay unacknowledged ${relayCommits.size - transport.acks.size}; raw messages in failed sends (sent again) ${rawFailures}`,
  ]
  if (TIMELINE) {
    const window = (at: number) => at >= killedAt - 500 && at <= killedAt + 5000
    for (const send of transport.sends.filter((x) => window(x.at)))
      timeline.push({
        at: send.at,
        text: `send ${send.count} acks at +${send.acks.join(',+')} settled +${send.settled} failed ${send.failed}`,
      })
    timeline.sort((a, b) => a.at - b.at)
    for (const { at, text } of timeline.filter((x) => window(x.at)))
      lines.push(`  t${at - killedAt >= 0 ? '+' : ''}${at - killedAt} ms ${text}`)
  }
  console.log(lines.join('\n'))
} finally {
  await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined)
  await pool.end()
  await cluster.stop()
}
