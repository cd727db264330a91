import type { TopicMap } from '../../core/outbox.ts'
import type { RelayOptions } from '../../core/relay.ts'
import type { TransactionAdapter } from '../../core/seams.ts'
import type { SqlOutboxOptions } from '../../outbox/parts.ts'
import { SqlOutbox } from '../../outbox/sql-outbox.ts'
import type { KafkaSetting } from '../../transports/kafka/index.ts'
import type { PgSession } from './session.ts'
import { postgresSql } from './sql-dialect.ts'

export type { MigrationResult } from '../../outbox/parts.ts'

/**
 * What a PostgreSQL adapter supplies: how to use the app's transaction handle, and how to open
 * a dedicated session for the relay and for migrations.
 */
export interface PostgresDriver<Tx, Target> {
  /** Wraps the app's transaction handle; throws a clear error for anything else. */
  transaction(tx: Tx): TransactionAdapter
  /** Opens a new session that the caller owns (and ends). */
  openSession(target: Target | undefined, applicationName: string): Promise<PgSession>
  /**
   * Every transaction that produced sends its NOTIFY, unspaced (see `NotifySpacing`): for a
   * database of one connection (PGlite), whose commits never wait for each other's NOTIFY.
   */
  notifyEveryCommit?: boolean
}

export interface PostgresOutboxOptions<M extends TopicMap> extends SqlOutboxOptions<M> {
  /**
   * Wake listening relays with a NOTIFY at commit (default true). At most one transaction per
   * 20 ms of this outbox object queues one: PostgreSQL serialises the commits of all transactions
   * that notify, so a NOTIFY in every transaction halved what 8 concurrent writers could commit.
   * A woken relay keeps polling every 5 ms for a while, which finds the transactions that
   * committed without one. Turn off behind transaction-mode poolers, where LISTEN cannot work.
   */
  notify?: boolean
}

export interface PostgresRelayOptions<Target> extends RelayOptions {
  /** Where the relay's session connects (adapter-specific; defaults to `DATABASE_URL`). */
  connection?: Target
  /** Kafka for this relay; defaults to the outbox's `kafka` option. */
  kafka?: KafkaSetting
  /** Longest a claimed batch may stay unacknowledged before PostgreSQL releases it, in ms (default 60000). */
  claimTimeout?: number
  /**
   * LISTEN for commit notifications and poll at once when one arrives (default true). Polling
   * stays the safety net: notifications are lost while disconnected and behind poolers.
   * `'eager'`: also, while notifications come, claim again at once after every batch that found
   * messages, instead of after a 5 ms poll: a few ms less from commit to Kafka for about twice
   * the claims (BENCHMARKS.md, scenario 3). It stops at the first empty claim, so an idle relay
   * polls no more than with `true`.
   */
  listen?: boolean | 'eager'
  /**
   * Mode `'concurrent'` only: a claim's try-locks are per slot of the key's hash (`claimSlots`
   * slots, a power of two from 2 to 1024) instead of one per key, so a claim tries at most that
   * many locks however many distinct keys its batch holds (one per key by default: up to 500 when
   * every message has a key of its own). A relay holding a slot holds every key in it, so it
   * should be at least 4x the number of relays: 64 suits up to 16.
   *
   * Every concurrent relay of the outbox must use the same value: relays with another value (or
   * none) wait and claim nothing while these run, and these wait while those run. A relay of a
   * version before this option does not see them: upgrade every relay before setting it.
   */
  claimSlots?: number
}

/**
 * The outbox on PostgreSQL, whatever the driver: the SQL outbox with the PostgreSQL dialect,
 * the driver's transaction binding and its sessions (named `k-entity-relay`, `-migrate`, `-admin`).
 */
export class PostgresOutbox<M extends TopicMap, Tx, Target> extends SqlOutbox<
  M,
  Tx,
  Target,
  Promise<PgSession>,
  PostgresRelayOptions<Target>
> {
  constructor(options: PostgresOutboxOptions<M>, driver: PostgresDriver<Tx, Target>) {
    super(options, {
      dialect: postgresSql(driver?.notifyEveryCommit === true),
      binding: (tx) => driver.transaction(tx),
      sessions: (target, purpose) => () => driver.openSession(target, `k-entity-${purpose}`),
    })
  }
}
