// `k-entity/typeorm/mysql`: the TypeORM adapter (./index.ts) fixed to MySQL/MariaDB, kept so that
// code written before the adapter detected its database keeps working.
import type { EntityManager } from 'typeorm'
import type { TopicMap } from '../../core/outbox.ts'
import type { TransactionAdapter } from '../../core/seams.ts'
import type { MysqlOutboxOptions, MysqlRelayOptions } from '../../dialects/mysql/mysql-outbox.ts'
import type { TypeOrmMysqlConnection } from './connection.ts'
import { type TypeOrmIsolationLevel, TypeOrmOutbox, typeOrmTransaction } from './index.ts'

export type { TypeOrmIsolationLevel, TypeOrmMysqlConnection }

/** Wraps the EntityManager of a transaction on a DataSource of type 'mysql' or 'mariadb'. */
export function typeOrmMysqlTransaction(manager: EntityManager): TransactionAdapter {
  return typeOrmTransaction(manager, 'mysql')
}

/** The TypeORM adapter on MySQL 8 / MariaDB 10.6+ (DataSource type 'mysql' or 'mariadb', mysql2 driver). */
export class TypeOrmMysqlOutbox<M extends TopicMap> extends TypeOrmOutbox<M, TypeOrmMysqlConnection> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, 'mysql')
  }
}

export function createTypeOrmMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): TypeOrmMysqlOutbox<M> {
  return new TypeOrmMysqlOutbox(options)
}

export type TypeOrmMysqlOutboxOptions<M extends TopicMap> = MysqlOutboxOptions<M>
export type TypeOrmMysqlRelayOptions = MysqlRelayOptions<TypeOrmMysqlConnection>
