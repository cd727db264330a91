import type { DeadLetters, OutboxStats } from '../../core/dead-letters.ts'
import { describe, invalidArgument } from '../../core/errors.ts'
import { type Logger, type LoggerOption, resolveLogger } from '../../core/logger.ts'
import { Outbox, type OutboxOptions, type TopicMap, type TopicProducers } from '../../core/outbox.ts'
import { type OutboxRelay, RELAY_DEFAULTS, type RelayOptions } from '../../core/relay.ts'
import type { RelayStore, TransactionAdapter } from '../../core/seams.ts'
import { checkKafkaSetting, type KafkaSetting, LazyTransport } from '../../transports/kafka/index.ts'
import {
  type EnsureTopicsReport,
  ensureOutboxTopics,
  type OutboxEnsureTopicsOptions,
} from '../../transports/kafka/topics.ts'
import { endpointOf } from '../endpoint.ts'
import { LocalRelays } from '../local-relays.ts'
import { explainingDeadLetters, explainMissingTable } from '../not-migrated.ts'
import { checkOptionsObject } from '../outbox-options.ts'
import { checkedClaimTimeout } from '../relay-options.ts'
import { postgresDeadLetters, postgresStats } from './dead-letters.ts'
import { classifyError } from './errors.ts'
import { postgresDialectFor } from './index.ts'
import { type MigrationResult, migrate, migrationScript } from './migrate.ts'
import { qualified } from './names.ts'
import { PostgresRelayStore } from './relay-store.ts'
import type { PgSession } from './session.ts'

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

export interface PostgresOutboxOptions<M extends TopicMap> extends OutboxOptions<M> {
  /** Kafka for the relay and for topics mapped with `outbox: false`. */
  kafka?: KafkaSetting
  /**
   * Wake listening relays with a NOTIFY at commit (default true). At most one transaction per
   * 20 ms of this outbox object queues one: PostgreSQL serialises the commits of all transactions
   * that notify, so a NOTIFY in every transaction halved what 8 concurrent writers could commit.
   * A woken relay keeps polling every 5 ms for a while, which finds the transactions that
   * committed without one. Turn off behind transaction-mode poolers, where LISTEN cannot work.
   */
  notify?: boolean
  /**
   * Where relays of this outbox log (see `RelayOptions.logger`): a pino/bunyan-like logger, or
   * `false` for none. Default: warnings and errors on stderr, one line each.
   */
  logger?: LoggerOption
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
   */
  listen?: boolean
}

/**
 * The outbox on PostgreSQL, whatever the driver: typed producers bound to the app's
 * transaction, migrations, and relays. Adapters subclass it with their driver.
 */
export class PostgresOutbox<M extends TopicMap, Tx, Target> {
  readonly outbox: Outbox<M>
  readonly #driver: PostgresDriver<Tx, Target>
  readonly #kafka: KafkaSetting | undefined
  readonly #direct: LazyTransport
  /** Relays of this process, woken right after a transaction helper commits. */
  readonly #localRelays = new LocalRelays()
  /** The `logger` option; undefined leaves each relay its default. */
  readonly #logger: Logger | undefined

  constructor(options: PostgresOutboxOptions<M>, driver: PostgresDriver<Tx, Target>) {
    checkOptionsObject(options)
    if (options.notify !== undefined && typeof options.notify !== 'boolean') {
      throw invalidArgument(`'notify' must be true or false, got ${describe(options.notify)}`)
    }
    this.outbox = new Outbox(
      options,
      postgresDialectFor(options.notify !== false, driver.notifyEveryCommit === true),
    )
    this.#driver = driver
    this.#kafka = checkKafkaSetting(options.kafka)
    this.#logger = options.logger === undefined ? undefined : resolveLogger(options.logger, 'outbox options')
    this.#direct = new LazyTransport(options.kafka, 'a topic mapped with outbox: false')
  }

  /** Typed producers bound to the app's open transaction. */
  in(tx: Tx): TopicProducers<M> {
    return this.outbox.producers(this.#driver.transaction(tx), () => this.#direct.get())
  }

  /** Typed producers that write through `adapter` (for adapters that hold writes back). */
  protected producersOn(adapter: TransactionAdapter): TopicProducers<M> {
    return this.outbox.producers(adapter, () => this.#direct.get())
  }

  /** Creates or upgrades the outbox schema; safe to run from several instances at once. */
  async migrate(target?: Target): Promise<MigrationResult> {
    const session = await this.#driver.openSession(target, 'k-entity-migrate')
    try {
      return await migrate(session, this.outbox.table)
    } finally {
      await session.end()
    }
  }

  /** The schema as a SQL script, for applying with your own migration tool. */
  migrationSql(): string {
    return migrationScript(this.outbox.table)
  }

  /** A relay worker for this outbox; call `start()` on it (or `runOnce()` in tests). */
  relay(options: PostgresRelayOptions<Target> = {}): OutboxRelay {
    const claimTimeout = checkedClaimTimeout(options)
    if (options.listen !== undefined && typeof options.listen !== 'boolean') {
      throw invalidArgument(`relay option 'listen' must be true or false, got ${describe(options.listen)}`)
    }
    const idle = Math.max(
      options.pollingInterval ?? RELAY_DEFAULTS.pollingInterval,
      options.leaderCheckInterval ?? RELAY_DEFAULTS.leaderCheckInterval,
    )
    const store = new PostgresRelayStore({
      table: this.outbox.table,
      connect: () => this.#driver.openSession(options.connection, 'k-entity-relay'),
      claimTimeout,
      // Long enough that a healthy relay (which speaks at least once per interval) never hits it.
      sessionIdleTimeout: options.mode !== 'concurrent' ? Math.max(10_000, idle * 5) : 0,
      concurrent: options.mode === 'concurrent',
      listen: options.listen ?? true,
      // 'single' (the default) leads through the same lock as 'exclusive' (see RelayOptions.mode).
      exclusive: options.mode !== 'concurrent',
    })
    return this.relayOn(store, options, endpointOf(options.connection, 5432))
  }

  /**
   * A relay of this outbox on the given store (for adapters whose database needs its own store);
   * `database` names it in log lines (`host:port`, no credentials).
   */
  protected relayOn(
    store: RelayStore,
    options: RelayOptions & { kafka?: KafkaSetting },
    database?: string,
  ): OutboxRelay {
    return this.#localRelays.create(this.outbox, store, this.#kafka, options, {
      logger: this.#logger,
      database,
    })
  }

  /**
   * Creates this outbox's missing topics with their declared partitions, replication factor and
   * configs, and reports how existing ones differ from their declarations (never altering them).
   */
  ensureTopics(options?: OutboxEnsureTopicsOptions): Promise<EnsureTopicsReport> {
    return ensureOutboxTopics(this.outbox.topics, this.#kafka, options)
  }

  /** Inspect, replay and purge dead letters (each call uses its own short session). */
  deadLetters(connection?: Target): DeadLetters {
    return explainingDeadLetters(
      postgresDeadLetters(this.outbox.table, () => this.#driver.openSession(connection, 'k-entity-admin')),
      (error) => this.#explain(error),
    )
  }

  /** Pending, retrying and dead messages and the age of the oldest pending one (the lag). */
  stats(connection?: Target): Promise<OutboxStats> {
    return postgresStats(this.outbox.table, () =>
      this.#driver.openSession(connection, 'k-entity-admin'),
    ).catch((error: unknown) => {
      throw this.#explain(error)
    })
  }

  /** A driver's "relation does not exist" as `KE_NOT_MIGRATED`, saying what to run. */
  #explain(error: unknown): unknown {
    return explainMissingTable(error, classifyError, qualified(this.outbox.table))
  }

  /** Tells this process's relays that new messages were committed (adapters call it after COMMIT). */
  notifyCommitted(): void {
    this.#localRelays.wakeAll()
  }

  /** Closes the Kafka producer used for `outbox: false` topics. */
  async close(): Promise<void> {
    await this.#direct.close()
  }
}
