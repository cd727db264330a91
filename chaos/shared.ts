/**
 * What the chaos runner and its child processes (producers, relays) share: the topic mapping,
 * the configuration handed to children, the messages they exchange over IPC, a seeded RNG.
 */
import { defineTopic } from '../src/index.ts'
import { trackingHeaders } from '../src/testing/index.ts'
import type { ChaosDbKind } from './db/types.ts'

export type RelayMode = 'single' | 'exclusive' | 'concurrent'

/** One tracked message: `pad` bytes of filler make a poison message too large for its topic. */
export interface ChaosEvent {
  id: string
  key: string
  seq: number
  pad?: number
}

/**
 * The topics of a run: `orders` has a low max.message.bytes (too-large poison goes there),
 * `payments` the default; `missing` is never created (poison: a topic that does not exist, with
 * auto-creation off).
 */
export interface TopicNames {
  orders: string
  payments: string
  missing: string
}

/** Partitions the runner creates the delivered topics with (`outbox.ensureTopics()`). */
export const TOPIC_PARTITIONS = { orders: 4, payments: 3 } as const

/**
 * The poison a producer commits between two normal messages of one key: `too-large` (over the
 * topic's max.message.bytes, under the app's maxMessageBytes), `missing-topic` (a declared topic
 * nobody created), `internal-topic` (a row for `__consumer_offsets` written into the outbox table
 * by hand: defineTopic refuses such names).
 */
export type PoisonKind = 'too-large' | 'missing-topic' | 'internal-topic'
export const POISON_KINDS: readonly PoisonKind[] = ['too-large', 'missing-topic', 'internal-topic']
/** The topic of the hand-written poison row: Kafka's own, so a send would corrupt the broker. */
export const INTERNAL_TOPIC = '__consumer_offsets'

/** `orders` topic's max.message.bytes: a poison message is larger, every normal batch far smaller. */
export const ORDERS_MAX_MESSAGE_BYTES = 64 * 1024
/** Filler of a poison message: well over the topic's limit, under the produce-side 1 MB check. */
export const POISON_PAD_BYTES = 100_000

/**
 * The app's view of the topics (`declared: false`, what producers and relays use) leaves
 * max.message.bytes out, so produce() accepts a message the `orders` topic refuses: that is the
 * too-large poison, a topic whose limit is lower than the app's maxMessageBytes. The runner
 * creates the topics from the declared view (`declared: true`: partitions and the low limit).
 */
export function chaosTopics(names: TopicNames, declared = false, replicas?: number) {
  // On a cluster (--kafka-cluster): every partition on `replicas` brokers, acks=all needing two.
  const replicated =
    replicas === undefined ? {} : { replicationFactor: replicas, configs: { 'min.insync.replicas': '2' } }
  const common = {
    key: (event: ChaosEvent) => event.key,
    headers: (event: ChaosEvent) => trackingHeaders(event.id, event.seq),
    // The ke-message-id header survives a relay's resend, so the consumers' inbox (--consumer)
    // skips a relay duplicate like a Kafka redelivery: the default inbox key, as an app would use it.
    messageId: true,
    // The padding is blanks after the JSON, which JSON.parse ignores.
    deserializer: {
      name: 'chaos-json-padded',
      deserialize: (bytes: Buffer) => JSON.parse(bytes.toString('utf8')) as ChaosEvent,
    },
    serializer: {
      name: 'chaos-json-padded',
      serialize: (event: ChaosEvent) =>
        Buffer.from(
          JSON.stringify({ id: event.id, key: event.key, seq: event.seq }) + ' '.repeat(event.pad ?? 0),
        ),
    },
  }
  return {
    orders: defineTopic<ChaosEvent>({
      name: names.orders,
      ...common,
      ...(declared
        ? {
            partitions: TOPIC_PARTITIONS.orders,
            ...replicated,
            configs: { ...replicated.configs, 'max.message.bytes': String(ORDERS_MAX_MESSAGE_BYTES) },
          }
        : {}),
    }),
    payments: defineTopic<ChaosEvent>({
      name: names.payments,
      ...common,
      ...(declared ? { partitions: TOPIC_PARTITIONS.payments, ...replicated } : {}),
    }),
  }
}

/** The producers' topics: the two delivered ones, and the one nobody creates. */
export function producerTopics(names: TopicNames) {
  return {
    ...chaosTopics(names),
    missing: defineTopic<ChaosEvent>({
      name: names.missing,
      key: (event: ChaosEvent) => event.key,
      headers: (event: ChaosEvent) => trackingHeaders(event.id, event.seq),
    }),
  }
}

/** `internal`: the hand-written `__consumer_offsets` row. */
export type TopicAccessor = keyof TopicNames | 'internal'

/** Handed to a producer child as JSON in CHAOS_PRODUCER. */
export interface ProducerConfig {
  /** Which database half the process loads (chaos/db/). */
  db: ChaosDbKind
  index: number
  databaseUrl: string
  applicationName: string
  schema: string
  topics: TopicNames
  /** JSONL file the producer appends committed / rolled-back / poison ids to. */
  outFile: string
  writers: number
  keysPerWriter: number
  rollbackRate: number
  burstRate: number
  /** Pause between two transactions of one writer, in ms. */
  paceMs: number
  seed: number
  /** Produce only after { type: 'go' }. */
  waitForGo: boolean
}

type Tuple = [string, TopicAccessor, string, number]

/** Handed to a relay child as JSON in CHAOS_RELAY. */
export interface RelayConfig {
  db: ChaosDbKind
  databaseUrl: string
  /** Distinctive application_name of this run's relay sessions (the pg_terminate_backend target). */
  applicationName: string
  schema: string
  topics: TopicNames
  brokers: string[]
  mode: RelayMode
  /** Relay option claimSlots, for the concurrent phase (`--claim-slots`). */
  claimSlots?: number
  maxMessagesPerPoll: number
  /** How long an armed relay pauses at its hold point. */
  holdMs: number
  /** Load everything, report 'loaded', and start the relay only on { type: 'go' } (pre-started processes). */
  waitForGo: boolean
  /**
   * Self-test of the suite (`--sabotage`): make this relay misbehave once so the run must fail.
   * `drop`: claim a batch sent whole while leaving its last message out; `reorder`: swap the first
   * two messages of one key within a batch.
   */
  sabotage?: 'drop' | 'reorder'
}

/** One line of a producer's JSONL file (one transaction): [id, topic accessor, key, seq] tuples. */
export interface ProducerLine {
  /** committed */
  c?: Tuple[]
  /** rolled back on purpose */
  r?: Tuple[]
  /** committed poison messages (not in `c`), with their kind */
  p?: Tuple[]
  pk?: PoisonKind
  /** failed before its COMMIT was sent (the connection broke): not committed */
  f?: Tuple[]
  /** failed after its COMMIT was sent, without an answer: outcome unknown, resolved by the runner */
  u?: Tuple[]
  /** the poison message among `f` / `u`, if the transaction was a poison one */
  up?: Tuple
  /** `f` / `u`: when (epoch ms) and why it failed */
  t?: number
  e?: string
}

/** Runner → producer. */
export type ProducerCommand = { type: 'go' } | { type: 'poison'; kind: PoisonKind } | { type: 'stop' }

/** Producer → runner. */
export type ProducerReport =
  | { type: 'loaded'; pid: number }
  | { type: 'started'; pid: number }
  | {
      type: 'poisoned'
      pid: number
      kind: PoisonKind
      id: string
      topic: string
      key: string
      before: string
      after: string
    }
  | { type: 'progress'; pid: number; committed: number; rolledBack: number }
  | {
      type: 'stopped'
      pid: number
      committed: number
      rolledBack: number
      failed: number
      uncertain: number
    }
  | { type: 'failed'; pid: number; message: string }

/**
 * Where an armed relay pauses for `holdMs` (so that the runner's kill -9 lands there):
 * `before-send` after claiming a batch and before calling Kafka, `after-ack` after Kafka
 * acknowledged the batch and before the relay deletes it.
 */
export type HoldPoint = 'before-send' | 'after-ack'

/** Handed to a consumer child (chaos/consumer.ts) as JSON in CHAOS_CONSUMER. */
export interface ConsumerConfig {
  db: ChaosDbKind
  /** Which consumer (0, 1): its lives share it, and consumer 0 is a static group member. */
  index: number
  life: number
  databaseUrl: string
  /** PostgreSQL: the application_name of its sessions (no session fault targets it). */
  applicationName: string
  schema: string
  topics: TopicNames
  brokers: string[]
  /** Consumer group prefix: `<group>-orders`, `<group>-payments`. */
  group: string
}

/** What a consumer child reports: its counts (both topics summed), every CONSUMER_REPORT_MS and at exit. */
export interface ConsumerCounts {
  handled: number
  duplicates: number
  deadLettered: number
  retried: number
  reconnects: number
}
export type ConsumerReport =
  | { type: 'loaded'; pid: number }
  | ({ type: 'counts'; pid: number; final: boolean } & ConsumerCounts)
  | { type: 'failed'; pid: number; message: string }

/** Runner → consumer. */
export type ConsumerCommand = { type: 'stop' }

/** The effects table the consumers' handlers write (one row per message id) and the runner checks. */
export const EFFECTS_TABLE = 'chaos_effects'

/** A table of the run's schema, quoted; SQLite has no schemas, so its name takes it as a prefix (as the outbox's do). */
export function schemaTable(db: ChaosDbKind, schema: string, table: string): string {
  if (db === 'mariadb') return `\`${schema}\`.${table}`
  if (db === 'sqlite') return `"${schema}_${table}"`
  return `"${schema}".${table}`
}

/**
 * Longest a SQLite handle of the run waits for another process's write lock (the relay's delete,
 * a producer's or a consumer's transaction).
 */
export const SQLITE_BUSY_TIMEOUT_MS = 30_000

/** Runner → relay. */
export type RelayCommand =
  | { type: 'go' }
  | { type: 'hold'; at: HoldPoint }
  | { type: 'disarm' }
  | { type: 'stop' }

/** Relay → runner: the relay's own events, plus the transport's 'sending' / 'sent' / 'send-failed'. */
export type RelayReport =
  | { type: 'loaded'; pid: number }
  | { type: 'started'; pid: number }
  | { type: 'sending'; pid: number; ids: string[]; held: boolean }
  | { type: 'sent'; pid: number; count: number; held: boolean }
  | { type: 'send-failed'; pid: number; count: number; message: string }
  /** Kafka took part of the batch: the rest (and later messages of their keys) is sent again. */
  | { type: 'send-partial'; pid: number; count: number; failed: string[]; message: string }
  | { type: 'delivered'; pid: number; count: number; durationMs: number }
  | { type: 'message-failed'; pid: number; id: string; topic: string; deadLettered: boolean; error: string }
  | { type: 'leadership'; pid: number; leader: boolean }
  /** Messages Kafka refused for its own reasons (a partition's leader moving): waiting, no attempt used. */
  | { type: 'held'; pid: number; count: number; error: string }
  | { type: 'error'; pid: number; stage: string; message: string; retryInMs: number }

/** mulberry32: small, fast, good enough to make a fault schedule reproducible from a seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function env(name: string): string {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is required`)
  return value
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Resolves when the parent sends { type: 'go' } (right away when not asked to wait). */
export function waitForGo(wait: boolean): Promise<void> {
  if (!wait) return Promise.resolve()
  return new Promise((resolve) => {
    const listener = (message: { type?: string }) => {
      if (message?.type !== 'go') return
      process.off('message', listener)
      resolve()
    }
    process.on('message', listener)
  })
}
