import type { TopicMap } from '../../core/outbox.ts'
import type { RelayOptions } from '../../core/relay.ts'
import type { TransactionAdapter } from '../../core/seams.ts'
import type { SqlOutboxOptions } from '../../outbox/parts.ts'
import { SqlOutbox } from '../../outbox/sql-outbox.ts'
import type { KafkaSetting } from '../../transports/kafka/index.ts'
import type { MysqlSession, MysqlSessionPurpose } from './session.ts'
import { mysqlSql } from './sql-dialect.ts'

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

export type MysqlOutboxOptions<M extends TopicMap> = SqlOutboxOptions<M>

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
 * The outbox on MySQL or MariaDB, whatever the driver: the SQL outbox with the MySQL dialect,
 * the driver's transaction binding and its connections.
 */
export class MysqlOutbox<M extends TopicMap, Tx, Target> extends SqlOutbox<
  M,
  Tx,
  Target,
  Promise<MysqlSession>,
  MysqlRelayOptions<Target>
> {
  constructor(options: MysqlOutboxOptions<M>, driver: MysqlDriver<Tx, Target>) {
    super(options, {
      dialect: mysqlSql,
      binding: (tx) => driver.transaction(tx),
      sessions: (target, purpose) => () => driver.openSession(target, purpose),
    })
  }
}
