// `k-entity/prisma/mysql`: the Prisma adapter (./index.ts) fixed to MySQL/MariaDB, kept so that
// code written before the adapter detected its database keeps working.
import type { TopicMap } from '../../core/outbox.ts'
import type { TransactionAdapter } from '../../core/seams.ts'
import type { MysqlOutboxOptions, MysqlRelayOptions } from '../../dialects/mysql/mysql-outbox.ts'
import type { PrismaMysqlConnection } from './connection.ts'
import {
  type PrismaClientWithTransactions,
  PrismaOutbox,
  type PrismaTransactionClient,
  type PrismaTransactionOptions,
  prismaTransaction,
} from './index.ts'

export type {
  PrismaClientWithTransactions,
  PrismaMysqlConnection,
  PrismaTransactionClient,
  PrismaTransactionOptions,
}

/** Wraps the client of an interactive transaction on MySQL or MariaDB (`@prisma/adapter-mariadb`). */
export function prismaMysqlTransaction(tx: PrismaTransactionClient): TransactionAdapter {
  return prismaTransaction(tx, 'mysql')
}

/** The Prisma adapter on MySQL 8 / MariaDB 10.6+ (provider "mysql", `@prisma/adapter-mariadb`). */
export class PrismaMysqlOutbox<M extends TopicMap> extends PrismaOutbox<M, PrismaMysqlConnection> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, 'mysql')
  }
}

export function createPrismaMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): PrismaMysqlOutbox<M> {
  return new PrismaMysqlOutbox(options)
}

export type PrismaMysqlOutboxOptions<M extends TopicMap> = MysqlOutboxOptions<M>
export type PrismaMysqlRelayOptions = MysqlRelayOptions<PrismaMysqlConnection>
