/**
 * The chaos runner's settings (from the command line, fixed for the run) and its one mutable
 * state object: the processes it started, the faults it injected and everything the relays and
 * producers reported, which the checks read at the end.
 */
import type { ChildProcess } from 'node:child_process'
import { randomBytes, randomInt } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { mkdtempSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type pg from 'pg'
import type { KafkaCluster } from '../scripts/kafka-broker.ts'
import { createBetterSqliteOutbox } from '../src/adapters/better-sqlite3/index.ts'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import type { TcpProxy } from '../test/support/tcp-proxy.ts'
import type { ChaosDatabase, ChaosDbKind } from './db/types.ts'
import type { ChaosBroker, OwnPostgres } from './faults.ts'
import type { FaultRecord } from './report.ts'
import { type ConsumerCounts, chaosTopics, type PoisonKind, type RelayMode, seededRandom } from './shared.ts'

// ---------------------------------------------------------------------------------------------
// Settings

const { values: args } = parseArgs({
  allowNegative: true,
  options: {
    short: { type: 'boolean', default: false },
    medium: { type: 'boolean', default: false },
    seed: { type: 'string' },
    keep: { type: 'boolean', default: false },
    trace: { type: 'string' },
    sabotage: { type: 'string' },
    db: { type: 'string', default: 'postgres' },
    'shared-db': { type: 'boolean', default: false },
    'kafka-cluster': { type: 'boolean', default: false },
    'db-proxy': { type: 'boolean', default: false },
    'kafka-proxy': { type: 'boolean', default: false },
    'clock-skew': { type: 'boolean', default: false },
    'claim-slots': { type: 'string' },
    consumer: { type: 'boolean' },
    help: { type: 'boolean', default: false },
  },
})
if (args.help) {
  console.log(`node chaos/run.ts [--short | --medium] [--seed N] [--db postgres|mariadb|sqlite] [--keep] [--trace FILE]
                   [--shared-db] [--sabotage drop|reorder] [--kafka-cluster] [--db-proxy] [--kafka-proxy] [--clock-skew]
  --short          the short form (about 1 min of faults; what npm test runs)
  --medium         about 2 min of faults (full: about 4.5 min)
  --seed N         the same plan again
  --db NAME        postgres (default: pg adapter), mariadb (mysql2 adapter, the run's own
                   mariadbd, SIGKILLed while producers COMMIT; session faults are KILL CONNECTION)
                   or sqlite (better-sqlite3, one WAL file; every phase one relay, mode single;
                   relay and consumer kills, Kafka outage, poison; --short or --medium without
                   --db-proxy)
  --keep           keep the run's database (stopped) / schema
  --trace FILE     every relay report as a JSON line
  --shared-db      DATABASE_URL (MYSQL_URL with --db mariadb) instead of an own server (no restarts)
  --sabotage       every relay misbehaves once (drop or reorder): the run must fail
  --kafka-cluster  three brokers (replication factor 3, min.insync.replicas 2) instead of one; each
                   phase kills -9 the broker leading most partitions during acknowledgements and
                   restarts it, the next kill takes another broker (replaces the whole-Kafka outage)
  --db-proxy       relays reach the database through a TCP proxy that, once per phase, stops
                   forwarding, adds latency or drops every connection (always in the full run)
  --kafka-proxy    relays reach Kafka through a TCP proxy (the broker advertises the proxy's port on
                   a listener of its own; producers and the verifier use the broker's), with the
                   same three faults once per phase (with --kafka-cluster: a proxy per broker,
                   all failing together; always in the full run)
  --clock-skew     relay processes run with their clock (Date) 15 min ahead or behind, in turn
                   (always in the full run)
  --claim-slots N  PostgreSQL: the concurrent phase's relays lock N claim slots instead of keys
                   (relay option claimSlots)
  --consumer       end to end: two consumer processes (outbox.consume() with the inbox, on the run's
                   database) apply an effect per message; killed -9 by the plan too and restarted;
                   every committed message's effect must be applied exactly once, in key order, and
                   no rolled-back one (on by default, with every --db; --no-consumer leaves it out)`)
  process.exit(0)
}
/** --sabotage drop|reorder: every relay process misbehaves once, to show the run then fails. */
if (args.sabotage !== undefined && args.sabotage !== 'drop' && args.sabotage !== 'reorder') {
  console.error(`--sabotage must be 'drop' or 'reorder', got ${args.sabotage}`)
  process.exit(2)
}
if (args.db !== 'postgres' && args.db !== 'mariadb' && args.db !== 'sqlite') {
  console.error(`--db must be 'postgres', 'mariadb' or 'sqlite', got ${args.db}`)
  process.exit(2)
}
export const dbKind = args.db as ChaosDbKind
/** --claim-slots N: relay option claimSlots of the concurrent phase's relays (PostgreSQL). */
export const claimSlots = args['claim-slots'] === undefined ? undefined : Number(args['claim-slots'])
if (claimSlots !== undefined && (dbKind !== 'postgres' || !Number.isInteger(claimSlots))) {
  console.error(
    `--claim-slots takes a power of two from 2 to 1024, with --db postgres; got ${args['claim-slots']}`,
  )
  process.exit(2)
}
export const sabotage = args.sabotage as 'drop' | 'reorder' | undefined
export const short = args.short === true
export const medium = !short && args.medium === true
/** The profile's name, as in the report and the results file. */
export const profileName = short ? 'short' : medium ? 'medium' : 'full'
export const keep = args.keep === true
export const seed = args.seed !== undefined ? Number(args.seed) : randomInt(1, 2 ** 31 - 1)
if (!Number.isSafeInteger(seed) || seed < 0) {
  console.error(`--seed must be a non-negative integer, got ${args.seed}`)
  process.exit(2)
}
/**
 * Topology and the faults added by issue 18 (see --help). The full run always has the database
 * link faults and the skewed clocks; the cluster is another topology, chosen by its flag.
 */
export const kafkaCluster = args['kafka-cluster'] === true
export const dbProxy = args['db-proxy'] === true || profileName === 'full'
export const clockSkew = args['clock-skew'] === true || profileName === 'full'
if (dbKind === 'sqlite' && (dbProxy || args['shared-db'] === true)) {
  console.error(
    '--db sqlite has no network link and no shared server: use --short or --medium, without --db-proxy or --shared-db',
  )
  process.exit(2)
}
/** Always in the full run, like the database link faults. */
export const kafkaProxy = args['kafka-proxy'] === true || profileName === 'full'
/** --consumer: the end-to-end consumers (see --help); on unless --no-consumer. */
export const consumerOn = args.consumer !== false
/** --consumer: how many consumer processes read the topics (each life of one is killed and restarted). */
export const CONSUMERS = 2
/** --clock-skew: relay n runs this far ahead (n odd) or behind (n even). */
export const CLOCK_SKEW_MS = 15 * 60_000
/** --db-proxy, --kafka-proxy: how long each proxy fault lasts before the proxy forwards again. */
export const PROXY_FAULT_MS = short ? 5_000 : 12_000
/** --db-proxy, --kafka-proxy: the latency the `delay` fault adds to every chunk, each way. */
export const PROXY_DELAY_MS = 300
/** --trace FILE: every relay report as a JSON line with the runner's clock, for debugging. */
export const traceFile = args.trace
/** Draws the plan (phases, fault kinds, moments, kill variants): the same seed gives the same plan. */
export const random = seededRandom(seed)
/** Draws what depends on timing (which standby, respawn delays), apart so the plan stays fixed. */
export const runtimeRandom = seededRandom((seed ^ 0x9e3779b9) >>> 0)

export interface PhasePlan {
  mode: RelayMode
  relays: number
  seconds: number
  kills: number
  pgTerminate: number
  leaderEnd: number
  pgRestart: number
  poisons: number
  outage: boolean
  /** --db-proxy: proxy faults in this phase. */
  proxyFaults: number
  /** --kafka-proxy: faults of the relays' Kafka link in this phase. */
  kafkaProxyFaults: number
  /** --consumer: kill -9 of a consumer process in this phase. */
  consumerKills: number
}

export const PROFILE = short
  ? {
      phases: [
        { mode: 'single', relays: 1, seconds: 20, kills: 2, pgTerminate: 0, leaderEnd: 0, pgRestart: 1 },
        { mode: 'exclusive', relays: 3, seconds: 22, kills: 2, pgTerminate: 1, leaderEnd: 1, pgRestart: 0 },
        { mode: 'concurrent', relays: 3, seconds: 20, kills: 2, pgTerminate: 0, leaderEnd: 0, pgRestart: 1 },
      ] as const,
      outageMs: 5_000,
      poisons: 3,
      consumerKills: 1,
      drainTimeoutMs: 90_000,
      watchdogMs: 6 * 60_000,
      minKills: 6,
    }
  : medium
    ? {
        phases: [
          { mode: 'single', relays: 1, seconds: 40, kills: 4, pgTerminate: 1, leaderEnd: 0, pgRestart: 1 },
          { mode: 'exclusive', relays: 3, seconds: 45, kills: 4, pgTerminate: 1, leaderEnd: 1, pgRestart: 0 },
          {
            mode: 'concurrent',
            relays: 3,
            seconds: 40,
            kills: 4,
            pgTerminate: 0,
            leaderEnd: 0,
            pgRestart: 1,
          },
        ] as const,
        outageMs: 10_000,
        poisons: 3,
        consumerKills: 2,
        drainTimeoutMs: 120_000,
        watchdogMs: 12 * 60_000,
        minKills: 10,
      }
    : {
        phases: [
          { mode: 'single', relays: 1, seconds: 80, kills: 7, pgTerminate: 1, leaderEnd: 0, pgRestart: 1 },
          { mode: 'exclusive', relays: 3, seconds: 95, kills: 8, pgTerminate: 1, leaderEnd: 2, pgRestart: 1 },
          {
            mode: 'concurrent',
            relays: 3,
            seconds: 85,
            kills: 8,
            pgTerminate: 1,
            leaderEnd: 0,
            pgRestart: 1,
          },
        ] as const,
        outageMs: 20_000,
        poisons: 6,
        consumerKills: 3,
        drainTimeoutMs: 180_000,
        watchdogMs: 20 * 60_000,
        minKills: 20,
      }

export const PRODUCERS = 2
export const PRODUCER_SETTINGS = {
  writers: 2,
  keysPerWriter: 8,
  rollbackRate: 0.15,
  burstRate: 0.04,
  paceMs: 40,
}
export const MAX_MESSAGES_PER_POLL = 100
export const HOLD_MS = 3000
/**
 * How long a targeted kill waits for its trigger before killing anyway (and becoming a plain kill,
 * which the fault-coverage check then misses). A relay resumes sending up to about 15 s after a
 * database restart or partition (14.4 s after a MariaDB restart in a short run), and a kill
 * planned in that window waited only 8 s: the short run failed its coverage check that way.
 */
export const TRIGGER_TIMEOUT_MS = 20_000
/**
 * How long a fault waits for a relay to hit (the only relay may be restarting: a cold Node start
 * took up to 25 s on the loaded 2-vCPU machine this was written on).
 */
export const TARGET_TIMEOUT_MS = 60_000

/**
 * How a PostgreSQL restart catches the producers' COMMITs: `after-flush` holds every COMMIT after
 * its commit record is flushed (a synchronous standby that does not exist) for 0.5 s before the
 * crash, so transactions are durable but unanswered; `before-commit-record` holds it in a deferred
 * trigger of the business table, so the COMMIT is under way but nothing is committed; `plain`
 * crashes at whatever moment the plan drew. Restarts take these in turn.
 */
/** MariaDB has one: `mid-commit`, SIGKILL once a producer session is seen in its COMMIT. */
export type RestartVariant = 'after-flush' | 'before-commit-record' | 'plain' | 'mid-commit'
export const RESTART_VARIANTS: readonly RestartVariant[] = ['after-flush', 'before-commit-record', 'plain']
/** How long held COMMITs pile up before the crash. */
export const COMMIT_HOLD_MS = 500

export const SHARED_DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test'
export const sharedDb = args['shared-db'] === true
export const runId = randomBytes(3).toString('hex')
export const schema = `ke_chaos_${runId}`
export const relayApp = `k-entity-chaos-${runId}`
export const producerApp = `k-entity-chaos-${runId}-producer`
export const consumerApp = `k-entity-chaos-${runId}-consumer`
export const consumerGroup = `chaos-${runId}`
export const topicNames = {
  orders: `chaos-orders-${runId}`,
  payments: `chaos-payments-${runId}`,
  missing: `chaos-missing-${runId}`,
}
export const RELAY_SCRIPT = fileURLToPath(new URL('./relay.ts', import.meta.url))
/** --clock-skew: preloaded into relay processes (--import). */
export const SKEWED_CLOCK = fileURLToPath(new URL('./skewed-clock.ts', import.meta.url))
export const CONSUMER_SCRIPT = fileURLToPath(new URL('./consumer.ts', import.meta.url))
export const PRODUCER_SCRIPT = fileURLToPath(new URL('./producer.ts', import.meta.url))
export const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url))

export const startedAt = new Date()
export const t0 = Date.now()
export const loadAverageStart = os.loadavg().map((l) => Math.round(l * 100) / 100)
export const log = (message: string) =>
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${message}`)

export const tempDir = mkdtempSync(join(os.tmpdir(), `k-entity-chaos-${runId}-`))
/** Apart from tempDir (which only root may enter): the postgres OS user owns it. */
export const pgDir = join(os.tmpdir(), `k-entity-chaos-${runId}-pg`)
const declaredTopics = chaosTopics(topicNames, true, kafkaCluster ? 3 : undefined)
type PgRunnerOutbox = ReturnType<typeof createPgOutbox<typeof declaredTopics>>
/** The runner's calls, the same on every database (each takes `state.db.runnerConnection()`). */
export interface RunnerOutbox {
  migrate(connection: unknown): unknown
  /** At once on SQLite. */
  migrateInbox(connection: unknown): void | Promise<void>
  stats(connection: unknown): ReturnType<PgRunnerOutbox['stats']>
  deadLetters(connection: unknown): ReturnType<PgRunnerOutbox['deadLetters']>
  ensureTopics: PgRunnerOutbox['ensureTopics']
}
/** The declared view: the runner creates the topics from it (partitions, the low limit). */
export const outbox: RunnerOutbox =
  dbKind === 'mariadb'
    ? createMysqlOutbox({ topics: declaredTopics, schema })
    : dbKind === 'sqlite'
      ? createBetterSqliteOutbox({ topics: declaredTopics, schema })
      : createPgOutbox({ topics: declaredTopics, schema })

// ---------------------------------------------------------------------------------------------
// State

export type KillVariant = 'kill-after-ack' | 'kill-before-send' | 'kill-mid-send' | 'kill'
export type ScheduledKind =
  | 'kill'
  | 'pg-terminate'
  | 'leader-end'
  | 'poison'
  | 'outage'
  | 'pg-restart'
  | 'db-proxy'
  | 'kafka-proxy'
  | 'consumer-kill'
export interface Step {
  /** ms after the phase's relays run */
  at: number
  kind: ScheduledKind
  kill?: { variant: KillVariant; wantLeader: boolean }
  /** pg-restart: how long the server stays down (2-5 s). */
  downMs?: number
}

export interface RelayProc {
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

export interface PhaseState {
  plan: PhasePlan
  steps: Step[]
  active: boolean
  spawned: number
  kills: number
  procs: RelayProc[]
}

export interface ProducerProc {
  index: number
  child: ChildProcess
  outFile: string
  loaded: Promise<void>
  exited: Promise<number | null>
}

/** One life of a consumer process (--consumer): killed -9 by the plan, then the next life starts. */
export interface ConsumerProc {
  index: number
  life: number
  pid: number
  child: ChildProcess
  spawnedAt: number
  loaded: boolean
  alive: boolean
  killedByUs: boolean
  stopping: boolean
  /** The last counts it reported (a kill -9 loses those since). */
  last: ConsumerCounts
  exited: Promise<void>
}

/** Database restarts: what each held, and when the server was gone and back. */
export interface RestartRecord {
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

const bus = new EventEmitter()
bus.setMaxListeners(100)

export const state = {
  bus,
  /** The database under test (chaos/db/): set first thing in main(). */
  db: undefined as unknown as ChaosDatabase,
  /** The run's own server (unless --shared-db): set in main() once its port is known. */
  ownPg: undefined as OwnPostgres | undefined,
  databaseUrl: SHARED_DATABASE_URL,
  runnerConnection: {
    connectionString: SHARED_DATABASE_URL,
    application_name: `k-entity-chaos-${runId}-runner`,
  },
  broker: undefined as ChaosBroker | undefined,
  /** --kafka-cluster: the three brokers, instead of `broker`. */
  cluster: undefined as KafkaCluster | undefined,
  /** --kafka-cluster: the broker killed last (the next kill takes another). */
  lastKilledBroker: undefined as number | undefined,
  /** --db-proxy: between the relays and the database. */
  dbProxy: undefined as TcpProxy | undefined,
  proxyFaultCounter: 0,
  /** --kafka-proxy: between the relays and each broker's proxied listener (one per broker). */
  kafkaProxies: [] as TcpProxy[],
  kafkaProxyFaultCounter: 0,
  admin: undefined as unknown as pg.Pool,
  relays: [] as RelayProc[],
  producers: [] as ProducerProc[],
  faults: [] as FaultRecord[],
  /** When each fault happened (for an outage: when Kafka answered again), for the recovery times. */
  faultTimes: new Map<FaultRecord, { at: number; killedPid?: number }>(),
  deliveries: [] as { at: number; pid: number }[],
  /** Sends Kafka acknowledged ('sent' reports). */
  acks: [] as { at: number; pid: number }[],
  leadershipTimes: [] as { at: number; pid: number }[],
  deadLetterEvents: [] as { at: number; topic: string }[],
  poisonCommits: [] as { at: number; id: string; topic: string; kind: PoisonKind; fault: FaultRecord }[],
  restarts: [] as RestartRecord[],
  restartCounter: 0,
  injectionErrors: [] as string[],
  poisonCounter: 0,
  reclaimWatchers: [] as { ids: Set<string>; pid: number; fault: FaultRecord; since: number }[],
  /** After-ack kills: messages Kafka had acknowledged and the relay had not deleted: each must arrive twice. */
  ackedAtKill: [] as { fault: FaultRecord; ids: string[] }[],
  outages: [] as { from: number; to: number }[],
  /** Per tracking id: how many unfinished batches it was part of, and why they did not finish. */
  atRisk: new Map<string, { count: number; causes: string[] }>(),
  boundByCause: {} as Record<string, number>,
  errorsByStage: {} as Record<string, number>,
  /** fork() until the relay ran, for cold (re)starts after a kill. */
  coldStarts: [] as number[],
  deliveredReported: 0,
  sendFailures: 0,
  partialSends: 0,
  heldMessages: 0,
  unexpectedExits: 0,
  relayCounter: 0,
  faultCounter: 0,
  killCounter: 0,
  outageWindow: undefined as { from: number; to: number } | undefined,
  /** Set while Kafka is down: kills that wait for a send wait for Kafka first. */
  outageInProgress: undefined as Promise<void> | undefined,
  /** --consumer: every life of every consumer process. */
  consumers: [] as ConsumerProc[],
  /** When a consumer reported more messages handled or skipped than before (its recovery after a kill). */
  consumerProgress: [] as { at: number; pid: number }[],
  /** Consumer lives that exited without being killed or stopped by the runner. */
  consumerUnexpectedExits: 0,
  /** Set once the runner stops the consumers: no more restarts. */
  consumersStopping: false,
}

export function addAtRisk(ids: readonly string[], cause: string): void {
  if (ids.length === 0) return
  state.boundByCause[cause] = (state.boundByCause[cause] ?? 0) + ids.length
  for (const id of ids) {
    const entry = state.atRisk.get(id)
    if (entry) {
      entry.count++
      entry.causes.push(cause)
    } else state.atRisk.set(id, { count: 1, causes: [cause] })
  }
}

/** Where relays bootstrap: through the proxy with --kafka-proxy, else the run's Kafka itself. */
export function relayKafkaBrokers(): string[] {
  return state.kafkaProxies.length > 0
    ? state.kafkaProxies.map((proxy) => `127.0.0.1:${proxy.port}`)
    : kafkaBrokers()
}

/** Bootstrap servers of the run's Kafka: the cluster's brokers, or the one broker. */
export function kafkaBrokers(): string[] {
  if (state.cluster) return state.cluster.brokers
  if (state.broker) return [state.broker.brokers]
  throw new Error('no broker')
}
