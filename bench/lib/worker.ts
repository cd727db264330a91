// A relay (ours or the peer's) or the raw producer baseline, alone in a child process, so its CPU
// time and PostgreSQL round trips are its own. Started by `startWorker` (bench/lib/workers.ts).
//
// Protocol (IPC): child -> 'ready' after connecting and warming up; parent -> 'go'; child ->
// 'progress' after each delivered batch (when asked); parent -> 'stop' (or the child stops by
// itself after `stopAfter` messages); child -> 'result'; child exits.
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector'
import { join } from 'node:path'
import pg from 'pg'
import { claimSql } from '../../src/dialects/postgres/sql.ts'
import { type MessageTransport, RELAY_DEFAULTS, type RelayEvent } from '../../src/index.ts'
import {
  AckRecordingTransport,
  rawProducer,
  toKafkaMessage,
  topicWarmupRecords,
  WARMUP_BATCHES,
  warmTransport,
  warmupBatch,
  warmupRecord,
} from './kafka.ts'
import {
  type DeliveredTiming,
  deliveredTiming,
  ProcessPauses,
  type RelayStageRecord,
} from './latency-stages.ts'
import { startPeerListener } from './peer.ts'
import { ignoreClient, installQueryCounter, queryCounts, resetQueryCounts } from './query-counter.ts'
import { type ServiceCpu, serviceCpu, serviceCpuSince } from './service-cpu.ts'
import { sleep, wallNow } from './stats.ts'
import { benchOutbox, benchRecords, WARMUP_CLAIMS } from './workload.ts'

export interface RelayJob {
  kind: 'relay'
  brokers: string[]
  databaseUrl: string
  schema: string
  topic: string
  warmupTopic: string
  /** Relay options (maxMessagesPerPoll, pollingInterval, mode, listen, ...). */
  relay: Record<string, unknown>
  /** Stop by itself once this many messages were delivered (otherwise wait for 'stop'). */
  stopAfter?: number
  recordAcks?: boolean
  /** With recordAcks: also record what bench/lib/latency-stages.ts needs to split the latency. */
  stages?: boolean
  progress?: boolean
}

export interface RawJob {
  kind: 'raw'
  brokers: string[]
  topic: string
  warmupTopic: string
  prefix: string
  count: number
  batchSize: number
  /**
   * Batches sent at once (default 1: each awaited before the next, as the relay sends). More
   * shows the client's own ceiling; the client keeps per-partition order with its idempotent
   * producer's in-flight limit.
   */
  inFlight?: number
}

export interface PeerJob {
  kind: 'peer'
  brokers: string[]
  databaseUrl: string
  schema: string
  topic: string
  warmupTopic: string
  stopAfter?: number
  /** With stopAfter: give up after this long and report what was processed by then. */
  timeLimitMs?: number
  recordAcks?: boolean
  progress?: boolean
}

export type Job = RelayJob | RawJob | PeerJob

export interface WorkerResult {
  /** Wall-clock ms (comparable across processes) when work began and when the last message was acknowledged. */
  startedAt: number
  endedAt: number
  delivered: number
  batches: number
  cpuUserS: number
  cpuSystemS: number
  /** CPU seconds PostgreSQL and the broker used over the same span (machine-wide; Linux only). */
  services?: ServiceCpu
  roundTrips: number
  statements: number
  errors: string[]
  acks?: [string, number][]
  /** See RelayJob.stages. */
  stages?: RelayStageRecord
  /** Kind-specific counters (the peer: handler calls, abandoned messages, started attempts). */
  extra?: Record<string, number>
}

export type ParentMessage = { type: 'go' } | { type: 'stop' }
export type ChildMessage =
  | { type: 'ready' }
  | { type: 'progress'; delivered: number; at: number }
  | { type: 'result'; result: WorkerResult }
  | { type: 'failed'; error: string }

function send(message: ChildMessage): void {
  process.send?.(message)
}

/** Sends and waits until the message was handed to the channel (a large result must not be cut off by disconnect). */
function sendLast(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve()
    process.send(message, undefined, {}, () => resolve())
  })
}

function nextMessage(): Promise<ParentMessage> {
  return new Promise((resolve) => process.once('message', (message) => resolve(message as ParentMessage)))
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error)
}

interface Tracker {
  delivered: number
  batches: number
  lastAt: number
  errors: string[]
}

function newTracker(): Tracker {
  return { delivered: 0, batches: 0, lastAt: 0, errors: [] }
}

function noteError(tracker: Tracker, text: string): void {
  if (tracker.errors.length < 20) tracker.errors.push(text)
}

/** Resolves when `stopAfter` is reached or the parent says stop, whichever is first. */
function stopSignal(stopAfterReached: Promise<void>): Promise<void> {
  const stop = new Promise<void>((resolve) => {
    process.on('message', (message) => {
      if ((message as ParentMessage).type === 'stop') resolve()
    })
  })
  return Promise.race([stop, stopAfterReached])
}

interface Clock {
  startedAt: number
  cpu: NodeJS.CpuUsage
  services: ServiceCpu | undefined
}

function startClock(): Clock {
  startProfile()
  return { services: serviceCpu(), cpu: process.cpuUsage(), startedAt: wallNow() }
}

/** `bench/run.ts --profile=DIR`: a CPU profile of the timed span only, without warm-up or pre-fill. */
const PROFILE_DIR = process.env.K_ENTITY_BENCH_PROFILE
let profiler: Session | undefined

function startProfile(): void {
  if (PROFILE_DIR === undefined) return
  profiler = new Session()
  profiler.connect()
  profiler.post('Profiler.enable')
  profiler.post('Profiler.start')
}

function stopProfile(kind: Job['kind']): void {
  const session = profiler
  if (session === undefined || PROFILE_DIR === undefined) return
  profiler = undefined
  session.post('Profiler.stop', (error, result) => {
    if (error === null) {
      const file = join(
        PROFILE_DIR,
        `${kind}-${new Date().toISOString().replace(/[:.]/g, '-')}-${process.pid}.cpuprofile`,
      )
      writeFileSync(file, JSON.stringify(result.profile))
    }
    session.disconnect()
  })
}

function finish(tracker: Tracker, clock: Clock, acks?: Map<string, number>): WorkerResult {
  const used = process.cpuUsage(clock.cpu)
  stopProfile(KIND)
  const services = serviceCpuSince(clock.services)
  const startedAt = clock.startedAt
  const counts = queryCounts()
  return {
    startedAt,
    endedAt: tracker.lastAt || wallNow(),
    delivered: tracker.delivered,
    batches: tracker.batches,
    cpuUserS: used.user / 1e6,
    cpuSystemS: used.system / 1e6,
    ...(services ? { services } : {}),
    roundTrips: counts.roundTrips,
    statements: counts.statements,
    errors: tracker.errors,
    ...(acks ? { acks: [...acks] } : {}),
  }
}

/**
 * Runs the relay's claim statement a few times inside BEGIN/ROLLBACK (nothing changes), so the
 * driver's row parsing is optimised before the clock starts, as the Kafka client's is by the
 * warm-up batches. Not counted as the relay's round trips.
 */
async function warmClaims(job: RelayJob): Promise<void> {
  const client = ignoreClient(new pg.Client({ connectionString: job.databaseUrl }))
  await client.connect()
  try {
    const batch = Number(job.relay.maxMessagesPerPoll ?? RELAY_DEFAULTS.maxMessagesPerPoll)
    const sql = claimSql({ schema: job.schema, table: 'outbox' }, batch)
    for (let i = 0; i < WARMUP_CLAIMS; i++) {
      await client.query('BEGIN')
      const result = await client.query(sql)
      await client.query('ROLLBACK')
      if (result.rowCount === 0) break
    }
  } finally {
    await client.end()
  }
}

async function runRelay(job: RelayJob): Promise<WorkerResult> {
  installQueryCounter()
  await warmClaims(job)
  const warm = await warmTransport(job.brokers, job.warmupTopic, job.topic)
  const ackTransport = job.recordAcks ? new AckRecordingTransport(warm, job.stages === true) : undefined
  const transport: MessageTransport = ackTransport ?? warm
  const tracker = newTracker()
  const delivered: DeliveredTiming[] = []
  const pauses = job.stages ? new ProcessPauses() : undefined
  let reached: () => void = () => {}
  const stopAfterReached = new Promise<void>((resolve) => {
    reached = resolve
  })
  const outbox = benchOutbox(job.schema, job.topic, job.brokers)
  const relay = outbox.relay({
    ...job.relay,
    connection: job.databaseUrl,
    kafka: transport,
    onEvent: (event: RelayEvent) => {
      if (event.type === 'delivered') {
        if (pauses) delivered.push(deliveredTiming(event))
        tracker.delivered += event.count
        tracker.batches++
        tracker.lastAt = wallNow()
        if (job.progress) send({ type: 'progress', delivered: tracker.delivered, at: tracker.lastAt })
        if (job.stopAfter !== undefined && tracker.delivered >= job.stopAfter) reached()
      } else if (event.type === 'error') {
        noteError(tracker, `${event.stage}: ${describeError(event.error)}`)
      }
    },
  })
  send({ type: 'ready' })
  await nextMessage()
  const stopped = stopSignal(stopAfterReached)
  resetQueryCounts()
  const clock = startClock()
  pauses?.start()
  await relay.start()
  await stopped
  const result = finish(tracker, clock, ackTransport?.acks)
  if (pauses && ackTransport) {
    result.stages = {
      sends: ackTransport.sends,
      sendOf: [...ackTransport.sendOf],
      delivered,
      ...pauses.stop(),
    }
  }
  await relay.stop()
  return result
}

async function runRaw(job: RawJob): Promise<WorkerResult> {
  const producer = rawProducer(job.brokers)
  // The same warm-up as warmTransport gives the relay's producer.
  await producer.send({ messages: [toKafkaMessage(warmupRecord(job.warmupTopic))] })
  for (let batch = 0; batch < WARMUP_BATCHES; batch++) {
    await producer.send({ messages: warmupBatch(job.warmupTopic, batch).map(toKafkaMessage) })
  }
  await producer.send({ messages: topicWarmupRecords(job.topic).map(toKafkaMessage) })
  const batches: ReturnType<typeof toKafkaMessage>[][] = []
  for (let start = 0; start < job.count; start += job.batchSize) {
    const end = Math.min(job.count, start + job.batchSize)
    batches.push(benchRecords(job.topic, job.prefix, start, end).map(toKafkaMessage))
  }
  const tracker = newTracker()
  send({ type: 'ready' })
  await nextMessage()
  const clock = startClock()
  let next = 0
  const sender = async () => {
    for (let index = next++; index < batches.length; index = next++) {
      const messages = batches[index] as ReturnType<typeof toKafkaMessage>[]
      await producer.send({ messages })
      tracker.delivered += messages.length
      tracker.batches++
      tracker.lastAt = wallNow()
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, job.inFlight ?? 1) }, sender))
  const result = finish(tracker, clock)
  await producer.close()
  return result
}

async function runPeer(job: PeerJob): Promise<WorkerResult> {
  installQueryCounter()
  const warm = await warmTransport(job.brokers, job.warmupTopic, job.topic)
  const ackTransport = job.recordAcks ? new AckRecordingTransport(warm) : undefined
  const transport: MessageTransport = ackTransport ?? warm
  const tracker = newTracker()
  const handled = new Set<string>()
  let reached: () => void = () => {}
  const stopAfterReached = new Promise<void>((resolve) => {
    reached = resolve
  })
  // The benchmark's own completion check; not counted as the peer's round trips.
  const watcher = ignoreClient(new pg.Client({ connectionString: job.databaseUrl }))
  await watcher.connect()
  let allHandled = false
  let handlerErrors = 0
  send({ type: 'ready' })
  await nextMessage()
  const stopped = stopSignal(stopAfterReached)
  resetQueryCounts()
  const clock = startClock()
  const shutdown = startPeerListener({
    schema: job.schema,
    databaseUrl: job.databaseUrl,
    topic: job.topic,
    transport,
    onHandled: (id) => {
      tracker.batches++
      if (handled.has(id)) return
      handled.add(id)
      tracker.delivered = handled.size
      tracker.lastAt = wallNow()
      if (job.progress) {
        send({ type: 'progress', delivered: handled.size, at: tracker.lastAt })
      }
      if (job.stopAfter !== undefined && handled.size >= job.stopAfter) allHandled = true
    },
    onError: (error) => {
      handlerErrors++
      noteError(tracker, describeError(error))
    },
  })
  let complete = false
  if (job.stopAfter !== undefined) {
    // Handled is not done: the peer marks a message processed after its handler returns, and
    // gives up on ("abandons") a message after 5 failed attempts. The run ends when no message
    // is left that the peer would still work on, or at the time limit.
    const deadline = job.timeLimitMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + job.timeLimitMs
    void (async () => {
      for (;;) {
        const result = await watcher.query(
          `SELECT EXISTS (SELECT 1 FROM "${job.schema}".outbox WHERE processed_at IS NULL AND abandoned_at IS NULL) AS pending`,
        )
        if (result.rows[0]?.pending !== true) {
          complete = true
          break
        }
        if (Date.now() >= deadline) break
        await sleep(allHandled ? 5 : 25)
      }
      tracker.lastAt = wallNow()
      reached()
    })()
  }
  await stopped
  const endedAt = tracker.lastAt || wallNow()
  const result = finish(tracker, clock, ackTransport?.acks)
  const counts = await watcher.query(
    `SELECT count(*) FILTER (WHERE processed_at IS NOT NULL)::int AS processed,
            count(*) FILTER (WHERE abandoned_at IS NOT NULL)::int AS abandoned,
            coalesce(sum(started_attempts), 0)::int AS started
     FROM "${job.schema}".outbox`,
  )
  const row = counts.rows[0] ?? {}
  result.endedAt = endedAt
  // What the peer recorded as done (a message sent but not yet marked is not counted).
  result.delivered = Number(row.processed ?? 0)
  result.extra = {
    handlerCalls: tracker.batches,
    handlerErrors,
    abandoned: Number(row.abandoned ?? 0),
    startedAttempts: Number(row.started ?? 0),
    complete: complete ? 1 : 0,
  }
  if (job.progress) send({ type: 'progress', delivered: handled.size, at: tracker.lastAt })
  await shutdown()
  await transport.close()
  await watcher.end()
  return result
}

const JOB = JSON.parse(process.env.K_ENTITY_BENCH_JOB ?? 'null') as Job | null
const KIND = JOB?.kind ?? 'relay'

async function main(): Promise<void> {
  const job = JOB
  if (job === null) throw new Error('no job: this module is started by bench/lib/workers.ts')
  const result =
    job.kind === 'relay' ? await runRelay(job) : job.kind === 'raw' ? await runRaw(job) : await runPeer(job)
  await sendLast({ type: 'result', result })
}

main().then(
  () => process.disconnect?.(),
  async (error: unknown) => {
    process.exitCode = 1
    await sendLast({
      type: 'failed',
      error: error instanceof Error ? (error.stack ?? error.message) : String(error),
    })
    process.disconnect?.()
  },
)
