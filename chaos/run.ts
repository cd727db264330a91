/**
 * `npm run chaos` (full) / `npm run chaos -- --short`: fault injection against the PostgreSQL
 * outbox, proving no loss, no phantom, per-key order, bounded duplicates and exact dead letters.
 *
 *   node chaos/run.ts [--short] [--seed N] [--keep] [--trace FILE] [--shared-db]
 *
 * Two producer processes write business rows and tracked messages continuously (15 % rolled back
 * on purpose, some bursts through produceMany, a poison message now and then: too large for its
 * topic, for a topic that does not exist, or a hand-written row for `__consumer_offsets`). Relay
 * processes run one mode per phase (single: 1, exclusive: 3, concurrent: 3) while the runner, at
 * seeded random moments, kills relays with SIGKILL (also right after Kafka acknowledged a batch and
 * before its delete), stops Kafka and brings it back, crashes PostgreSQL while producers commit and
 * starts it again, terminates the relays' PostgreSQL sessions and the exclusive leader's session.
 * Then producers stop, relays drain, every topic is read back and checked. The run owns its Kafka
 * broker (KAFKA_BROKERS is ignored: it stops and restarts it) and its PostgreSQL server (initdb in
 * a temp dir; `--shared-db` uses DATABASE_URL instead, without the restarts).
 * Exit code 0 only if every invariant holds. Results: printed, and JSON in chaos/results/.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { randomBytes, randomInt } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Admin } from '@platformatic/kafka'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { DEFAULT_RETRY_POLICY } from '../src/core/retry.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  readTracking,
  type TrackedMessage,
} from '../src/testing/index.ts'
import {
  ChaosBroker,
  freePorts,
  kafkaOutage,
  leaderBackendPid,
  OwnPostgres,
  terminateBackend,
  terminateRelaySessions,
} from './faults.ts'
import {
  type ChaosSummary,
  type FaultKind,
  type FaultRecord,
  formatSummary,
  type Invariant,
  spread,
  type TopicResult,
  writeSummary,
} from './report.ts'
import {
  chaosTopics,
  INTERNAL_TOPIC,
  ORDERS_MAX_MESSAGE_BYTES,
  POISON_KINDS,
  POISON_PAD_BYTES,
  type PoisonKind,
  type ProducerCommand,
  type ProducerConfig,
  type ProducerLine,
  type ProducerReport,
  type RelayCommand,
  type RelayConfig,
  type RelayMode,
  type RelayReport,
  seededRandom,
  sleep,
  type TopicAccessor,
} from './shared.ts'

// ---------------------------------------------------------------------------------------------
// Settings

const { values: args } = parseArgs({
  options: {
    short: { type: 'boolean', default: false },
    seed: { type: 'string' },
    keep: { type: 'boolean', default: false },
    trace: { type: 'string' },
    sabotage: { type: 'string' },
    'shared-db': { type: 'boolean', default: false },
  },
})
/** --sabotage drop|reorder: every relay process misbehaves once, to show the run then fails. */
if (args.sabotage !== undefined && args.sabotage !== 'drop' && args.sabotage !== 'reorder') {
  console.error(`--sabotage must be 'drop' or 'reorder', got ${args.sabotage}`)
  process.exit(2)
}
const sabotage = args.sabotage as 'drop' | 'reorder' | undefined
const short = args.short === true
const seed = args.seed !== undefined ? Number(args.seed) : randomInt(1, 2 ** 31 - 1)
if (!Number.isSafeInteger(seed) || seed < 0) {
  console.error(`--seed must be a non-negative integer, got ${args.seed}`)
  process.exit(2)
}
/** --trace FILE: every relay report as a JSON line with the runner's clock, for debugging. */
const traceFile = args.trace
/** Draws the plan (phases, fault kinds, moments, kill variants): the same seed gives the same plan. */
const random = seededRandom(seed)
/** Draws what depends on timing (which standby, respawn delays), apart so the plan stays fixed. */
const runtimeRandom = seededRandom((seed ^ 0x9e3779b9) >>> 0)

interface PhasePlan {
  mode: RelayMode
  relays: number
  seconds: number
  kills: number
  pgTerminate: number
  leaderEnd: number
  pgRestart: number
  poisons: number
  outage: boolean
}

const PROFILE = short
  ? {
      phases: [
        { mode: 'single', relays: 1, seconds: 20, kills: 2, pgTerminate: 0, leaderEnd: 0, pgRestart: 1 },
        { mode: 'exclusive', relays: 3, seconds: 22, kills: 2, pgTerminate: 1, leaderEnd: 1, pgRestart: 0 },
        { mode: 'concurrent', relays: 3, seconds: 20, kills: 2, pgTerminate: 0, leaderEnd: 0, pgRestart: 1 },
      ] as const,
      outageMs: 5_000,
      poisons: 3,
      drainTimeoutMs: 90_000,
      watchdogMs: 6 * 60_000,
      minKills: 6,
    }
  : {
      phases: [
        { mode: 'single', relays: 1, seconds: 80, kills: 7, pgTerminate: 1, leaderEnd: 0, pgRestart: 1 },
        { mode: 'exclusive', relays: 3, seconds: 95, kills: 8, pgTerminate: 1, leaderEnd: 2, pgRestart: 1 },
        { mode: 'concurrent', relays: 3, seconds: 85, kills: 8, pgTerminate: 1, leaderEnd: 0, pgRestart: 1 },
      ] as const,
      outageMs: 20_000,
      poisons: 6,
      drainTimeoutMs: 180_000,
      watchdogMs: 20 * 60_000,
      minKills: 20,
    }

const PRODUCERS = 2
const PRODUCER_SETTINGS = { writers: 2, keysPerWriter: 8, rollbackRate: 0.15, burstRate: 0.04, paceMs: 40 }
const MAX_MESSAGES_PER_POLL = 100
const HOLD_MS = 3000
/** How long a targeted kill waits for its trigger before killing anyway. */
const TRIGGER_TIMEOUT_MS = 8000
/**
 * How long a fault waits for a relay to hit (the only relay may be restarting: a cold Node start
 * took up to 25 s on the loaded 2-vCPU machine this was written on).
 */
const TARGET_TIMEOUT_MS = 60_000

/**
 * How a PostgreSQL restart catches the producers' COMMITs: `after-flush` holds every COMMIT after
 * its commit record is flushed (a synchronous standby that does not exist) for 0.5 s before the
 * crash, so transactions are durable but unanswered; `before-commit-record` holds it in a deferred
 * trigger of the business table, so the COMMIT is under way but nothing is committed; `plain`
 * crashes at whatever moment the plan drew. Restarts take these in turn.
 */
type RestartVariant = 'after-flush' | 'before-commit-record' | 'plain'
const RESTART_VARIANTS: readonly RestartVariant[] = ['after-flush', 'before-commit-record', 'plain']
/** How long held COMMITs pile up before the crash. */
const COMMIT_HOLD_MS = 500

const SHARED_DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test'
const sharedDb = args['shared-db'] === true
const runId = randomBytes(3).toString('hex')
const schema = `ke_chaos_${runId}`
const relayApp = `k-entity-chaos-${runId}`
const producerApp = `k-entity-chaos-${runId}-producer`
/** The run's own server (unless --shared-db): set in main() once its port is known. */
let ownPg: OwnPostgres | undefined
let DATABASE_URL = SHARED_DATABASE_URL
let runnerConnection = { connectionString: DATABASE_URL, application_name: `k-entity-chaos-${runId}-runner` }
const topicNames = {
  orders: `chaos-orders-${runId}`,
  payments: `chaos-payments-${runId}`,
  missing: `chaos-missing-${runId}`,
}
const RELAY_SCRIPT = fileURLToPath(new URL('./relay.ts', import.meta.url))
const PRODUCER_SCRIPT = fileURLToPath(new URL('./producer.ts', import.meta.url))
const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url))

const startedAt = new Date()
const t0 = Date.now()
const loadAverageStart = os.loadavg().map((l) => Math.round(l * 100) / 100)
const log = (message: string) =>
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${message}`)

// ---------------------------------------------------------------------------------------------
// State

const tempDir = mkdtempSync(join(os.tmpdir(), `k-entity-chaos-${runId}-`))
/** Apart from tempDir (which only root may enter): the postgres OS user owns it. */
const pgDir = join(os.tmpdir(), `k-entity-chaos-${runId}-pg`)
let broker: ChaosBroker | undefined
let admin!: pg.Pool
/** The declared view: the runner creates the topics from it (partitions, the low limit). */
const outbox = createPgOutbox({ topics: chaosTopics(topicNames, true), schema })

interface RelayProc {
  n: number
  pid: number
  child: ChildProcess
  phase: PhaseState
  /** Pre-started: loads, then waits for 'go' (phase start). Otherwise a cold (re)start. */
  prepared: boolean
  spawnedAt: number
  loaded: boolean
  started: boolean
  alive: boolean
  killedByUs: boolean
  stopping: boolean
  leader: boolean
  /** Tracking ids of the send in progress. */
  inFlight: string[] | undefined
  /** Sends Kafka acknowledged whose rows this relay has not deleted yet. */
  unconfirmed: string[][]
  /** Reports read after we killed it: the process got that far before the signal landed. */
  afterKill: Set<string>
}

interface PhaseState {
  plan: PhasePlan
  steps: Step[]
  active: boolean
  spawned: number
  kills: number
  procs: RelayProc[]
}

interface ProducerProc {
  index: number
  child: ChildProcess
  outFile: string
  loaded: Promise<void>
  exited: Promise<number | null>
}

const bus = new EventEmitter()
bus.setMaxListeners(100)
const relays: RelayProc[] = []
const producers: ProducerProc[] = []
const faults: FaultRecord[] = []
/** When each fault happened (for an outage: when Kafka answered again), for the recovery times. */
const faultTimes = new Map<FaultRecord, { at: number; killedPid?: number }>()
const deliveries: { at: number; pid: number }[] = []
/** Sends Kafka acknowledged ('sent' reports). */
const acks: { at: number; pid: number }[] = []
const leadershipTimes: { at: number; pid: number }[] = []
const deadLetterEvents: { at: number; topic: string }[] = []
const poisonCommits: { at: number; id: string; topic: string; kind: PoisonKind; fault: FaultRecord }[] = []
/** PostgreSQL restarts: what each held, and when the server was gone and back. */
interface RestartRecord {
  fault: FaultRecord
  variant: RestartVariant
  /** Producer sessions waiting in their COMMIT (SyncRep / the gate) when the crash began. */
  heldCommits: number | null
  /** From holding the commits (or the crash) until the server was back: producer failures belong here. */
  window: { from: number; to: number }
  crashMs: number
  downMs: number
  startMs: number
}
const restarts: RestartRecord[] = []
let restartCounter = 0
const injectionErrors: string[] = []
let poisonCounter = 0
const reclaimWatchers: { ids: Set<string>; pid: number; fault: FaultRecord; since: number }[] = []
/** After-ack kills: messages Kafka had acknowledged and the relay had not deleted: each must arrive twice. */
const ackedAtKill: { fault: FaultRecord; ids: string[] }[] = []
const outages: { from: number; to: number }[] = []
/** Per tracking id: how many unfinished batches it was part of, and why they did not finish. */
const atRisk = new Map<string, { count: number; causes: string[] }>()
const boundByCause: Record<string, number> = {}
const errorsByStage: Record<string, number> = {}
/** fork() until the relay ran, for cold (re)starts after a kill. */
const coldStarts: number[] = []
let deliveredReported = 0
let sendFailures = 0
let partialSends = 0
let heldMessages = 0
let unexpectedExits = 0
let relayCounter = 0
let outageWindow: { from: number; to: number } | undefined
/** Set while Kafka is down: kills that wait for a send wait for Kafka first. */
let outageInProgress: Promise<void> | undefined

function addAtRisk(ids: readonly string[], cause: string): void {
  if (ids.length === 0) return
  boundByCause[cause] = (boundByCause[cause] ?? 0) + ids.length
  for (const id of ids) {
    const entry = atRisk.get(id)
    if (entry) {
      entry.count++
      entry.causes.push(cause)
    } else atRisk.set(id, { count: 1, causes: [cause] })
  }
}

function sendFailureCause(message: string): string {
  if (/MESSAGE_TOO_LARGE|RECORD_LIST_TOO_LARGE|does not exist|was not sent to Kafka/.test(message))
    return 'failed send (poison in batch)'
  const now = Date.now()
  if (outageWindow && now >= outageWindow.from && now <= outageWindow.to) return 'failed send (Kafka down)'
  return 'failed send (other)'
}

// ---------------------------------------------------------------------------------------------
// Relay processes

function relayConfig(mode: RelayMode, waitForGo: boolean): RelayConfig {
  if (!broker) throw new Error('no broker')
  return {
    databaseUrl: DATABASE_URL,
    applicationName: relayApp,
    schema,
    topics: topicNames,
    brokers: [broker.brokers],
    mode,
    maxMessagesPerPoll: MAX_MESSAGES_PER_POLL,
    holdMs: HOLD_MS,
    waitForGo,
    ...(sabotage ? { sabotage } : {}),
  }
}

function spawnRelay(phase: PhaseState, prepared: boolean): RelayProc {
  const child = fork(RELAY_SCRIPT, [], {
    env: { ...process.env, CHAOS_RELAY: JSON.stringify(relayConfig(phase.plan.mode, prepared)) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const proc: RelayProc = {
    n: ++relayCounter,
    pid: child.pid as number,
    child,
    phase,
    prepared,
    spawnedAt: Date.now(),
    loaded: false,
    started: false,
    alive: true,
    killedByUs: false,
    stopping: false,
    leader: false,
    inFlight: undefined,
    unconfirmed: [],
    afterKill: new Set(),
  }
  phase.spawned++
  phase.procs.push(proc)
  relays.push(proc)
  child.on('message', (message: RelayReport) => onRelayReport(proc, message, Date.now()))
  child.on('exit', (code, signal) => onRelayExit(proc, code, signal))
  return proc
}

/** Commands reach a child only once it listens, i.e. after it reported 'loaded'. */
function command(proc: RelayProc, message: RelayCommand): void {
  if (proc.alive && proc.child.connected) proc.child.send(message)
}

function onRelayReport(proc: RelayProc, r: RelayReport, at: number): void {
  if (traceFile) appendFileSync(traceFile, `${JSON.stringify({ t: at - t0, n: proc.n, ...r })}\n`)
  if (proc.killedByUs) proc.afterKill.add(r.type)
  switch (r.type) {
    case 'loaded':
      proc.loaded = true
      if (proc.stopping) command(proc, { type: 'stop' })
      else if (proc.prepared && proc.phase.active) command(proc, { type: 'go' })
      break
    case 'started':
      proc.started = true
      if (!proc.prepared) coldStarts.push(at - proc.spawnedAt)
      break
    case 'sending':
      // Reported just before a kill -9 but read after it: part of what the kill interrupted.
      if (proc.killedByUs) addAtRisk(r.ids, 'kill -9')
      else proc.inFlight = r.ids
      for (const watcher of reclaimWatchers) {
        if (watcher.fault.reclaimMs !== null || watcher.pid === proc.pid) continue
        if (r.ids.some((id) => watcher.ids.has(id))) watcher.fault.reclaimMs = at - watcher.since
      }
      break
    case 'sent':
      acks.push({ at, pid: proc.pid })
      if (proc.inFlight && !proc.killedByUs) proc.unconfirmed.push(proc.inFlight)
      proc.inFlight = undefined
      break
    case 'send-partial':
      partialSends++
      // Acknowledged messages behind a refused one of their key are sent again: all of it at risk.
      // The refused ones are not in Kafka: an after-ack kill must not expect them twice.
      if (proc.inFlight && !proc.killedByUs) {
        addAtRisk(proc.inFlight, 'partial send')
        const refused = new Set(r.failed)
        proc.inFlight = proc.inFlight.filter((id) => !refused.has(id))
      }
      break
    case 'send-failed':
      sendFailures++
      if (proc.inFlight && !proc.killedByUs) addAtRisk(proc.inFlight, sendFailureCause(r.message))
      proc.inFlight = undefined
      break
    case 'delivered':
      deliveredReported += r.count
      deliveries.push({ at, pid: proc.pid })
      proc.unconfirmed = []
      break
    case 'message-failed':
      proc.unconfirmed = []
      if (r.deadLettered) deadLetterEvents.push({ at, topic: r.topic })
      break
    case 'held':
      heldMessages += r.count
      break
    case 'leadership':
      proc.leader = r.leader
      if (r.leader) leadershipTimes.push({ at, pid: proc.pid })
      break
    case 'error':
      errorsByStage[r.stage] = (errorsByStage[r.stage] ?? 0) + 1
      if (!proc.killedByUs) addAtRisk(proc.unconfirmed.flat(), `delete failed (${r.stage} error)`)
      proc.unconfirmed = []
      break
  }
  bus.emit('relay', proc, r, at)
}

function onRelayExit(proc: RelayProc, code: number | null, signal: NodeJS.Signals | null): void {
  proc.alive = false
  proc.leader = false
  const leftover = [...(proc.inFlight ?? []), ...proc.unconfirmed.flat()]
  proc.inFlight = undefined
  proc.unconfirmed = []
  if (proc.killedByUs) return
  if (proc.stopping) {
    addAtRisk(leftover, 'graceful stop')
    return
  }
  unexpectedExits++
  addAtRisk(leftover, 'unexpected exit')
  log(`!! relay #${proc.n} (pid ${proc.pid}) exited on its own (code ${code}, signal ${signal})`)
  if (proc.phase.active && unexpectedExits <= 5) scheduleRespawn(proc.phase)
}

function scheduleRespawn(phase: PhaseState): void {
  const delay = 300 + Math.floor(runtimeRandom() * 1200)
  setTimeout(() => {
    if (phase.active) spawnRelay(phase, false)
  }, delay)
}

const living = (phase: PhaseState) => phase.procs.filter((p) => p.alive && !p.killedByUs && p.started)
const leaderOf = (phase: PhaseState) => living(phase).find((p) => p.leader)

/**
 * Resolves with the first relay report matching `predicate` (or undefined after `timeoutMs`).
 * `action` runs synchronously when it matches, before any later report of the same read is
 * handled: a kill there lands as close to that report as the runner can get.
 */
function onRelay(
  predicate: (proc: RelayProc, r: RelayReport) => boolean,
  timeoutMs: number,
  action?: (proc: RelayProc, r: RelayReport) => void,
): Promise<{ proc: RelayProc; r: RelayReport; at: number } | undefined> {
  return new Promise((resolve) => {
    const listener = (proc: RelayProc, r: RelayReport, at: number) => {
      if (!predicate(proc, r)) return
      action?.(proc, r)
      done({ proc, r, at })
    }
    const timer = setTimeout(() => done(undefined), timeoutMs)
    function done(value: { proc: RelayProc; r: RelayReport; at: number } | undefined) {
      clearTimeout(timer)
      bus.off('relay', listener)
      resolve(value)
    }
    bus.on('relay', listener)
  })
}

async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) return false
    await sleep(50)
  }
  return true
}

/** SIGKILL; returns the tracking ids it left unfinished and those among them Kafka already had. */
function killRelay(proc: RelayProc): { unfinished: string[]; acked: string[]; at: number } {
  const acked = proc.unconfirmed.flat()
  const unfinished = [...(proc.inFlight ?? []), ...acked]
  addAtRisk(unfinished, 'kill -9')
  proc.killedByUs = true
  proc.inFlight = undefined
  proc.unconfirmed = []
  proc.child.kill('SIGKILL')
  proc.phase.kills++
  return { unfinished, acked, at: Date.now() }
}

function prepareRelays(phase: PhaseState): void {
  for (let i = 0; i < phase.plan.relays; i++) spawnRelay(phase, true)
}

async function startRelays(phase: PhaseState): Promise<void> {
  const begin = Date.now()
  phase.active = true
  const waiting = phase.procs.filter((p) => p.alive && p.prepared && !p.started)
  for (const proc of waiting) if (proc.loaded) command(proc, { type: 'go' })
  for (let i = waiting.length; i < phase.plan.relays; i++) spawnRelay(phase, false)
  const ready = await waitUntil(
    () =>
      living(phase).length >= phase.plan.relays &&
      (phase.plan.mode !== 'exclusive' || leaderOf(phase) !== undefined),
    90_000,
  )
  if (!ready) throw new Error(`${phase.plan.mode}: relays did not start within 90 s`)
  log(`${phase.plan.mode}: ${phase.plan.relays} relay(s) running ${Date.now() - begin} ms after 'go'`)
}

async function stopRelays(phase: PhaseState): Promise<void> {
  phase.active = false
  const begin = Date.now()
  const alive = phase.procs.filter((p) => p.alive)
  for (const proc of alive) {
    proc.stopping = true
    // One still loading has no database session or claim yet: SIGTERM ends it at once.
    if (proc.loaded) command(proc, { type: 'stop' })
    else proc.child.kill('SIGTERM')
  }
  if (await waitUntil(() => alive.every((p) => !p.alive), 30_000)) {
    log(`${phase.plan.mode}: ${alive.length} relay(s) stopped in ${Date.now() - begin} ms`)
    return
  }
  for (const proc of alive.filter((p) => p.alive)) {
    log(`!! relay #${proc.n} did not stop within 30 s: SIGKILL`)
    proc.killedByUs = true
    proc.child.kill('SIGKILL')
  }
  await waitUntil(() => alive.every((p) => !p.alive), 5000)
}

// ---------------------------------------------------------------------------------------------
// Producers

function spawnProducer(index: number): ProducerProc {
  const outFile = join(tempDir, `producer-${index}.jsonl`)
  const config: ProducerConfig = {
    index,
    databaseUrl: DATABASE_URL,
    applicationName: producerApp,
    schema,
    topics: topicNames,
    outFile,
    ...PRODUCER_SETTINGS,
    seed: (seed + 7919 * (index + 1)) >>> 0,
    waitForGo: true,
  }
  const child = fork(PRODUCER_SCRIPT, [], {
    env: { ...process.env, CHAOS_PRODUCER: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  let markLoaded: () => void = () => {}
  const loaded = new Promise<void>((resolve) => {
    markLoaded = resolve
  })
  child.on('message', (r: ProducerReport) => {
    if (r.type === 'loaded') markLoaded()
    if (r.type === 'poisoned') bus.emit('poisoned', r, Date.now())
    if (r.type === 'failed') log(`!! producer ${index} failed: ${r.message}`)
  })
  const proc = { index, child, outFile, loaded, exited }
  producers.push(proc)
  return proc
}

type Tuple = [string, TopicAccessor, string, number]

/** A transaction that failed without being rolled back on purpose, as its producer recorded it. */
interface FailedTransaction {
  producer: number
  messages: TrackedMessage[]
  topics: TopicAccessor[]
  poison: { id: string; topic: TopicAccessor } | undefined
  at: number
  error: string
}

interface Produced {
  committed: Map<TopicAccessor, TrackedMessage[]>
  rolledBack: Map<TopicAccessor, TrackedMessage[]>
  /** Committed poison, by the topic accessor it was written to (orders, missing, internal). */
  poison: Map<TopicAccessor, TrackedMessage[]>
  /** Failed before the COMMIT went out: nothing of them may exist. */
  failed: FailedTransaction[]
  /** Failed once the COMMIT was on its way: outcome unknown, resolved from the business rows. */
  unknown: FailedTransaction[]
}

const poisonKindOf = (topic: TopicAccessor): PoisonKind =>
  topic === 'missing' ? 'missing-topic' : topic === 'internal' ? 'internal-topic' : 'too-large'

function readProduced(): Produced {
  const byTopic = () =>
    new Map<TopicAccessor, TrackedMessage[]>([
      ['orders', []],
      ['payments', []],
      ['missing', []],
      ['internal', []],
    ])
  const produced: Produced = {
    committed: byTopic(),
    rolledBack: byTopic(),
    poison: byTopic(),
    failed: [],
    unknown: [],
  }
  const failedTransaction = (producer: number, tuples: Tuple[], line: ProducerLine): FailedTransaction => ({
    producer,
    messages: tuples.map(([id, , key, seq]) => ({ id, key, seq })),
    topics: tuples.map(([, topic]) => topic),
    poison: line.up ? { id: line.up[0], topic: line.up[1] } : undefined,
    at: line.t ?? 0,
    error: line.e ?? '',
  })
  for (const producer of producers) {
    if (!existsSync(producer.outFile)) continue
    for (const text of readFileSync(producer.outFile, 'utf8').split('\n')) {
      if (!text) continue
      const line = JSON.parse(text) as ProducerLine
      for (const [field, target] of [
        ['c', produced.committed],
        ['r', produced.rolledBack],
        ['p', produced.poison],
      ] as const) {
        for (const [id, topic, key, seq] of line[field] ?? []) target.get(topic)?.push({ id, key, seq })
      }
      if (line.f) produced.failed.push(failedTransaction(producer.index, line.f, line))
      if (line.u) produced.unknown.push(failedTransaction(producer.index, line.u, line))
    }
  }
  return produced
}

// ---------------------------------------------------------------------------------------------
// Faults

type KillVariant = 'kill-after-ack' | 'kill-before-send' | 'kill-mid-send' | 'kill'
type ScheduledKind = 'kill' | 'pg-terminate' | 'leader-end' | 'poison' | 'outage' | 'pg-restart'
interface Step {
  /** ms after the phase's relays run */
  at: number
  kind: ScheduledKind
  kill?: { variant: KillVariant; wantLeader: boolean }
  /** pg-restart: how long the server stays down (2-5 s). */
  downMs?: number
}

let faultCounter = 0
let killCounter = 0

function newFault(
  phase: PhaseState,
  kind: FaultKind,
  at: number,
  detail: string,
  killedPid?: number,
): FaultRecord {
  const fault: FaultRecord = {
    n: ++faultCounter,
    phase: phase.plan.mode,
    kind,
    atS: Math.round((at - t0) / 100) / 10,
    detail,
    resumeMs: null,
  }
  faults.push(fault)
  faultTimes.set(fault, { at, ...(killedPid === undefined ? {} : { killedPid }) })
  return fault
}

function pick<T>(list: readonly T[]): T | undefined {
  return list.length === 0 ? undefined : list[Math.floor(runtimeRandom() * list.length)]
}

/** The first kills of a run cover each variant; later ones are drawn. */
function drawKill(): { variant: KillVariant; wantLeader: boolean } {
  const k = killCounter++
  const first: KillVariant[] = ['kill-after-ack', 'kill-mid-send', 'kill-before-send', 'kill']
  const roll = random()
  const variant: KillVariant =
    first[k] ??
    (roll < 0.35
      ? 'kill-after-ack'
      : roll < 0.55
        ? 'kill-before-send'
        : roll < 0.75
          ? 'kill-mid-send'
          : 'kill')
  // In exclusive mode only the leader sends; a plain kill hits a standby half of the time.
  const wantLeader = variant !== 'kill' || random() < 0.5
  return { variant, wantLeader }
}

async function killTarget(phase: PhaseState, wantLeader: boolean): Promise<RelayProc | undefined> {
  const exclusive = phase.plan.mode === 'exclusive'
  await waitUntil(
    () => living(phase).length > 0 && (!exclusive || leaderOf(phase) !== undefined),
    TARGET_TIMEOUT_MS,
  )
  if (!exclusive) return pick(living(phase))
  const leader = leaderOf(phase)
  if (wantLeader) return leader
  return pick(living(phase).filter((p) => p !== leader)) ?? leader
}

async function injectKill(phase: PhaseState, variant: KillVariant, wantLeader: boolean): Promise<void> {
  if (variant !== 'kill' && outageInProgress) {
    // Nothing is acknowledged (or even sent) while Kafka is down: wait for it before arming.
    await outageInProgress
  }
  const target = await killTarget(phase, wantLeader)
  if (!target) {
    log(`${phase.plan.mode}: no live relay to kill, skipped`)
    return
  }
  const wasLeader = phase.plan.mode === 'exclusive' && target.leader
  const role = phase.plan.mode === 'exclusive' ? (wasLeader ? 'leader ' : 'standby ') : ''
  let kind: FaultKind = variant
  let detail = `${role}relay #${target.n}`
  let killed: ReturnType<typeof killRelay> | undefined
  const kill = () => {
    killed = killRelay(target)
  }
  if (variant === 'kill-after-ack' || variant === 'kill-before-send') {
    const at = variant === 'kill-after-ack' ? 'after-ack' : 'before-send'
    command(target, { type: 'hold', at })
    const trigger = variant === 'kill-after-ack' ? 'sent' : 'sending'
    const hit = await onRelay(
      (p, r) => p === target && r.type === trigger && r.held,
      TRIGGER_TIMEOUT_MS,
      kill,
    )
    if (hit?.r.type === 'sent')
      detail += `: killed after Kafka acked a batch of ${hit.r.count}, before its delete`
    else if (hit?.r.type === 'sending')
      detail += `: killed holding a claimed batch of ${hit.r.ids.length}, before sending it`
    else {
      command(target, { type: 'disarm' })
      kind = 'kill'
      detail += `: no ${at} hold point reached within ${TRIGGER_TIMEOUT_MS} ms, killed anyway`
    }
  } else if (variant === 'kill-mid-send') {
    const hit = await onRelay((p, r) => p === target && r.type === 'sending', TRIGGER_TIMEOUT_MS, kill)
    if (hit?.r.type === 'sending') detail += `: killed on its 'sending' report (batch of ${hit.r.ids.length})`
    else {
      kind = 'kill'
      detail += `: no send within ${TRIGGER_TIMEOUT_MS} ms, killed anyway`
    }
  }
  if (!killed) {
    if (!target.alive || target.killedByUs) {
      log(`${phase.plan.mode}: relay #${target.n} already gone, kill skipped`)
      return
    }
    kill()
  }
  const { unfinished, acked, at } = killed as ReturnType<typeof killRelay>
  const fault = newFault(phase, kind, at, `${detail}; ${unfinished.length} messages unfinished`, target.pid)
  fault.inFlight = unfinished.length
  if (wasLeader) fault.takeoverMs = null
  if (unfinished.length > 0) {
    fault.reclaimMs = null
    reclaimWatchers.push({ ids: new Set(unfinished), pid: target.pid, fault, since: at })
  }
  if (kind === 'kill-after-ack') ackedAtKill.push({ fault, ids: acked })
  log(`${phase.plan.mode}: ${kind}: ${fault.detail}`)
  scheduleRespawn(phase)
}

async function injectPgTerminate(phase: PhaseState): Promise<void> {
  // Right after a kill the only relay may still be restarting: wait for a session to end.
  await waitUntil(() => living(phase).length > 0, TARGET_TIMEOUT_MS)
  const at = Date.now()
  const ended = await terminateRelaySessions(admin, relayApp)
  const fault = newFault(
    phase,
    'pg-terminate-relays',
    at,
    `pg_terminate_backend on all ${ended.length} relay sessions (application_name ${relayApp})`,
  )
  if (phase.plan.mode === 'exclusive') fault.takeoverMs = null
  log(`${phase.plan.mode}: ${fault.kind}: ${fault.detail}`)
}

async function injectLeaderEnd(phase: PhaseState): Promise<void> {
  await waitUntil(() => leaderOf(phase) !== undefined, TARGET_TIMEOUT_MS)
  const leader = leaderOf(phase)
  const backend = await leaderBackendPid(admin, schema, relayApp)
  if (backend === undefined) {
    log(`${phase.plan.mode}: no leader session found, leader fault skipped`)
    return
  }
  const at = Date.now()
  const ended = await terminateBackend(admin, backend, relayApp)
  const fault = newFault(
    phase,
    'pg-terminate-leader',
    at,
    `leader's session (backend ${backend}${leader ? `, relay #${leader.n}` : ''}) ${ended ? 'terminated' : 'already gone'}`,
  )
  fault.takeoverMs = null
  log(`${phase.plan.mode}: ${fault.kind}: ${fault.detail}`)
}

async function injectPoison(phase: PhaseState): Promise<void> {
  const kind = POISON_KINDS[poisonCounter++ % POISON_KINDS.length] as PoisonKind
  const producer = pick(producers) as ProducerProc
  const committed = new Promise<{ r: Extract<ProducerReport, { type: 'poisoned' }>; at: number } | undefined>(
    (resolve) => {
      const timer = setTimeout(() => resolve(undefined), 15_000)
      bus.once('poisoned', (r, at) => {
        clearTimeout(timer)
        resolve({ r, at })
      })
    },
  )
  producer.child.send({ type: 'poison', kind } satisfies ProducerCommand)
  const result = await committed
  if (!result) {
    log(`!! ${phase.plan.mode}: ${kind} poison was not committed within 15 s`)
    return
  }
  const { r, at } = result
  const what =
    r.kind === 'too-large'
      ? `${Math.round(POISON_PAD_BYTES / 1024)} KiB on a ${ORDERS_MAX_MESSAGE_BYTES / 1024} KiB topic`
      : r.kind === 'missing-topic'
        ? `to '${r.topic}', never created (autoCreateTopics off)`
        : `row for '${r.topic}' inserted by SQL`
  const fault = newFault(
    phase,
    `poison-${r.kind}`,
    at,
    `${r.id}, ${what}, key ${r.key} between ${r.before} and ${r.after}`,
  )
  fault.deadLetteredMs = null
  poisonCommits.push({ at, id: r.id, topic: r.topic, kind: r.kind, fault })
  log(`${phase.plan.mode}: poison: ${fault.detail}`)
}

/**
 * Crashes the run's own PostgreSQL (`pg_ctl stop -m immediate`: no checkpoint, WAL recovery on
 * the next start) while producers are in their COMMIT, and starts it again after the planned time.
 */
async function injectPgRestart(phase: PhaseState, downMs: number): Promise<void> {
  const server = ownPg
  if (!server) return
  const variant = RESTART_VARIANTS[restartCounter++ % RESTART_VARIANTS.length] as RestartVariant
  await waitUntil(() => living(phase).length > 0, TARGET_TIMEOUT_MS)
  const from = Date.now()
  const window = { from, to: Number.POSITIVE_INFINITY }
  let heldCommits: number | null = null
  let behindHeld = 0
  try {
    if (variant === 'after-flush') await server.holdCommitsAfterFlush(admin)
    if (variant === 'before-commit-record') {
      // Self-expiring, in case the crash comes late: commits after the restart are not held.
      await admin.query(
        `UPDATE "${schema}".chaos_commit_gate SET until = clock_timestamp() + interval '4 seconds'`,
      )
    }
    if (variant !== 'plain') {
      await sleep(COMMIT_HOLD_MS)
      // Held in the COMMIT itself, or behind one (a NOTIFYing commit waits for the commit
      // before it to finish: PostgreSQL serializes them on a lock).
      const { rows } = await admin.query(
        `SELECT count(*) FILTER (WHERE wait_event IN ('SyncRep', 'PgSleep'))::int AS held,
                count(*) FILTER (WHERE wait_event_type = 'Lock')::int AS behind
         FROM pg_stat_activity WHERE application_name = $1`,
        [producerApp],
      )
      heldCommits = rows[0]?.held ?? 0
      behindHeld = rows[0]?.behind ?? 0
    }
  } catch (error) {
    log(`!! ${phase.plan.mode}: preparing the restart: ${(error as Error).message}`)
  }
  const at = Date.now()
  await server.crash()
  const stoppedAt = Date.now()
  server.restoreConfig()
  await sleep(downMs)
  const startAt = Date.now()
  await server.start()
  const upAt = Date.now()
  // Producers see the broken connections and reconnect within a few seconds of the server's return.
  window.to = upAt + 10_000
  await admin
    .query(`UPDATE "${schema}".chaos_commit_gate SET until = NULL`)
    .catch((error: Error) => log(`!! clearing the commit gate: ${error.message}`))
  const record: RestartRecord = {
    fault: newFault(
      phase,
      'pg-restart',
      at,
      `pg_ctl stop -m immediate (${variant}${heldCommits === null ? '' : `, ${heldCommits} producer COMMITs held, ${behindHeld} producer sessions waiting on a lock behind them`}) in ${stoppedAt - at} ms; down ${((startAt - stoppedAt) / 1000).toFixed(1)} s; pg_ctl start -w (WAL recovery) ${upAt - startAt} ms`,
    ),
    variant,
    heldCommits,
    window,
    crashMs: stoppedAt - at,
    downMs: startAt - stoppedAt,
    startMs: upAt - startAt,
  }
  restarts.push(record)
  // Recovery counts from the moment the server accepts connections again.
  faultTimes.set(record.fault, { at: upAt })
  if (phase.plan.mode === 'exclusive') record.fault.takeoverMs = null
  log(`${phase.plan.mode}: pg-restart: ${record.fault.detail}`)
}

async function injectOutage(phase: PhaseState): Promise<void> {
  if (!broker) return
  const planned = Date.now()
  outageWindow = { from: planned, to: Number.POSITIVE_INFINITY }
  log(`${phase.plan.mode}: kafka-outage: stopping the broker for ${PROFILE.outageMs / 1000} s`)
  const outage = kafkaOutage(broker, PROFILE.outageMs)
  outageInProgress = outage.then(
    () => {},
    () => {},
  )
  const times = await outage.finally(() => {
    outageInProgress = undefined
  })
  outages.push({ from: times.downAt, to: times.upAt })
  // Sends that were already failing keep failing for a moment after the broker is back.
  outageWindow = { from: planned, to: times.upAt + 15_000 }
  // The database may be restarting right now too.
  const backlog = await outbox
    .stats(runnerConnection)
    .then((stats) => String(stats.pending))
    .catch(() => '?')
  const fault = newFault(
    phase,
    'kafka-outage',
    times.downAt,
    `broker stopped in ${times.stoppedAt - times.downAt} ms, unreachable ${((times.upAt - times.stoppedAt) / 1000).toFixed(1)} s (${PROFILE.outageMs / 1000} s + restart ${((times.upAt - times.stoppedAt - PROFILE.outageMs) / 1000).toFixed(1)} s); ${backlog} messages waiting when it was back`,
  )
  // Recovery counts from the moment Kafka answers again.
  faultTimes.set(fault, { at: times.upAt })
  log(`${phase.plan.mode}: kafka-outage: ${fault.detail}`)
}

// ---------------------------------------------------------------------------------------------
// Plan and phases

function planPhases(): PhasePlan[] {
  const phases: PhasePlan[] = PROFILE.phases.map((p) => ({
    ...p,
    pgRestart: sharedDb ? 0 : p.pgRestart,
    poisons: 0,
    outage: false,
  }))
  ;(phases[Math.floor(random() * phases.length)] as PhasePlan).outage = true
  const order = shuffle([0, 1, 2])
  for (let i = 0; i < PROFILE.poisons; i++) (phases[order[i % 3] as number] as PhasePlan).poisons++
  return phases
}

function shuffle<T>(list: T[]): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[list[i], list[j]] = [list[j] as T, list[i] as T]
  }
  return list
}

function schedule(plan: PhasePlan): Step[] {
  const kinds = shuffle<ScheduledKind>([
    ...Array<ScheduledKind>(plan.kills).fill('kill'),
    ...Array<ScheduledKind>(plan.pgTerminate).fill('pg-terminate'),
    ...Array<ScheduledKind>(plan.leaderEnd).fill('leader-end'),
    ...Array<ScheduledKind>(plan.poisons).fill('poison'),
    ...Array<ScheduledKind>(plan.pgRestart).fill('pg-restart'),
  ])
  const outageAt = plan.outage ? Math.round(plan.seconds * 1000 * (0.15 + 0.2 * random())) : undefined
  // Kafka is away for the outage plus its restart (taken as at most 15 s here): no send to hold
  // on or interrupt, so kills planned then are plain kills (the kill-during-an-outage case).
  const duringOutage = (at: number) =>
    outageAt !== undefined && at >= outageAt && at <= outageAt + PROFILE.outageMs + 15_000
  // One random moment per equal slot of the phase (2 s margins): random, yet spread out.
  const slot = (plan.seconds * 1000 - 4000) / Math.max(1, kinds.length)
  const steps: Step[] = kinds.map((kind, i) => {
    const at = Math.round(2000 + slot * i + random() * slot * 0.8)
    if (kind === 'pg-restart') return { at, kind, downMs: 2000 + Math.round(random() * 3000) }
    if (kind !== 'kill') return { at, kind }
    const kill = duringOutage(at) ? { variant: 'kill' as const, wantLeader: random() < 0.5 } : drawKill()
    return { at, kind, kill }
  })
  if (outageAt !== undefined) steps.push({ at: outageAt, kind: 'outage' })
  return steps.sort((a, b) => a.at - b.at)
}

async function runPhase(phase: PhaseState, next: PhaseState | undefined): Promise<void> {
  const { plan } = phase
  await startRelays(phase)
  const start = Date.now()
  log(`phase ${plan.mode}: ${plan.relays} relay(s) running; ${plan.seconds} s of faults`)
  let outage: Promise<void> | undefined
  for (const step of phase.steps) {
    const wait = start + step.at - Date.now()
    if (wait > 0) await sleep(wait)
    try {
      if (step.kind === 'outage') outage = injectOutage(phase)
      else if (step.kind === 'kill' && step.kill)
        await injectKill(phase, step.kill.variant, step.kill.wantLeader)
      else if (step.kind === 'pg-terminate') await injectPgTerminate(phase)
      else if (step.kind === 'leader-end') await injectLeaderEnd(phase)
      else if (step.kind === 'poison') await injectPoison(phase)
      else if (step.kind === 'pg-restart') await injectPgRestart(phase, step.downMs ?? 3000)
    } catch (error) {
      // E.g. a runner query meeting a restart: the fault is missing, which 'fault coverage' reports.
      injectionErrors.push(`${step.kind}: ${(error as Error).message}`)
      log(`!! ${plan.mode}: ${step.kind} failed: ${(error as Error).message}`)
    }
  }
  const rest = start + plan.seconds * 1000 - Date.now()
  if (rest > 0) await sleep(rest)
  if (outage) {
    await outage
    // Let the relays work against the restored broker before the phase ends.
    await sleep(3000)
  }
  if (next) await stopRelays(phase)
}

// ---------------------------------------------------------------------------------------------
// Main

/** The delivered topics, as declared (partitions, the orders topic's low limit); never `missing`. */
async function createTopics(brokers: string): Promise<void> {
  const report = await outbox.ensureTopics({ kafka: { brokers: [brokers] } })
  const created = report.created.map((c) => c.topic).sort()
  if (JSON.stringify(created) !== JSON.stringify([topicNames.orders, topicNames.payments].sort())) {
    throw new Error(`ensureTopics created ${JSON.stringify(report)}`)
  }
}

/** Whether the broker has the topic nobody should have created. */
async function topicExists(brokers: string, topic: string): Promise<boolean> {
  const kafkaAdmin = new Admin({ clientId: 'k-entity-chaos', bootstrapBrokers: [brokers] })
  try {
    return (await kafkaAdmin.listTopics()).includes(topic)
  } finally {
    await kafkaAdmin.close()
  }
}

/**
 * The run's own server, and the deferred trigger that can hold the business table's COMMITs
 * (`before-commit-record` restarts): when the gate is set, a COMMIT waits in the trigger, before
 * its commit record exists, until the gate expires or the server is gone.
 */
async function startOwnPostgres(): Promise<void> {
  const [port] = await freePorts(1)
  ownPg = new OwnPostgres(pgDir, port as number)
  const begin = Date.now()
  await ownPg.init()
  await ownPg.start()
  DATABASE_URL = ownPg.url
  runnerConnection = { ...runnerConnection, connectionString: DATABASE_URL }
  log(
    `own PostgreSQL 15 at 127.0.0.1:${port} (fsync on, data in ${ownPg.dataDir}), ready in ${Date.now() - begin} ms`,
  )
}

async function createCommitGate(): Promise<void> {
  await admin.query(`
    CREATE TABLE "${schema}".chaos_commit_gate (until timestamptz);
    INSERT INTO "${schema}".chaos_commit_gate VALUES (NULL);
    CREATE FUNCTION "${schema}".chaos_commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      until timestamptz := (SELECT g.until FROM "${schema}".chaos_commit_gate g);
    BEGIN
      IF until IS NOT NULL AND clock_timestamp() < until THEN
        PERFORM pg_sleep(extract(epoch FROM until - clock_timestamp()));
      END IF;
      RETURN NULL;
    END $$;
    CREATE CONSTRAINT TRIGGER chaos_commit_gate AFTER INSERT ON "${schema}".business
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "${schema}".chaos_commit_gate();
  `)
}

async function main(): Promise<number> {
  const command = `npm run chaos --${short ? ' --short' : ''} --seed ${seed}`
  console.log(`chaos: ${short ? 'short' : 'full'} run ${runId}, seed ${seed} (same plan again: ${command})`)
  const plans = planPhases()
  const phases: PhaseState[] = plans.map((plan) => ({
    plan,
    steps: schedule(plan),
    active: false,
    spawned: 0,
    kills: 0,
    procs: [],
  }))
  for (const phase of phases)
    console.log(
      `  plan ${phase.plan.mode.padEnd(10)} ${phase.plan.seconds} s: ${phase.steps.map((s) => `${(s.at / 1000).toFixed(1)}s ${s.kill?.variant ?? s.kind}${s.kill && phase.plan.mode === 'exclusive' ? (s.kill.wantLeader ? '(leader)' : '(any)') : ''}`).join(', ')}`,
    )

  // Database and schema first; then the broker starts while the producers and every phase's first
  // relays load. They wait for 'go': a phase's relays start only once the previous phase's have exited.
  if (!sharedDb) await startOwnPostgres()
  admin = new pg.Pool({ ...runnerConnection, max: 2 })
  admin.on('error', () => {})
  await outbox.migrate(runnerConnection)
  await admin.query(
    `CREATE TABLE "${schema}".business (id text PRIMARY KEY, topic text NOT NULL, key text NOT NULL)`,
  )
  if (ownPg) await createCommitGate()
  const [port, controllerPort] = (await freePorts(2)) as [number, number]
  broker = new ChaosBroker(join(tempDir, 'kafka'), port, controllerPort)
  for (let i = 0; i < PRODUCERS; i++) spawnProducer(i)
  for (const phase of phases) prepareRelays(phase)
  await broker.start()
  await createTopics(broker.brokers)
  log(`Kafka broker of this run at ${broker.brokers}; topics ${topicNames.orders}, ${topicNames.payments}`)

  await Promise.all(producers.map((p) => p.loaded))
  for (const producer of producers) producer.child.send({ type: 'go' } satisfies ProducerCommand)
  const progress = setInterval(() => {
    log(`progress: ${deliveredReported} delivered, ${sendFailures} failed sends, ${faults.length} faults`)
  }, 15_000)

  for (const [i, phase] of phases.entries()) await runPhase(phase, phases[i + 1])
  const lastPhase = phases.at(-1) as PhaseState

  // Stop producing, let the last phase's relays drain the outbox.
  for (const producer of producers) producer.child.send({ type: 'stop' } satisfies ProducerCommand)
  const codes = await Promise.all(producers.map((p) => p.exited))
  log(`producers stopped (exit codes ${codes.join(', ')}); draining`)
  const drainStart = Date.now()
  let drainMs: number | null = null
  while (Date.now() - drainStart < PROFILE.drainTimeoutMs) {
    if ((await outbox.stats(runnerConnection)).pending === 0) {
      drainMs = Date.now() - drainStart
      break
    }
    await sleep(250)
  }
  clearInterval(progress)
  log(
    drainMs === null
      ? `!! outbox not drained after ${PROFILE.drainTimeoutMs} ms`
      : `drained in ${drainMs} ms`,
  )
  await stopRelays(lastPhase)

  // The business rows decide what an unknown-outcome transaction did: all of them there means it
  // committed, so its messages are expected; none means it did not, so none may be delivered.
  const produced = readProduced()
  const { rows: businessRows } = await admin.query(`SELECT id FROM "${schema}".business`)
  const businessIds = new Set(businessRows.map((r) => r.id as string))
  const notCommitted = new Map<TopicAccessor, TrackedMessage[]>()
  const addTo = (target: Map<TopicAccessor, TrackedMessage[]>, topic: TopicAccessor, m: TrackedMessage) => {
    const list = target.get(topic)
    if (list) list.push(m)
    else target.set(topic, [m])
  }
  const resolved = produced.unknown.map((tx) => {
    const present = tx.messages.filter((m) => businessIds.has(m.id)).length
    const outcome: 'committed' | 'not committed' | 'partial' =
      present === tx.messages.length ? 'committed' : present === 0 ? 'not committed' : 'partial'
    for (const [i, m] of tx.messages.entries()) {
      const topic = tx.topics[i] as TopicAccessor
      if (outcome === 'committed')
        addTo(m.id === tx.poison?.id ? produced.poison : produced.committed, topic, m)
      else addTo(notCommitted, topic, m)
    }
    const restart = restarts.findIndex((r) => tx.at >= r.window.from && tx.at <= r.window.to)
    return { tx, outcome, present, restart: restart < 0 ? null : restart + 1 }
  })
  for (const tx of produced.failed)
    for (const [i, m] of tx.messages.entries()) addTo(notCommitted, tx.topics[i] as TopicAccessor, m)

  // Read every delivered topic back and check it.
  const poisonIds = new Set([...produced.poison.values()].flat().map((m) => m.id))
  const poisonKinds = new Map<string, PoisonKind>()
  for (const [topic, list] of produced.poison)
    for (const m of list) poisonKinds.set(m.id, poisonKindOf(topic))
  const copies = new Map<string, number>()
  const topics: TopicResult[] = await Promise.all(
    (['orders', 'payments'] as const).map(async (accessor) => {
      const topic = topicNames[accessor]
      const expected = produced.committed.get(accessor) ?? []
      const consumed = await readTopic({
        brokers: [(broker as ChaosBroker).brokers],
        topic,
        expectedCount: expected.length,
        idleTimeoutMs: 10_000,
        timeoutMs: 300_000,
      })
      const observed = observedFromConsumed(consumed)
      for (const m of observed) copies.set(m.id, (copies.get(m.id) ?? 0) + 1)
      const report = checkDelivery({
        expected,
        forbidden: [
          ...(produced.rolledBack.get(accessor) ?? []),
          ...(notCommitted.get(accessor) ?? []),
          ...(produced.poison.get(accessor) ?? []),
        ],
        observed,
      })
      const poisonDelivered = new Set(observed.filter((m) => poisonIds.has(m.id)).map((m) => m.id)).size
      if (!report.ok) console.log(`${topic}:\n${formatReport(report)}`)
      return {
        topic,
        expected: report.expected,
        observed: report.observed,
        delivered: report.delivered,
        lost: report.lost,
        phantom: report.phantom - poisonDelivered,
        poisonDelivered,
        unknown: report.unknown,
        duplicates: report.duplicates,
        outOfOrder: report.outOfOrder,
        keysOnSeveralPartitions: report.keysOnSeveralPartitions,
        samples: { ...report.samples },
      }
    }),
  )
  const missingTopicCreated = await topicExists((broker as ChaosBroker).brokers, topicNames.missing)

  // Duplicates: every extra copy must come from a batch of its own message that was not finished.
  let unexplained = 0
  const unexplainedSamples: string[] = []
  const byCause: Record<string, number> = {}
  for (const [id, n] of copies) {
    if (n < 2) continue
    const risk = atRisk.get(id)
    const extra = n - 1
    const explained = Math.min(extra, risk?.count ?? 0)
    for (let i = 0; i < explained; i++) {
      const cause = risk?.causes[i] ?? '?'
      byCause[cause] = (byCause[cause] ?? 0) + 1
    }
    if (extra > explained) {
      unexplained += extra - explained
      if (unexplainedSamples.length < 10) unexplainedSamples.push(id)
    }
  }
  const duplicates = topics.reduce((sum, t) => sum + t.duplicates, 0)
  const bound = Object.values(boundByCause).reduce((a, b) => a + b, 0)
  const notResent = ackedAtKill.flatMap((k) => k.ids.filter((id) => (copies.get(id) ?? 0) < 2))
  const ackedTotal = ackedAtKill.reduce((sum, k) => sum + k.ids.length, 0)

  const dead = await outbox.deadLetters(runnerConnection).list({ limit: 10_000 })
  const deadById = new Map(dead.map((d) => [readTracking(d.headers)?.id ?? `untracked:${d.id}`, d]))
  const deadIds = [...deadById.keys()].sort()
  const expectedDead = [...poisonIds].sort()
  const deadErrors = dead.map((d) => d.errors.at(-1)?.error.slice(0, 200) ?? '')
  // What each poison kind must have been buried with (and where it was headed).
  const deadMismatches: string[] = []
  for (const [id, kind] of poisonKinds) {
    const letter = deadById.get(id)
    if (!letter) continue
    const error = letter.errors.at(-1)?.error ?? ''
    const ok =
      kind === 'too-large'
        ? letter.topic === topicNames.orders && /MESSAGE_TOO_LARGE|RECORD_LIST_TOO_LARGE/.test(error)
        : kind === 'missing-topic'
          ? letter.topic === topicNames.missing &&
            /does not exist/.test(error) &&
            letter.attempts === DEFAULT_RETRY_POLICY.maxAttempts
          : letter.topic === INTERNAL_TOPIC && /reserved/.test(error)
    if (!ok)
      deadMismatches.push(
        `${id} (${kind}: topic ${letter.topic}, ${letter.attempts} attempts, ${error.slice(0, 120)})`,
      )
  }
  const stats = await outbox.stats(runnerConnection)
  const { rows: outboxRows } = await admin.query(`SELECT count(*)::int AS n FROM "${schema}".outbox`)
  const committedIds = [...produced.committed.values()].flat().map((m) => m.id)
  const rolledBackIds = [...produced.rolledBack.values()].flat().map((m) => m.id)
  const missingBusiness = [...committedIds, ...poisonIds].filter((id) => !businessIds.has(id)).length
  const rolledBackBusiness = rolledBackIds.filter((id) => businessIds.has(id)).length
  const failedBusiness = produced.failed
    .flatMap((tx) => tx.messages)
    .filter((m) => businessIds.has(m.id)).length
  const committedCount = committedIds.length

  // Unknown outcomes: each transaction all there (business rows, messages delivered or, for its
  // poison, dead-lettered) or all absent.
  const unknownReport = resolved.map(({ tx, outcome, present, restart }) => {
    const healthy = tx.messages.filter((m) => m.id !== tx.poison?.id)
    const delivered = healthy.filter((m) => (copies.get(m.id) ?? 0) > 0).length
    const buried = tx.poison !== undefined && deadById.has(tx.poison.id)
    const ok =
      outcome === 'committed'
        ? delivered === healthy.length && (tx.poison === undefined || buried)
        : outcome === 'not committed' && delivered === 0 && !buried
    return {
      producer: tx.producer,
      firstId: tx.messages[0]?.id ?? '',
      messages: tx.messages.length,
      restart,
      outcome,
      businessRows: present,
      delivered,
      ...(tx.poison ? { poison: tx.poison.id, deadLettered: buried } : {}),
      ok,
      error: tx.error,
    }
  })
  const unknownCommitted = unknownReport.filter((u) => u.outcome === 'committed').length
  const unknownNotCommitted = unknownReport.filter((u) => u.outcome === 'not committed').length
  const unknownBad = unknownReport.filter((u) => !u.ok)
  const failedDelivered = produced.failed
    .flatMap((tx) => tx.messages)
    .filter((m) => (copies.get(m.id) ?? 0) > 0 || deadById.has(m.id)).length
  const inRestart = (at: number) => restarts.some((r) => at >= r.window.from && at <= r.window.to)
  const strayFailures = [...produced.failed, ...produced.unknown].filter((tx) => !inRestart(tx.at))

  // Recovery: from each fault until a relay (for a kill: another process) delivered again; for a
  // Kafka outage, from Kafka answering until it acknowledged a send again.
  for (const fault of faults) {
    const { at, killedPid } = faultTimes.get(fault) as { at: number; killedPid?: number }
    const resumed = (fault.kind === 'kafka-outage' ? acks : deliveries).find(
      (d) => d.at >= at && d.pid !== killedPid,
    )
    fault.resumeMs = resumed === undefined ? null : resumed.at - at
    if (fault.takeoverMs === null) {
      const takeover = leadershipTimes.find((l) => l.at >= at && l.pid !== killedPid)
      fault.takeoverMs = takeover === undefined ? null : takeover.at - at
    }
    const killed = relays.find((p) => p.pid === killedPid)
    if (killed?.afterKill.has('delivered'))
      fault.detail += ' (its batch was deleted before the signal landed)'
    else if (killed?.afterKill.has('sent'))
      fault.detail += ' (Kafka acked its batch before the signal landed)'
    if (fault.kind !== 'kafka-outage' && outages.some((o) => at >= o.from && at <= o.to)) {
      fault.duringOutage = true
      fault.detail += ' [during the Kafka outage]'
    }
  }
  for (const [i, restart] of restarts.entries()) {
    const mine = unknownReport.filter((u) => u.restart === i + 1)
    const failedHere = produced.failed.filter(
      (tx) => tx.at >= restart.window.from && tx.at <= restart.window.to,
    ).length
    restart.fault.detail += `; unknown outcome: ${mine.length} transactions (${mine.filter((u) => u.outcome === 'committed').length} committed, ${mine.filter((u) => u.outcome === 'not committed').length} not); ${failedHere} failed before COMMIT`
  }
  for (const poison of poisonCommits) {
    const buried = deadLetterEvents.find((d) => d.at >= poison.at && d.topic === poison.topic)
    poison.fault.deadLetteredMs = buried === undefined ? null : buried.at - poison.at
  }

  const totalKills = phases.reduce((sum, p) => sum + p.kills, 0)
  const kinds = new Set(faults.map((f) => f.kind))
  const requiredKinds: FaultKind[] = [
    'kill-after-ack',
    'kill-before-send',
    'kill-mid-send',
    'kafka-outage',
    'pg-terminate-relays',
    'pg-terminate-leader',
    'poison-too-large',
    'poison-missing-topic',
    'poison-internal-topic',
    ...(ownPg ? (['pg-restart'] as const) : []),
  ]
  const sum = (field: keyof TopicResult) => topics.reduce((acc, t) => acc + (t[field] as number), 0)
  const invariants: Invariant[] = [
    {
      name: 'lost',
      ok: sum('lost') === 0,
      detail: `${sum('lost')} committed messages never delivered (must be 0)`,
    },
    {
      name: 'phantom',
      ok: sum('phantom') === 0,
      detail: `${sum('phantom')} rolled-back or not committed messages delivered (must be 0)`,
    },
    {
      name: 'order per key',
      ok: sum('outOfOrder') === 0 && sum('keysOnSeveralPartitions') === 0,
      detail: `${sum('outOfOrder')} messages read after a later message of their key, ${sum('keysOnSeveralPartitions')} keys on several partitions (must be 0)`,
    },
    {
      name: 'nothing foreign',
      ok: sum('unknown') === 0,
      detail: `${sum('unknown')} records that no producer wrote (must be 0)`,
    },
    {
      name: 'duplicates bounded',
      ok: duplicates <= bound && unexplained === 0,
      detail: `${duplicates} duplicates <= ${bound} messages in unfinished batches; ${unexplained} extra copies not covered by their own message's unfinished batches${unexplainedSamples.length ? ` (${unexplainedSamples.join(', ')})` : ''}`,
    },
    {
      name: 'after-ack kills re-sent',
      ok: notResent.length === 0,
      detail: `${ackedTotal} messages Kafka had acknowledged when their relay was killed before deleting them; ${notResent.length} of them not read twice (must be 0: proves the kill landed after the ack and the rows survived it)`,
    },
    {
      name: 'dead letters = poison',
      ok:
        JSON.stringify(deadIds) === JSON.stringify(expectedDead) &&
        deadMismatches.length === 0 &&
        sum('poisonDelivered') === 0,
      detail: `dead letters [${deadIds.join(', ')}], poison committed [${expectedDead.map((id) => `${id} ${poisonKinds.get(id)}`).join(', ')}], poison delivered ${sum('poisonDelivered')}; too large: MESSAGE_TOO_LARGE, missing topic: 'does not exist' after ${DEFAULT_RETRY_POLICY.maxAttempts} attempts (the default retry policy), __consumer_offsets: reserved name${deadMismatches.length ? `; WRONG: ${deadMismatches.join('; ')}` : ''}`,
    },
    {
      name: 'missing topic not created',
      ok: !missingTopicCreated,
      detail: `${topicNames.missing} ${missingTopicCreated ? 'EXISTS: a send created it' : 'does not exist on the broker (autoCreateTopics off)'}`,
    },
    {
      name: 'outbox drained',
      ok: drainMs !== null && stats.pending === 0 && outboxRows[0]?.n === 0,
      detail: `pending ${stats.pending}, rows ${outboxRows[0]?.n}, drained ${drainMs === null ? 'never' : `in ${drainMs} ms`} after producers stopped`,
    },
    {
      name: 'business rows = committed',
      ok:
        missingBusiness === 0 &&
        rolledBackBusiness === 0 &&
        failedBusiness === 0 &&
        businessIds.size === committedCount + poisonIds.size,
      detail: `${businessIds.size} rows for ${committedCount + poisonIds.size} committed messages (${unknownCommitted} unknown-outcome transactions resolved as committed included); ${missingBusiness} missing, ${rolledBackBusiness} from rolled-back transactions, ${failedBusiness} from transactions that failed before their COMMIT`,
    },
    {
      name: 'unknown outcomes all or nothing',
      ok: unknownBad.length === 0 && failedDelivered === 0,
      detail: `${unknownReport.length} transactions lost their connection in COMMIT: ${unknownCommitted} committed (business rows and every message delivered or its poison dead-lettered), ${unknownNotCommitted} not committed (no row, nothing delivered), ${unknownBad.length} neither${unknownBad.length ? ` (${unknownBad.map((u) => `${u.firstId}: ${u.businessRows}/${u.messages} rows, ${u.delivered} delivered`).join('; ')})` : ''}; ${produced.failed.length} transactions failed before their COMMIT, ${failedDelivered} of their messages delivered or dead-lettered (must be 0)`,
    },
    {
      name: 'no row deleted twice',
      ok: deliveredReported <= committedCount,
      detail: `relays reported ${deliveredReported} deletions for ${committedCount} committed messages (a kill can lose a report, never add one)`,
    },
    {
      name: 'every fault recovered',
      ok:
        faults.every((f) => f.resumeMs !== null) &&
        faults.every((f) => f.takeoverMs !== null) &&
        poisonCommits.every((p) => p.fault.deadLetteredMs !== null),
      detail: `deliveries resumed after ${faults.filter((f) => f.resumeMs !== null).length}/${faults.length} faults (${spread(faults.map((f) => f.resumeMs))}); a leader again after ${faults.filter((f) => f.takeoverMs !== undefined && f.takeoverMs !== null).length}/${faults.filter((f) => f.takeoverMs !== undefined).length}; poison dead-lettered ${poisonCommits.filter((p) => p.fault.deadLetteredMs !== null).length}/${poisonCommits.length}`,
    },
    {
      name: 'relays only died when killed',
      ok: unexpectedExits === 0,
      detail: `${unexpectedExits} relay processes exited on their own`,
    },
    {
      name: 'producers clean',
      ok: strayFailures.length === 0 && codes.every((c) => c === 0),
      detail: `${strayFailures.length} transactions failed outside a PostgreSQL restart${
        strayFailures.length
          ? ` (${strayFailures
              .slice(0, 3)
              .map((tx) => tx.error)
              .join('; ')})`
          : ''
      }; exit codes ${codes.join(', ')}`,
    },
    {
      name: 'fault coverage',
      ok:
        totalKills >= PROFILE.minKills &&
        requiredKinds.every((k) => kinds.has(k)) &&
        injectionErrors.length === 0,
      detail: `${totalKills} kills (>= ${PROFILE.minKills}); missing kinds: ${requiredKinds.filter((k) => !kinds.has(k)).join(', ') || 'none'}; ${injectionErrors.length} injections failed${injectionErrors.length ? ` (${injectionErrors.join('; ')})` : ''}`,
    },
  ]

  const ok = invariants.every((i) => i.ok)
  const summary: ChaosSummary = {
    ok,
    seed,
    short,
    ...(sabotage ? { sabotage } : {}),
    command,
    runId,
    startedAt: startedAt.toISOString(),
    durationS: Math.round((Date.now() - t0) / 1000),
    machine: {
      cpus: os.cpus().length,
      loadAverageStart,
      loadAverageEnd: os.loadavg().map((l) => Math.round(l * 100) / 100),
      node: process.version,
    },
    phases: phases.map((p) => ({
      mode: p.plan.mode,
      relays: p.plan.relays,
      seconds: p.plan.seconds,
      kills: p.kills,
      spawned: p.spawned,
    })),
    produced: {
      committed: committedCount,
      rolledBack: rolledBackIds.length,
      poison: poisonIds.size,
      poisonByKind: Object.fromEntries(
        POISON_KINDS.map((kind) => [kind, [...poisonKinds.values()].filter((k) => k === kind).length]),
      ),
      failedBeforeCommit: {
        transactions: produced.failed.length,
        messages: produced.failed.reduce((n, tx) => n + tx.messages.length, 0),
      },
      uncertain: produced.unknown.reduce((n, tx) => n + tx.messages.length, 0),
      businessRows: businessIds.size,
    },
    database: ownPg
      ? `own PostgreSQL 15 server (initdb in a temp dir, 127.0.0.1:${ownPg.port}, fsync on)`
      : `shared server at DATABASE_URL (no restarts)`,
    pgRestarts: restarts.map((r) => ({
      n: r.fault.n,
      phase: r.fault.phase,
      variant: r.variant,
      heldCommits: r.heldCommits,
      crashMs: r.crashMs,
      downMs: r.downMs,
      startMs: r.startMs,
      resumeMs: r.fault.resumeMs,
      takeoverMs: r.fault.takeoverMs ?? null,
    })),
    unknownOutcome: unknownReport,
    topics,
    duplicates: { count: duplicates, bound, unexplained, byCause, boundByCause },
    deadLetters: { expectedIds: expectedDead, actualIds: deadIds, errors: deadErrors },
    relays: {
      deliveredReported,
      sendFailures,
      partialSends,
      heldMessages,
      errorsByStage,
      unexpectedExits,
      coldStart: spread(coldStarts),
    },
    faults,
    drainMs,
    invariants,
  }
  console.log(formatSummary(summary))
  const file = writeSummary(RESULTS_DIR, summary)
  console.log(`\nresults: ${file}`)
  console.log(ok ? 'CHAOS OK' : 'CHAOS FAILED')
  return ok ? 0 : 1
}

// ---------------------------------------------------------------------------------------------
// Cleanup: only what this run started.

let cleaned = false
async function cleanup(): Promise<void> {
  if (cleaned) return
  cleaned = true
  for (const proc of relays) if (proc.alive) proc.child.kill('SIGKILL')
  for (const producer of producers) if (producer.child.exitCode === null) producer.child.kill('SIGKILL')
  await broker?.stop().catch((error: Error) => console.error(`stopping Kafka: ${error.message}`))
  rmSync(tempDir, { recursive: true, force: true })
  if (ownPg) {
    await admin?.end().catch(() => {})
    await ownPg.stop().catch((error: Error) => console.error(`stopping PostgreSQL: ${error.message}`))
    if (args.keep) console.error(`chaos: --keep: the database stays in ${ownPg.dataDir} (stopped)`)
    else rmSync(pgDir, { recursive: true, force: true })
    return
  }
  if (!args.keep) await admin?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {})
  await admin?.end().catch(() => {})
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    console.error(`chaos: ${signal}, cleaning up`)
    void cleanup().finally(() => process.exit(130))
  })
}
const watchdog = setTimeout(() => {
  console.error(`chaos: watchdog: the run took longer than ${PROFILE.watchdogMs / 1000} s (seed ${seed})`)
  void cleanup().finally(() => process.exit(1))
}, PROFILE.watchdogMs)
watchdog.unref()

let exitCode = 1
try {
  exitCode = await main()
} catch (error) {
  console.error(
    `chaos: run failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
  )
  console.error(`chaos: seed ${seed}`)
} finally {
  await cleanup()
}
process.exit(exitCode)
