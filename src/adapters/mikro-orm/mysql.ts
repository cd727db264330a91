// `k-entity/mikro-orm/mysql`: the MikroORM adapter (./index.ts) fixed to MySQL/MariaDB, kept so
// that code written before the adapter detected its database keeps working.
import type { SqlEntityManager } from '@mikro-orm/mysql'
import type { TopicMap } from '../../core/outbox.ts'
import type { TransactionAdapter } from '../../core/seams.ts'
import type { MysqlOutboxOptions, MysqlRelayOptions } from '../../dialects/mysql/mysql-outbox.ts'
import type { MikroOrmMysqlConnection } from './connection.ts'
import { MikroOrmOutbox, mikroOrmTransaction } from './index.ts'

export type { MikroOrmMysqlConnection }

/**
 * The EntityManager of MikroORM's MySQL driver (`@mikro-orm/mysql`) or of its MariaDB driver
 * (`@mikro-orm/mariadb`, built on it); other drivers are refused at runtime.
 */
export type MikroOrmMysqlEntityManager = SqlEntityManager

/** Wraps the EntityManager of `em.transactional(async (em) => ...)` on MySQL or MariaDB. */
export function mikroOrmMysqlTransaction(em: SqlEntityManager): TransactionAdapter {
  return mikroOrmTransaction(em, 'mysql')
}

/** The MikroORM adapter on MySQL 8 / MariaDB 10.6+ (`@mikro-orm/mysql`, or `@mikro-orm/mariadb`). */
export class MikroOrmMysqlOutbox<M extends TopicMap> extends MikroOrmOutbox<M, MikroOrmMysqlConnection> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, 'mysql')
  }
}

export function createMikroOrmMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): MikroOrmMysqlOutbox<M> {
  return new MikroOrmMysqlOutbox(options)
}

export type MikroOrmMysqlOutboxOptions<M extends TopicMap> = MysqlOutboxOptions<M>
export type MikroOrmMysqlRelayOptions = MysqlRelayOptions<MikroOrmMysqlConnection>
