/**
 * The parts a SQL outbox is composed of (see `SqlOutbox`): a dialect (what the database speaks
 * and can do), a transaction binding (how a data layer's handle runs the outbox's statements)
 * and a session opener (the outbox's own connection for relays, migrations and admin calls).
 * A new database is a new `SqlDialect`; a new driver or data layer is a binding and an opener.
 */
import type { OutboxStatus } from '../admin/types.ts'
import type { InboxSql } from '../consumer/inbox-sql.ts'
import type { DeadLetters, OutboxStats } from '../core/dead-letters.ts'
import type { LoggerOption } from '../core/logger.ts'
import type { OutboxOptions, TopicMap } from '../core/outbox.ts'
import type { NodeMode, RelayOptions } from '../core/relay.ts'
import type { OutboxDialect, OutboxTable, RelayStore } from '../core/seams.ts'
import type { KafkaSetting } from '../transports/kafka/index.ts'

/** What every SQL outbox accepts, whatever the database. */
export interface SqlOutboxOptions<M extends TopicMap> extends OutboxOptions<M> {
  /** Kafka for the relay and for topics mapped with `outbox: false`. */
  kafka?: KafkaSetting
  /**
   * Where relays of this outbox log (see `RelayOptions.logger`): a pino/bunyan-like logger, or
   * `false` for none. Default: warnings and errors on stderr, one line each.
   */
  logger?: LoggerOption
}

/** What a relay of a SQL outbox accepts beyond `RelayOptions`; each dialect reads its own. */
export interface SqlRelayOptions extends RelayOptions {
  connection?: unknown
  kafka?: KafkaSetting
  claimTimeout?: number
  listen?: boolean | 'eager'
  busyTimeout?: number
  claimSlots?: number
}

/** The options a dialect may or may not read (see `Capabilities.relayOptions`). */
export type DialectRelayOption =
  | 'connection'
  | 'claimTimeout'
  | 'listen'
  | 'busyTimeout'
  | 'leaderCheckInterval'
  | 'claimSlots'

/**
 * What a database can do. An option asking for something missing here is refused with an
 * `invalidArgument` naming the option, the database and what to do, never silently ignored.
 */
export interface Capabilities {
  /** Relay modes the database can fence (session-bound locks for `exclusive` and `concurrent`). */
  readonly modes: readonly NodeMode[]
  /** A companion session claims the next batch while Kafka has the current one (`pipeline`). */
  readonly pipeline: boolean
  /** Commits wake listening relays (`notify` on the outbox, `listen` on the relay). */
  readonly listen: boolean
  /**
   * The driver is synchronous: `produce()` writes before it returns and `migrate()` returns its
   * result, so topics sent straight to Kafka (`outbox: false`) cannot be produced in it.
   */
  readonly synchronous: boolean
  /** The relay options beyond `RelayOptions` this database reads; the others are refused. */
  readonly relayOptions: readonly DialectRelayOption[]
}

/** Why a refused option cannot work on this database and what to do instead, for the error. */
export interface Refusals {
  /** After "relay mode 'x' is not available on <database>: ". */
  readonly modes?: string
  /** After "relay option 'x' does not apply to <database>: ". */
  readonly options?: string
  /** After "topic 'x' is mapped with outbox: false (sent straight to Kafka), but ". */
  readonly direct?: string
}

export interface MigrationResult {
  applied: number[]
  current: number
}

/** Who a session is for; PostgreSQL and MySQL name the connection after it. */
export type SessionPurpose = 'relay' | 'migrate' | 'admin'

/**
 * Opens the outbox's own sessions on `target` (adapter-specific; `undefined`: the default, such
 * as `DATABASE_URL`). Returns the factory, so a bad target is refused at the call that gives it.
 */
export type SessionOpener<Target, Session> = (
  target: Target | undefined,
  purpose: SessionPurpose,
) => () => Session

/** The dialect part: SQL, migrations, dead letters, stats, relay store, errors and capabilities. */
export interface SqlDialect<Session, R extends SqlRelayOptions = SqlRelayOptions> {
  /** The database as error messages name it ('PostgreSQL', 'MySQL/MariaDB', 'SQLite', 'PGlite'). */
  readonly database: string
  readonly capabilities: Capabilities
  readonly refusals: Refusals
  /** How to create the tables, for `KE_NOT_MIGRATED` (default `outbox.migrate(connection)`). */
  readonly migrateHint?: string
  /** The message for relay options that are not an object (default 'relay options must be an object'). */
  readonly relayOptionsHint?: string
  /** The producer side for one outbox object (insert, migrations, error table); `notify` checked. */
  producer(options: { notify?: boolean }): OutboxDialect
  /** The table as the dialect's SQL names it, for error messages. */
  qualified(table: OutboxTable): string
  migrate(table: OutboxTable, open: () => Session): MigrationResult | Promise<MigrationResult>
  migrationScript(table: OutboxTable): string
  deadLetters(table: OutboxTable, open: () => Session): DeadLetters
  stats(table: OutboxTable, open: () => Session): Promise<OutboxStats>
  /** Queue figures read with every statement bounded by `countCap` (see `OutboxAdmin.status`). */
  status(table: OutboxTable, open: () => Session, countCap: number): Promise<OutboxStatus>
  /** The relay's store; it checks the dialect's own relay options (`claimTimeout`...). */
  relayStore(table: OutboxTable, open: () => Session, options: R): RelayStore
  /** `host:port` (or file) of a relay's connection target for log lines, never credentials. */
  endpoint(target: unknown): string | undefined
  /** The consumer inbox's SQL; undefined where consumers with an inbox are not available yet. */
  readonly inbox?: InboxSql<Session>
}

/** Runs `use` on a session the outbox opened and ends it after (migrations). */
export async function withSession<S extends { end(): Promise<void> }, T>(
  open: () => Promise<S>,
  use: (session: S) => Promise<T>,
): Promise<T> {
  const session = await open()
  try {
    return await use(session)
  } finally {
    await session.end()
  }
}
