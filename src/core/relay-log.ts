import { errorChain } from './error-chain.ts'
import { ErrorCodes, isKEntityError, WarningCodes } from './errors.ts'
import { type Logger, redact } from './logger.ts'

type LogLevel = 'error' | 'warn' | 'info'

/** What the relay talks to, for log lines (never with credentials). */
export interface RelayEndpoints {
  /** Kafka's bootstrap brokers, e.g. `127.0.0.1:9092`. */
  kafka?: string
  /** The database as `host:port` (or a file name). */
  database?: string
}

type Stage = 'connect' | 'claim' | 'send' | 'acknowledge'

/** One ongoing failure: logged when it starts, then only as a reminder, and when it ends. */
interface Condition {
  key: string
  text: string
  level: LogLevel
  since: number
  attempts: number
  lastLogged: number
  notMigrated: boolean
}

interface FailedMessage {
  id: string
  topic: string
  attempts: number
  error: string
  deadLettered: boolean
}

/** Partitions count as served again once no message was held for this long. */
const HELD_QUIET_MS = 5_000

/** How often a failure that goes on is mentioned again. */
export const REMINDER_MS = 5 * 60_000

/** Network error codes of Node's sockets: the peer cannot be reached at all. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
])

/** Refused credentials: PostgreSQL SQLSTATEs and MySQL/MariaDB error names and numbers. */
const AUTH_CODES = new Set<unknown>([
  '28P01',
  '28000',
  'ER_ACCESS_DENIED_ERROR',
  'ER_DBACCESS_DENIED_ERROR',
  1045,
  1044,
])

/**
 * Turns the relay's events into log lines, one per change of state rather than one per retry:
 * a relay retrying against a dead broker every few seconds says so once, reminds every few
 * minutes, and says when it is over. Costs nothing per delivered batch while nothing is failing.
 */
export class RelayLog {
  readonly #logger: Logger
  readonly #endpoints: RelayEndpoints
  readonly #maxBackoffMs: number
  readonly #now: () => number
  #database: Condition | undefined
  #kafka: Condition | undefined
  #held: Condition | undefined
  #leader: boolean | undefined
  #stopping = false
  #failed: FailedMessage[] = []

  constructor(logger: Logger, endpoints: RelayEndpoints, maxBackoffMs: number, now: () => number = Date.now) {
    this.#logger = logger
    this.#endpoints = endpoints
    this.#maxBackoffMs = maxBackoffMs
    this.#now = now
  }

  started(mode: string): void {
    this.#stopping = false
    this.#leader = undefined
    this.#write('info', { mode }, `relay started (mode ${mode})`)
  }

  stopping(): void {
    this.#stopping = true
  }

  stopped(): void {
    this.#write('info', {}, 'relay stopped')
  }

  /** Single and exclusive mode: called with every leadership check; logs only a change. */
  leadership(leader: boolean): void {
    if (this.#stopping || leader === this.#leader) return
    const first = this.#leader === undefined
    this.#leader = leader
    if (leader) this.#write('info', { leader }, 'this relay is now the leader and relays the outbox')
    else
      this.#write(
        'info',
        { leader },
        first
          ? 'this relay is a standby: another relay holds the leader lock'
          : 'this relay is no longer the leader; standing by',
      )
  }

  /**
   * Another relay holds the outbox. A warning when the configuration is wrong (a second `single`
   * relay, mixed modes); an exclusive standby is how that mode runs, so it is only info.
   */
  standby(reason: string, misconfigured: boolean): void {
    if (this.#stopping) return
    this.#write(misconfigured ? 'warn' : 'info', { code: WarningCodes.RELAY_STANDBY }, reason)
  }

  /**
   * Kafka took the rest of a batch but not these messages, for their partition's trouble (leader
   * moving, a dead broker). Said once when it starts and once when it is over, like an outage.
   */
  held(count: number, error: string, retryInMs: number): void {
    const now = this.#now()
    const condition = this.#held
    if (condition !== undefined) {
      condition.attempts++
      condition.lastLogged = now
      return
    }
    this.#held = {
      key: 'held',
      text: error,
      level: 'warn',
      since: now,
      attempts: 1,
      lastLogged: now,
      notMigrated: false,
    }
    this.#write(
      'warn',
      { count, retryInMs },
      `Kafka cannot take messages on some partitions now (${redact(error)}); ${count === 1 ? '1 message waits' : `${count} messages wait`} without using attempts, later messages of their keys wait behind them, other partitions go on`,
    )
  }

  failed(stage: Stage, error: unknown, retryInMs: number): void {
    if (stage === 'send')
      this.#kafka = this.#fail(this.#kafka, this.#describeKafka(error), error, stage, retryInMs)
    else
      this.#database = this.#fail(
        this.#database,
        this.#describeDatabase(error, stage),
        error,
        stage,
        retryInMs,
      )
  }

  /**
   * An internal invariant failed (`KE_INTERNAL`): a bug in k-entity, not a condition that a
   * retry fixes, so the relay stops instead of retrying it forever. Says why it stops.
   */
  fatal(stage: Stage, error: unknown): void {
    this.#write(
      'error',
      { stage, code: ErrorCodes.INTERNAL, err: error },
      `the relay stops: an internal check failed during its ${stage} (${redact(messageOf(error))}). This is a bug in k-entity, not retried; messages stay in the outbox. Please report it with this line`,
    )
  }

  /** The database answered a whole poll: a database failure, if any, is over. */
  databaseOk(): void {
    const condition = this.#database
    if (condition === undefined) return
    this.#database = undefined
    const context = {
      recovered: true,
      since: new Date(condition.since).toISOString(),
      attempts: condition.attempts,
    }
    if (condition.notMigrated) this.#write('info', context, 'the outbox table exists now; relaying')
    else
      this.#write(
        'info',
        context,
        `database reachable again after ${duration(this.#now() - condition.since)} (${attempts(condition.attempts, 'failed attempt')})`,
      )
  }

  /** Kafka acknowledged a batch: a Kafka failure, if any, is over. */
  kafkaOk(): void {
    const held = this.#held
    // Over when no message was held for a while: a batch without holds does not say the held
    // ones got through, they may still be waiting for their retry.
    if (held !== undefined && this.#now() - held.lastLogged >= HELD_QUIET_MS) {
      this.#held = undefined
      this.#write(
        'info',
        { recovered: true, since: new Date(held.since).toISOString(), holds: held.attempts },
        `Kafka takes messages on every partition again after ${duration(this.#now() - held.since)}`,
      )
    }
    const condition = this.#kafka
    if (condition === undefined) return
    this.#kafka = undefined
    this.#write(
      'info',
      { recovered: true, since: new Date(condition.since).toISOString(), attempts: condition.attempts },
      `Kafka reachable again after ${duration(this.#now() - condition.since)} (${attempts(condition.attempts, 'failed attempt')})`,
    )
  }

  /**
   * A message failed on its own. Dead-lettered ones, and ones failing for the first time, are
   * logged; the failures of one batch come out together (grouped by topic and error) once the
   * relay has reported them all, in the same tick.
   */
  messageFailed(message: FailedMessage): void {
    if (!message.deadLettered && message.attempts > 1) return
    if (this.#failed.length === 0) queueMicrotask(() => this.#flushFailures())
    this.#failed.push(message)
  }

  #flushFailures(): void {
    const failed = this.#failed
    this.#failed = []
    const groups = new Map<string, FailedMessage[]>()
    for (const message of failed) {
      const key = `${message.deadLettered}\u0000${message.topic}\u0000${message.error}`
      const group = groups.get(key)
      if (group) group.push(message)
      else groups.set(key, [message])
    }
    for (const group of groups.values()) {
      const [first] = group
      if (first === undefined) continue
      const ids = group.map((m) => m.id)
      const shown = ids.length > 10 ? `${ids.slice(0, 10).join(', ')}, …` : ids.join(', ')
      const count = group.length === 1 ? '1 message' : `${group.length} messages`
      const error = redact(first.error)
      const context = { topic: first.topic, count: group.length, ids: ids.slice(0, 20) }
      if (first.deadLettered)
        this.#write(
          'warn',
          context,
          `${count} of topic '${first.topic}' moved to the dead letters (ids ${shown}): ${error}; inspect or replay them with outbox.deadLetters()`,
        )
      else
        this.#write(
          'warn',
          context,
          `${count} of topic '${first.topic}' failed and will be retried, holding back later messages of the same key (ids ${shown}): ${error}`,
        )
    }
  }

  #fail(
    current: Condition | undefined,
    described: { key: string; text: string; level: LogLevel; notMigrated?: boolean },
    error: unknown,
    stage: Stage,
    retryInMs: number,
  ): Condition {
    const now = this.#now()
    if (current !== undefined && current.key === described.key) {
      current.attempts++
      if (now - current.lastLogged >= REMINDER_MS) {
        current.lastLogged = now
        this.#write(
          current.level,
          { stage, attempts: current.attempts, since: new Date(current.since).toISOString(), err: error },
          `still ${current.text} after ${duration(now - current.since)} (${attempts(current.attempts, 'attempt')})`,
        )
      }
      return current
    }
    const condition: Condition = {
      ...described,
      notMigrated: described.notMigrated === true,
      // A different failure of the same part (refused, then a missing table) continues the outage.
      since: current?.since ?? now,
      attempts: (current?.attempts ?? 0) + 1,
      lastLogged: now,
    }
    const retry = `retrying in ${duration(retryInMs)}, then with backoff up to every ${duration(this.#maxBackoffMs)}`
    const suffix = stage === 'send' ? `; ${retry}, messages stay in the outbox` : `; ${retry}`
    this.#write(
      described.level,
      { stage, retryInMs, err: error },
      condition.notMigrated
        ? `${described.text}; the relay retries until it exists`
        : `${described.text}${suffix}`,
    )
    return condition
  }

  #describeKafka(error: unknown): { key: string; text: string; level: LogLevel } {
    const network = networkError(error)
    if (network !== undefined) {
      const where = network.address ?? this.#endpoints.kafka ?? 'its brokers'
      return {
        key: `kafka:${network.code}`,
        text: `cannot reach Kafka at ${where} (${network.code})`,
        level: 'warn',
      }
    }
    const at = this.#endpoints.kafka === undefined ? '' : ` at ${this.#endpoints.kafka}`
    return {
      key: `kafka:${codeOf(error) ?? 'other'}`,
      text: `Kafka${at} does not acknowledge messages (${redact(messageOf(error))})`,
      level: 'warn',
    }
  }

  #describeDatabase(
    error: unknown,
    stage: Stage,
  ): { key: string; text: string; level: LogLevel; notMigrated?: boolean } {
    if (isKEntityError(error, ErrorCodes.NOT_MIGRATED)) {
      return { key: 'database:not-migrated', text: redact(error.message), level: 'error', notMigrated: true }
    }
    const network = networkError(error)
    const database = this.#endpoints.database
    if (network !== undefined) {
      const where =
        database !== undefined && network.address !== undefined && network.address !== database
          ? `${database} (${network.address})`
          : (database ?? network.address ?? 'its address')
      return {
        key: `database:${network.code}`,
        text: `cannot reach the database at ${where} (${network.code}); messages stay in the outbox`,
        level: 'error',
      }
    }
    const auth = errorChain(error).find((link) => AUTH_CODES.has(link.code) || AUTH_CODES.has(link.errno))
    if (auth !== undefined) {
      const where = database === undefined ? '' : ` at ${database}`
      return {
        key: 'database:auth',
        text: `the database${where} refused the relay's credentials (${redact(messageOf(auth))}); check the user and password of the relay's connection`,
        level: 'error',
      }
    }
    return {
      key: `database:${stage}:${codeOf(error, true) ?? 'other'}`,
      text: `the relay's ${stage} failed (${redact(messageOf(error))})`,
      level: 'error',
    }
  }

  #write(level: LogLevel, context: object, message: string): void {
    try {
      this.#logger[level](context, message)
    } catch {
      // A broken logger must not break delivery.
    }
  }
}

function networkError(error: unknown): { code: string; address?: string } | undefined {
  for (const link of errorChain(error)) {
    if (typeof link.code !== 'string' || !NETWORK_CODES.has(link.code)) continue
    const host = typeof link.address === 'string' ? link.address : undefined
    const address =
      host === undefined ? undefined : typeof link.port === 'number' ? `${host}:${link.port}` : host
    return { code: link.code, address }
  }
  return undefined
}

/**
 * The first code along the chain. `driverFirst`: the driver's (a SQLSTATE, an errno) ahead of the
 * `KE_` code the dialect's table wrapped it in, so a deadlock and a lost connection, both
 * `KE_STORE_FAILED`, stay two conditions with a log line each.
 */
function codeOf(error: unknown, driverFirst = false): string | undefined {
  let ours: string | undefined
  for (const link of errorChain(error)) {
    const code = link.code
    if (typeof code !== 'string' && typeof code !== 'number') continue
    if (!driverFirst || !isKEntityError(link)) return String(code)
    ours ??= String(code)
  }
  return ours
}

function messageOf(error: unknown): string {
  const text =
    error instanceof Error ? error.message : String((error as { message?: unknown } | null)?.message ?? error)
  return text.length > 300 ? `${text.slice(0, 300)}…` : text
}

function duration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`
  if (ms < 10_000) return `${Math.round(ms / 100) / 10} s`
  if (ms < 120_000) return `${Math.round(ms / 1000)} s`
  if (ms < 2 * 3_600_000) return `${Math.round(ms / 60_000)} min`
  return `${Math.round(ms / 3_600_000)} h`
}

function attempts(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`
}
