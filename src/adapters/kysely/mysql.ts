// `k-entity/kysely/mysql`: the Kysely adapter (./index.ts) fixed to MySQL/MariaDB, kept so that
// code written before the adapter detected its database keeps working.
import type { TopicMap } from '../../core/outbox.ts'
import type { TransactionAdapter } from '../../core/seams.ts'
import type { MysqlOutboxOptions, MysqlRelayOptions } from '../../dialects/mysql/mysql-outbox.ts'
import type { Mysql2Connection } from '../mysql2/session.ts'
import { KyselyOutbox, type KyselyTransaction, kyselyTransaction } from './index.ts'

/** What `in()` accepts: a Kysely transaction on `MysqlDialect` (see `KyselyTransaction`). */
export type KyselyMysqlTransaction = KyselyTransaction

/** Where relays, migrations and admin calls connect: a `mysql://` URL or mysql2 connection options. */
export type KyselyMysqlConnection = Mysql2Connection

/** Wraps a Kysely transaction on MySQL or MariaDB (`MysqlDialect`), checked to be a live transaction. */
export function kyselyMysqlTransaction(trx: KyselyMysqlTransaction): TransactionAdapter {
  return kyselyTransaction(trx, 'mysql')
}

/** The Kysely adapter on MySQL 8 / MariaDB 10.6+ (`MysqlDialect` on a mysql2 pool). */
export class KyselyMysqlOutbox<M extends TopicMap> extends KyselyOutbox<M, KyselyMysqlConnection> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, 'mysql')
  }
}

export function createKyselyMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): KyselyMysqlOutbox<M> {
  return new KyselyMysqlOutbox(options)
}

export type KyselyMysqlOutboxOptions<M extends TopicMap> = MysqlOutboxOptions<M>
export type KyselyMysqlRelayOptions = MysqlRelayOptions<KyselyMysqlConnection>
