import type pg from 'pg'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import {
  type PostgresDriver,
  PostgresOutbox,
  type PostgresOutboxOptions,
  type PostgresRelayOptions,
} from '../../dialects/postgres/postgres-outbox.ts'
import { transactionError } from '../../dialects/postgres/transaction.ts'
import { databaseUrl } from '../../dialects/shared/database-url.ts'
import { openPgSession } from '../pg/session.ts'
import {
  assertTransactionClient,
  clientProvider,
  closedTransaction,
  driverAdapterCause,
  isPrismaClient,
  type PrismaClientWithTransactions,
  type PrismaTransactionClient,
  type PrismaTransactionOptions,
  runPrismaTransaction,
} from './transaction-client.ts'

export type { PrismaClientWithTransactions, PrismaTransactionClient, PrismaTransactionOptions }

/**
 * Where the relay and `migrate()` connect: the connection string (or `pg` config) your `PrismaPg`
 * adapter uses. Prisma does not expose it, so it has to be passed. Defaults to `DATABASE_URL`.
 */
export type PrismaConnection = string | pg.ClientConfig

/** Wraps the client of an interactive transaction; only PostgreSQL through a driver adapter (`@prisma/adapter-pg`). */
export function prismaTransaction(tx: PrismaTransactionClient): TransactionAdapter {
  const provider = clientProvider(tx)
  if (provider !== undefined && provider !== 'postgresql' && provider !== 'postgres') {
    throw invalidArgument(
      `k-entity/prisma needs a PostgreSQL Prisma client, this one is for '${provider}'; ${provider === 'mysql' ? 'use k-entity/prisma/mysql' : 'use the adapter of that database'}`,
    )
  }
  return {
    dialect: 'postgres',
    assertInTransaction() {
      assertTransactionClient(tx)
    },
    async execute(statement: SqlStatement) {
      try {
        await tx.$executeRawUnsafe(statement.text, ...statement.values)
      } catch (error) {
        throw translate(error)
      }
    },
  }
}

function translate(error: unknown): unknown {
  const closed = closedTransaction(error)
  if (closed !== undefined) return closed
  // The driver adapter's error keeps the SQLSTATE as originalCode, out of sqlState's reach.
  return transactionError({ code: driverAdapterCause(error)?.originalCode, cause: error }) ?? error
}

const prismaDriver: PostgresDriver<PrismaTransactionClient, PrismaConnection> = {
  transaction: prismaTransaction,
  async openSession(target, applicationName) {
    const resolved = target ?? defaultConnection()
    if (typeof resolved !== 'string' && (typeof resolved !== 'object' || resolved === null)) {
      throw invalidArgument(
        `expected the connection string (or pg client config) of your PrismaPg adapter, got ${describe(resolved)}`,
      )
    }
    if (isPrismaClient(resolved)) {
      throw invalidArgument(
        'Prisma does not reveal its connection settings: pass the connection string your PrismaPg adapter uses, e.g. outbox.relay({ connection: process.env.DATABASE_URL })',
      )
    }
    return openPgSession(resolved, applicationName)
  },
}

/**
 * The Prisma adapter (Prisma 7 with `@prisma/adapter-pg`): messages are written with
 * `$executeRawUnsafe` on the interactive transaction's client, so they commit or roll back with
 * the rows written through it.
 *
 * @example
 * const outbox = createPrismaOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(process.env.DATABASE_URL)
 * await outbox.transaction(prisma, async (tx, topics) => {
 *   await tx.order.create({ data: order })
 *   await topics.orderCreated.produce(order)
 * })
 */
export class PrismaOutbox<M extends TopicMap> extends PostgresOutbox<
  M,
  PrismaTransactionClient,
  PrismaConnection
> {
  constructor(options: PostgresOutboxOptions<M>) {
    super(options, prismaDriver)
  }

  /**
   * Runs `fn` in `prisma.$transaction()` (an interactive transaction): COMMIT if it resolves,
   * ROLLBACK if it throws. Given a transaction client, Prisma makes it a savepoint.
   */
  async transaction<Tx extends PrismaTransactionClient, R>(
    prisma: PrismaClientWithTransactions<Tx>,
    fn: (tx: Tx, topics: TopicProducers<M>) => Promise<R>,
    options?: PrismaTransactionOptions,
  ): Promise<R> {
    const result = await runPrismaTransaction(prisma, fn, options, (tx) => this.in(tx))
    this.notifyCommitted()
    return result
  }
}

export function createPrismaOutbox<M extends TopicMap>(options: PostgresOutboxOptions<M>): PrismaOutbox<M> {
  return new PrismaOutbox(options)
}

export type { PostgresOutboxOptions as PrismaOutboxOptions, PostgresRelayOptions as PrismaRelayOptions }

function defaultConnection(): string {
  return databaseUrl(': pass the connection string of your PrismaPg adapter')
}
