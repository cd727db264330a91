/**
 * The relay's public surface: its options, events and the `OutboxRelay` class. The relay itself
 * lives in ./relay/, one module per job: lifecycle (start, stop), loop, pipeline, isolation
 * (finding the message or topic Kafka refuses), delivery and outcomes (a send and what Kafka
 * answered), leadership, options and events.
 */
import type { LoggerOption } from './logger.ts'
import type { RelayEndpoints } from './relay-log.ts'
import type { RetryPolicy } from './retry.ts'
import type { OutboxTracing } from './tracing.ts'

export { OutboxRelay } from './relay/lifecycle.ts'
export { RELAY_DEFAULTS } from './relay/options.ts'

export type NodeMode = 'single' | 'exclusive' | 'concurrent'

export interface RelayOptions {
  /**
   * How often to poll when there is no backlog, in ms (default 1000): each poll starts this long
   * after the previous one started. A full batch polls again at once, a wake-up sooner.
   */
  pollingInterval?: number
  /** Most messages claimed, sent and deleted per batch (default 500). */
  maxMessagesPerPoll?: number
  /**
   * Most bytes per batch, counting each message's key, value and headers as stored (default
   * 16 MiB, at most 1 GiB). A claim takes messages oldest first until the next one would pass
   * it, next to the `maxMessagesPerPoll` limit, and the batch the pipeline claims ahead has the
   * same budget: a relay holds about two batches (and their copies until V8 collects them), so its
   * memory is bounded by this setting, not by payload sizes or the backlog. A message larger than
   * the budget is still relayed, alone in its batch.
   * Per-key order is unchanged (the budget only shortens a batch's tail).
   */
  maxBytesPerPoll?: number
  /**
   * `single` (default): meant to be the only relay. It takes the same leader lock as
   * `exclusive`, so a second `single` relay started by mistake never claims: it stands by, says
   * once (a `leadership` event with a `reason`, and a process warning) that another relay holds
   * the outbox, and takes over when that one goes. `exclusive`: run it in every process; one
   * holds the leader lock and relays, the others stand by quietly and take over when it goes.
   * `concurrent`: every relay works, sharing the messages; a key is only ever held by one relay
   * at a time, so per-key order holds. Modes cannot be mixed on one outbox: a concurrent relay
   * waits while a single/exclusive relay leads, and a leader waits while concurrent relays run.
   */
  mode?: NodeMode
  /** How often a relay that stands by (see `mode`) tries again to relay, in ms (default 1000). */
  leaderCheckInterval?: number
  /** First and largest delay after a failed batch or connection, in ms (defaults 250 / 30000). */
  retryBackoff?: { initial?: number; max?: number }
  /**
   * Claim the next batch on a second database session while the current batch is on its way to
   * Kafka, and delete the acknowledged batch while the next one is sent (default true where the
   * dialect supports it; PostgreSQL does). Costs one more connection per relay.
   */
  pipeline?: boolean
  /** Called for every relay event; never throws into the loop. */
  onEvent?: (event: RelayEvent) => void
  /**
   * Wraps each batch's send, e.g. in a span linked to the traces its messages were produced in
   * (`otelTracing()` from `k-entity/opentelemetry`). Default: the outbox's `tracing` option.
   */
  tracing?: OutboxTracing
  /**
   * Where the relay says what changes: started, leader or standby, a failure that starts (once,
   * not per retry) and its end, dead letters, stopped. A pino/bunyan-like logger (`console`
   * works too), or `false` for none. Default: the outbox's `logger`, else warnings and errors on
   * stderr, one line each.
   */
  logger?: LoggerOption
  /** @internal What the relay connects to, for log lines (adapters fill it, without credentials). */
  endpoints?: RelayEndpoints
  /** Called once when `stop()` completes (used by adapters to forget the relay). */
  onStop?: () => void
  /** Default retry policy for messages that fail on their own (topics may override it). */
  retry?: Partial<RetryPolicy>
  /** Per-topic retry policies by Kafka topic name (adapters fill it from the topic mapping). */
  topicRetry?: ReadonlyMap<string, Partial<RetryPolicy>>
  /**
   * Before its first claim, create the outbox's missing topics as declared (`partitions`,
   * `replicationFactor`, `configs`) and check existing ones, like `outbox.ensureTopics()`
   * (default false). The result comes as a `topics` event; a difference from a declaration is
   * also a warning in the relay's log (`KE_TOPIC_MISMATCH`), never a failure. A failure to create is an
   * `error` event (stage `connect`) and is retried with backoff; nothing is claimed until it works.
   * Needs Kafka connection options (not a transport object).
   */
  ensureTopics?: boolean
  /**
   * @internal The relay's clock in ms since the epoch (default `Date.now`), so tests can put it
   * off. Retry times never come from it: the store computes them on the database's clock.
   */
  now?: () => number
}

export type RelayEvent =
  /**
   * A batch's messages Kafka acknowledged are deleted. `durationMs` runs from the start of the
   * batch to its delete; `claimMs`, `sendMs` and `deleteMs` are its three steps (a pipelined
   * batch was claimed while the one before it was sent, and its delete may share a round trip
   * with the next claim: both then report that round trip). `topics` counts the messages per
   * topic; it is only built while someone listens (`onEvent` or the diagnostics channel).
   */
  | {
      type: 'delivered'
      count: number
      durationMs: number
      topics: Readonly<Record<string, number>>
      claimMs: number
      sendMs: number
      deleteMs: number
    }
  /** A message failed on its own: retried at `retryAt`, or moved to the dead letters. */
  | {
      type: 'message-failed'
      id: string
      topic: string
      attempts: number
      error: string
      deadLettered: boolean
      retryAt: Date | null
    }
  /**
   * Single and exclusive mode: this relay became the leader, or stopped being it. `reason` says
   * why a relay is not relaying when another relay holds the outbox (also for a concurrent relay
   * kept waiting by a leader, or for a leader kept waiting by concurrent relays); sent once each
   * time the relay starts waiting.
   */
  | { type: 'leadership'; leader: boolean; reason?: string }
  /**
   * A poll failed; the relay retries in `retryInMs`. `fatal: true`: an internal invariant failed
   * (`error` is a `KE_INTERNAL`, a bug in k-entity): the relay stopped instead of retrying
   * (`retryInMs` is 0), leaving every unacknowledged message in the outbox.
   */
  | {
      type: 'error'
      stage: 'connect' | 'claim' | 'send' | 'acknowledge'
      error: unknown
      retryInMs: number
      fatal?: true
    }
  /**
   * Kafka took the rest of the batch but not these messages, for a reason that is not theirs (a
   * partition whose leader is moving, a dead broker): they wait `retryInMs` without using an
   * attempt, and later messages of their keys wait behind them.
   */
  | { type: 'held'; ids: string[]; error: string; retryInMs: number }
  /** `ensureTopics: true`: the topics the relay created, found as declared, or found different. */
  | {
      type: 'topics'
      created: string[]
      ok: string[]
      mismatched: Array<{
        topic: string
        field: string
        declared: string | number
        actual: string | number | null
      }>
    }

export interface StopOptions {
  /** How long to let the in-flight batch finish before its claim is released, in ms (default 10000). */
  timeout?: number
}
