import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { PostgresOutboxOptions, PostgresRelayOptions } from '../../dialects/postgres/postgres-outbox.ts'
import { type DataLayer, DataLayerOutbox, type SqlDatabase } from '../data-layer.ts'
import { prismaTransaction } from './bindings.ts'
import { openPrismaSession, type PrismaConnection, type PrismaMysqlConnection } from './connection.ts'
import {
  assertPrismaDatabase,
  clientProvider,
  isPrismaClient,
  type PrismaClientWithTransactions,
  type PrismaTransactionClient,
  type PrismaTransactionOptions,
  providerDatabase,
  runPrismaTransaction,
} from './transaction-client.ts'

export {
  type PrismaClientWithTransactions,
  type PrismaConnection,
  type PrismaTransactionClient,
  type PrismaTransactionOptions,
  prismaTransaction,
}

export interface PrismaOutboxOptions<M extends TopicMap> extends PostgresOutboxOptions<M> {
  /**
   * The app's PrismaClient: the outbox speaks the database of the provider it was generated for
   * ("postgresql" with `@prisma/adapter-pg`, "mysql" with `@prisma/adapter-mariadb`). Without it
   * the outbox is for PostgreSQL (`createPrismaMysqlOutbox` for MySQL/MariaDB). Reading the
   * provider needs no connection.
   */
  db?: PrismaClientWithTransactions<PrismaTransactionClient>
}

export type PrismaRelayOptions<Target = PrismaConnection> = PostgresRelayOptions<Target>

const prisma: DataLayer<PrismaTransactionClient> = {
  root: 'PrismaClient',
  isHandle: isPrismaClient,
  // transaction() takes a transaction client too: Prisma 7 makes that a savepoint.
  isTransaction: (handle) => typeof (handle as { $connect?: unknown }).$connect !== 'function',
  nests: true,
  databaseOf: (handle) => providerDatabase(clientProvider(handle)),
  assertDatabase: assertPrismaDatabase,
  binding: (tx, database) => prismaTransaction(tx, database),
  openSession: openPrismaSession,
}

/**
 * The Prisma adapter (Prisma 7 with a driver adapter), on PostgreSQL (`@prisma/adapter-pg`) and
 * MySQL 8 / MariaDB 10.6+ (`@prisma/adapter-mariadb`): pass `db` and the outbox speaks its
 * database. Messages are written with `$executeRawUnsafe` on the interactive transaction's
 * client, so they commit or roll back with the rows written through it. Relays and migrations
 * open their own session: Prisma does not reveal its connection settings, so pass `connection`
 * (the URL your driver adapter uses), or set `DATABASE_URL`.
 *
 * @example
 * const outbox = createPrismaOutbox({ db: prisma, topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(process.env.DATABASE_URL)
 * await outbox.transaction(prisma, async (tx, topics) => {
 *   await tx.order.create({ data: order })
 *   await topics.orderCreated.produce(order)
 * })
 */
export class PrismaOutbox<M extends TopicMap, Target = PrismaConnection> extends DataLayerOutbox<
  M,
  PrismaTransactionClient,
  Target
> {
  constructor(options: PrismaOutboxOptions<M>, database?: SqlDatabase) {
    super(options, prisma, database)
  }

  /**
   * Runs `fn` in `prisma.$transaction()` (an interactive transaction): COMMIT if it resolves,
   * ROLLBACK if it throws. Given a transaction client, Prisma makes it a savepoint. After the
   * commit, relays of this process are woken at once.
   */
  transaction<Tx extends PrismaTransactionClient, R>(
    client: PrismaClientWithTransactions<Tx>,
    fn: (tx: Tx, topics: TopicProducers<M>) => Promise<R>,
    options?: PrismaTransactionOptions,
  ): Promise<R> {
    return this.runTransaction(client, fn, () =>
      runPrismaTransaction(client, fn, options, (tx) => this.in(tx)),
    )
  }
}

/** The outbox for `options.db`'s database; without `db`, for PostgreSQL. */
export function createPrismaOutbox<M extends TopicMap>(
  options: PrismaOutboxOptions<M> & { db: PrismaClientWithTransactions<PrismaTransactionClient> },
): PrismaOutbox<M, PrismaConnection | PrismaMysqlConnection>
export function createPrismaOutbox<M extends TopicMap>(options: PrismaOutboxOptions<M>): PrismaOutbox<M>
export function createPrismaOutbox<M extends TopicMap>(options: PrismaOutboxOptions<M>): PrismaOutbox<M> {
  return new PrismaOutbox(options)
}
