// `k-entity/knex/mysql`: the Knex adapter (./index.ts) fixed to MySQL/MariaDB, kept so that
// code written before the adapter detected its database keeps working.
import type { Knex } from 'knex'
import type { TopicMap } from '../../core/outbox.ts'
import type { TransactionAdapter } from '../../core/seams.ts'
import type { MysqlOutboxOptions, MysqlRelayOptions } from '../../dialects/mysql/mysql-outbox.ts'
import type { Mysql2Connection } from '../mysql2/session.ts'
import { KnexOutbox, type KnexTransaction, knexTransaction } from './index.ts'

/** What `in()` accepts: a Knex transaction on the `mysql2` client (see `KnexTransaction`). */
export type KnexMysqlTransaction = KnexTransaction

/**
 * Where relays, migrations and admin calls connect: the app's `knex` instance (its connection
 * settings open a new, dedicated connection), a `mysql://` URL, or mysql2 connection options.
 */
export type KnexMysqlConnection = Knex | Mysql2Connection

/** Wraps a Knex transaction on MySQL or MariaDB, checked to be a live transaction. */
export function knexMysqlTransaction(trx: KnexMysqlTransaction): TransactionAdapter {
  return knexTransaction(trx, 'mysql')
}

/** The Knex adapter on MySQL 8 / MariaDB 10.6+ (client `mysql2`). */
export class KnexMysqlOutbox<M extends TopicMap> extends KnexOutbox<M, KnexMysqlConnection> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, 'mysql')
  }
}

export function createKnexMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): KnexMysqlOutbox<M> {
  return new KnexMysqlOutbox(options)
}

export type KnexMysqlOutboxOptions<M extends TopicMap> = MysqlOutboxOptions<M>
export type KnexMysqlRelayOptions = MysqlRelayOptions<KnexMysqlConnection>
