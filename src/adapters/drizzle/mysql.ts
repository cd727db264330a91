// `k-entity/drizzle/mysql`: the Drizzle adapter (./index.ts) fixed to MySQL/MariaDB, kept so
// that code written before the adapter detected its database keeps working.
import type { TablesRelationalConfig } from 'drizzle-orm'
import type {
  MySqlDatabase,
  MySqlQueryResultHKT,
  MySqlTransaction,
  PreparedQueryHKTBase,
} from 'drizzle-orm/mysql-core'
import { internalError } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { TransactionAdapter } from '../../core/seams.ts'
import type { MysqlOutboxOptions, MysqlRelayOptions } from '../../dialects/mysql/mysql-outbox.ts'
import { DataLayerOutbox } from '../data-layer.ts'
import {
  type DrizzleMysqlConnection,
  type DrizzleMysqlTransaction,
  type DrizzleTransaction,
  drizzleLayer,
  drizzleTransaction,
} from './index.ts'

export type { DrizzleMysqlConnection, DrizzleMysqlTransaction }

/** Wraps a Drizzle transaction on MySQL or MariaDB (drizzle-orm/mysql2), checked before each write. */
export function drizzleMysqlTransaction(tx: DrizzleMysqlTransaction): TransactionAdapter {
  // MySQL statements never need the table: only PostgreSQL's probe does.
  return drizzleTransaction(tx, 'mysql', () => {
    throw internalError('unreachable: the MySQL binding reads no table')
  })
}

/** The Drizzle adapter on MySQL 8 / MariaDB 10.6+ (`drizzle-orm/mysql2`). */
export class DrizzleMysqlOutbox<M extends TopicMap> extends DataLayerOutbox<
  M,
  DrizzleTransaction | DrizzleMysqlTransaction,
  DrizzleMysqlConnection
> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, drizzleLayer, 'mysql')
  }

  /**
   * Runs `fn` in `db.transaction()`: COMMIT if it resolves, ROLLBACK if it throws.
   * After the commit, relays of this process are woken at once.
   */
  transaction<
    Q extends MySqlQueryResultHKT,
    P extends PreparedQueryHKTBase,
    F extends Record<string, unknown>,
    S extends TablesRelationalConfig,
    R,
  >(
    db: MySqlDatabase<Q, P, F, S>,
    fn: (tx: MySqlTransaction<Q, P, F, S>, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    return this.runTransaction(db, fn, () => db.transaction((tx) => fn(tx, this.in(tx))))
  }
}

export function createDrizzleMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): DrizzleMysqlOutbox<M> {
  return new DrizzleMysqlOutbox(options)
}

export type DrizzleMysqlOutboxOptions<M extends TopicMap> = MysqlOutboxOptions<M>
export type DrizzleMysqlRelayOptions = MysqlRelayOptions<DrizzleMysqlConnection>
