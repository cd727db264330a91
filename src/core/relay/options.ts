import { describe, invalidArgument } from '../errors.ts'
import { type Logger, resolveLogger } from '../logger.ts'
import type { NodeMode, RelayEvent, RelayOptions } from '../relay.ts'
import type { RelayEndpoints } from '../relay-log.ts'
import { DEFAULT_RETRY_POLICY, type RetryPolicy, resolveRetryPolicy } from '../retry.ts'
import { checkTracing, type OutboxTracing } from '../tracing.ts'

/** The relay's options once checked, with every default filled in. */
export interface ResolvedOptions {
  pipeline: boolean
  pollingInterval: number
  maxMessagesPerPoll: number
  maxBytesPerPoll: number
  mode: NodeMode
  leaderCheckInterval: number
  backoff: { initial: number; max: number }
  onEvent: (event: RelayEvent) => void
  /** An `onEvent` was given: events are built in full for it (see `Delivery.observed`). */
  observed: boolean
  tracing: OutboxTracing | undefined
  logger: Logger
  endpoints: RelayEndpoints
  onStop: () => void
  retry: RetryPolicy
  topicRetry: Map<string, RetryPolicy>
  now: () => number
}

export const RELAY_DEFAULTS = {
  pollingInterval: 1000,
  maxMessagesPerPoll: 500,
  /**
   * 16 MiB. A relay holds at most two batches of rows (the one in Kafka's hands and the one the
   * pipeline claimed ahead) plus the producer's encoded copy, and then waits for V8 to collect
   * them: measured with 1 MB messages, 154 MiB RSS above an idle relay at 16 MiB and 103 MiB at
   * 4 MiB, the same with 134 MB or 1 GB of backlog (bench/results/2026-12-06-payload-sweep.md).
   * By row count alone, 500 messages of 950 KB peaked at 2.26 GB (issue 19). 16 MiB is 16 times
   * Kafka's default largest message (1 MiB), so one always fits and batches of such messages still
   * hold 16: 1 MB messages went at 67 MB/s against 55 MB/s at 4 MiB on a loaded machine.
   */
  maxBytesPerPoll: 16 * 1024 * 1024,
  mode: 'single' as NodeMode,
  leaderCheckInterval: 1000,
  retryBackoff: { initial: 250, max: 30_000 },
}

/** 1 GiB: a larger budget bounds nothing a Node.js process could hold anyway. */
const MAX_BYTES_PER_POLL = 1024 * 1024 * 1024

function positiveInteger(
  value: unknown,
  name: string,
  fallback: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw invalidArgument(
      `relay option '${name}' must be an integer from 1 to ${max}, got ${describe(value)}`,
    )
  }
  return value
}

export function resolveOptions(options: RelayOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null)
    throw invalidArgument('relay options must be an object')
  const mode = options.mode ?? RELAY_DEFAULTS.mode
  if (mode !== 'single' && mode !== 'exclusive' && mode !== 'concurrent') {
    throw invalidArgument(
      `relay option 'mode' must be 'single', 'exclusive' or 'concurrent', got ${describe(mode)}`,
    )
  }
  if (options.onEvent !== undefined && typeof options.onEvent !== 'function') {
    throw invalidArgument(`relay option 'onEvent' must be a function`)
  }
  const initial = positiveInteger(
    options.retryBackoff?.initial,
    'retryBackoff.initial',
    RELAY_DEFAULTS.retryBackoff.initial,
  )
  const max = positiveInteger(options.retryBackoff?.max, 'retryBackoff.max', RELAY_DEFAULTS.retryBackoff.max)
  if (max < initial)
    throw invalidArgument(
      `relay option 'retryBackoff.max' (${max}) is below 'retryBackoff.initial' (${initial})`,
    )
  const retry = resolveRetryPolicy(options.retry, 'relay options', DEFAULT_RETRY_POLICY)
  if (options.pipeline !== undefined && typeof options.pipeline !== 'boolean') {
    throw invalidArgument(`relay option 'pipeline' must be true or false, got ${describe(options.pipeline)}`)
  }
  return {
    pipeline: options.pipeline ?? true,
    pollingInterval: positiveInteger(
      options.pollingInterval,
      'pollingInterval',
      RELAY_DEFAULTS.pollingInterval,
      3_600_000,
    ),
    maxMessagesPerPoll: positiveInteger(
      options.maxMessagesPerPoll,
      'maxMessagesPerPoll',
      RELAY_DEFAULTS.maxMessagesPerPoll,
      10_000,
    ),
    maxBytesPerPoll: positiveInteger(
      options.maxBytesPerPoll,
      'maxBytesPerPoll',
      RELAY_DEFAULTS.maxBytesPerPoll,
      MAX_BYTES_PER_POLL,
    ),
    mode,
    leaderCheckInterval: positiveInteger(
      options.leaderCheckInterval,
      'leaderCheckInterval',
      RELAY_DEFAULTS.leaderCheckInterval,
      600_000,
    ),
    backoff: { initial, max },
    onEvent: options.onEvent ?? (() => {}),
    observed: options.onEvent !== undefined,
    tracing: checkTracing(options.tracing, 'relay option'),
    logger: resolveLogger(options.logger, 'relay options'),
    endpoints: typeof options.endpoints === 'object' && options.endpoints !== null ? options.endpoints : {},
    onStop: options.onStop ?? (() => {}),
    now: typeof options.now === 'function' ? options.now : Date.now,
    retry,
    topicRetry: new Map(
      [...(options.topicRetry ?? new Map())].map(([topic, policy]) => [
        topic,
        resolveRetryPolicy(policy, `topic '${topic}'`, retry),
      ]),
    ),
  }
}
