import type { DeadLetters, OutboxStats } from '../../core/dead-letters.ts'
import { type Logger, type LoggerOption, resolveLogger } from '../../core/logger.ts'
import { Outbox, type OutboxOptions, type TopicMap, type TopicProducers } from '../../core/outbox.ts'
import { type OutboxRelay, RELAY_DEFAULTS, type RelayOptions } from '../../core/relay.ts'
import type { TransactionAdapter } from '../../core/seams.ts'
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
import { mysqlDeadLetters, mysqlStats } from './dead-letters.ts'
import { classifyError } from './errors.ts'
import { mysqlDialect } from './index.ts'
import { type MigrationResult, migrate, migrationScript } from './migrate.ts'
import { qualified } from './names.ts'
import { MysqlRelayStore } from './relay-store.ts'
import { type MysqlSession, type MysqlSessionPurpose, relaySilence } from './session.ts'

/**
 * What a MySQL adapter supplies: how to use the app's transaction handle, and how to open a
 * dedicated connection for the relay and for migrations.
 */
export interface MysqlDriver<Tx, Target> {
  /** Wraps the app's transaction handle; throws a clear error for anything else. */
  transaction(tx: Tx): TransactionAdapter
  /** Opens a new connection that the caller owns (and ends). */
  openSession(target: Target | undefined, purpose: MysqlSessionPurpose): Promise<MysqlSession>
}

export interface MysqlOutboxOptions<M extends TopicMap> extends OutboxOptions<M> {
  /** Kafka for the relay and for topics mapped with `outbox: false`. */
  kafka?: KafkaSetting
  /**
   * Where relays of this outbox log (see `RelayOptions.logger`): a pino/bunyan-like logger, or
   * `false` for none. Default: warnings and errors on stderr, one line each.
   */
  logger?: LoggerOption
}

export interface MysqlRelayOptions<Target> extends RelayOptions {
  /** Where the relay's connection goes (adapter-specific; defaults to `DATABASE_URL`). */
  connection?: Target
  /** Kafka for this relay; defaults to the outbox's `kafka` option. */
  kafka?: KafkaSetting
  /**
   * Longest the relay's connection may stay silent before the server ends it, in ms (default
   * 60000, at least 1000, whole seconds on the server). It bounds both how long a stalled relay
   * keeps a claimed batch and how long a frozen leader keeps the leader lock: MySQL cannot
   * tell an idle session from one idle inside a transaction. Raised to three polling (or leader
   * check) intervals if those are longer, so a healthy idle relay is never cut off.
   */
  claimTimeout?: number
}

/**
 * The outbox on MySQL or MariaDB, whatever the driver: typed producers bound to the app's
 * transaction, migrations, and relays. Adapters subclass it with their driver.
 */
export class MysqlOutbox<M extends TopicMap, Tx, Target> {
  readonly outbox: Outbox<M>
  readonly #driver: MysqlDriver<Tx, Target>
  readonly #kafka: KafkaSetting | undefined
  readonly #direct: LazyTransport
  /** Relays of this process, woken right after a transaction helper commits. */
  readonly #localRelays = new LocalRelays()
  /** The `logger` option; undefined leaves each relay its default. */
  readonly #logger: Logger | undefined

  constructor(options: MysqlOutboxOptions<M>, driver: MysqlDriver<Tx, Target>) {
    checkOptionsObject(options)
    this.outbox = new Outbox(options, mysqlDialect)
    this.#driver = driver
    this.#kafka = checkKafkaSetting(options.kafka)
    this.#logger = options.logger === undefined ? undefined : resolveLogger(options.logger, 'outbox options')
    this.#direct = new LazyTransport(options.kafka, 'a topic mapped with outbox: false')
  }

  /** Typed producers bound to the app's open transaction. */
  in(tx: Tx): TopicProducers<M> {
    return this.outbox.producers(this.#driver.transaction(tx), () => this.#direct.get())
  }

  /** Creates or upgrades the outbox schema; safe to run from several instances at once. */
  async migrate(target?: Target): Promise<MigrationResult> {
    const session = await this.#driver.openSession(target, 'migrate')
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
  relay(options: MysqlRelayOptions<Target> = {}): OutboxRelay {
    const claimTimeout = checkedClaimTimeout(options)
    const idle = Math.max(
      options.pollingInterval ?? RELAY_DEFAULTS.pollingInterval,
      // Every mode may stand by (see RelayOptions.mode), speaking once per leaderCheckInterval.
      options.leaderCheckInterval ?? RELAY_DEFAULTS.leaderCheckInterval,
    )
    const store = new MysqlRelayStore({
      table: this.outbox.table,
      connect: () => this.#driver.openSession(options.connection, 'relay'),
      sessionTimeout: relaySilence(claimTimeout, idle),
      claimTimeout,
      concurrent: options.mode === 'concurrent',
    })
    return this.#localRelays.create(this.outbox, store, this.#kafka, options, {
      logger: this.#logger,
      database: endpointOf(options.connection, 3306),
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
      mysqlDeadLetters(this.outbox.table, () => this.#driver.openSession(connection, 'admin')),
      (error) => this.#explain(error),
    )
  }

  /** Pending, retrying and dead messages and the age of the oldest pending one (the lag). */
  stats(connection?: Target): Promise<OutboxStats> {
    return mysqlStats(this.outbox.table, () => this.#driver.openSession(connection, 'admin')).catch(
      (error: unknown) => {
        throw this.#explain(error)
      },
    )
  }

  /** A driver's "table doesn't exist" as `KE_NOT_MIGRATED`, saying what to run. */
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
