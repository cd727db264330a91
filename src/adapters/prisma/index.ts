import pg from 'pg'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import type { PgSession } from '../../dialects/postgres/index.ts'
import {
  type PostgresDriver,
  PostgresOutbox,
  type PostgresOutboxOptions,
  type PostgresRelayOptions,
} from '../../dialects/postgres/postgres-outbox.ts'

/**
 * The client Prisma passes to `prisma.$transaction(async (tx) => ...)` (`Prisma.TransactionClient`).
 * Prisma strips `$connect` and `$disconnect` from it, which is how the root `PrismaClient`, whose
 * raw queries each run in a transaction of their own, is kept out at compile time.
 */
export interface PrismaTransactionClient {
  // biome-ignore lint/suspicious/noExplicitAny: mirrors Prisma's own signature, whose values are untyped
  $executeRawUnsafe(query: string, ...values: any[]): PromiseLike<number>
  $connect?: never
  $disconnect?: never
}

export interface PrismaTransactionOptions {
  maxWait?: number
  timeout?: number
  isolationLevel?: 'ReadUncommitted' | 'ReadCommitted' | 'RepeatableRead' | 'Serializable'
}

/** A `PrismaClient` (or an interactive-transaction client, for a nested transaction). */
export interface PrismaClientWithTransactions<Tx> {
  $transaction<R>(fn: (tx: Tx) => Promise<R>, options?: PrismaTransactionOptions): PromiseLike<R>
}

/**
 * Where the relay and `migrate()` connect: the connection string (or `pg` config) your `PrismaPg`
 * adapter uses. Prisma does not expose it, so it has to be passed. Defaults to `DATABASE_URL`.
 */
export type PrismaConnection = string | pg.ClientConfig

/** Wraps the client of an interactive transaction; only PostgreSQL through a driver adapter (`@prisma/adapter-pg`). */
export function prismaTransaction(tx: PrismaTransactionClient): TransactionAdapter {
  if (typeof tx !== 'object' || tx === null || typeof tx.$executeRawUnsafe !== 'function') {
    throw invalidArgument(
      `expected the client of a Prisma interactive transaction (prisma.$transaction(async (tx) => ...)), got ${describe(tx)}`,
    )
  }
  // Internal but stable since Prisma 2; only consulted when present, to name a wrong database early.
  const provider = (tx as { _activeProvider?: unknown })._activeProvider
  if (typeof provider === 'string' && provider !== 'postgresql' && provider !== 'postgres') {
    throw invalidArgument(
      `k-entity/prisma needs a PostgreSQL Prisma client, this one is for '${provider}'; use the adapter of that database`,
    )
  }
  return {
    dialect: 'postgres',
    assertInTransaction() {
      if (typeof (tx as { $connect?: unknown }).$connect === 'function') {
        throw new KEntityError(
          ErrorCodes.NO_TRANSACTION,
          'outbox topics must be produced inside a transaction: this is the root PrismaClient, whose queries each commit on their own; use the tx of prisma.$transaction(async (tx) => ...) (or outbox.transaction(prisma, fn)); nothing was stored',
        )
      }
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

/** Prisma's error for a query on an interactive transaction that was committed, rolled back or timed out. */
const TRANSACTION_CLOSED = 'P2028'
const IN_FAILED_TRANSACTION = '25P02'

function translate(error: unknown): unknown {
  const failed = error as {
    code?: unknown
    meta?: { driverAdapterError?: { cause?: { originalCode?: unknown } } }
  }
  if (failed.code === TRANSACTION_CLOSED) {
    return new KEntityError(
      ErrorCodes.NO_TRANSACTION,
      'the interactive transaction is already closed (committed, rolled back or past its timeout); produce inside the $transaction callback, before it returns; nothing was stored',
      { cause: error },
    )
  }
  if (failed.meta?.driverAdapterError?.cause?.originalCode === IN_FAILED_TRANSACTION) {
    return new KEntityError(
      ErrorCodes.TRANSACTION_ABORTED,
      'the transaction already failed (PostgreSQL ignores further commands until ROLLBACK); nothing was stored',
      { cause: error },
    )
  }
  return error
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
    // Prisma's client is a proxy that answers `in` with false: ask for the method itself.
    if (
      typeof resolved === 'object' &&
      typeof (resolved as { $transaction?: unknown }).$transaction === 'function'
    ) {
      throw invalidArgument(
        'Prisma does not reveal its connection settings: pass the connection string your PrismaPg adapter uses, e.g. outbox.relay({ connection: process.env.DATABASE_URL })',
      )
    }
    const config = typeof resolved === 'string' ? { connectionString: resolved } : resolved
    const client = new pg.Client({ ...config, application_name: applicationName })
    // Without a listener, a server-side disconnect of an idle session would crash the process.
    client.on('error', () => {})
    await client.connect()
    return client as unknown as PgSession
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
    if (typeof prisma !== 'object' || prisma === null || typeof prisma.$transaction !== 'function') {
      throw invalidArgument(`transaction() needs a PrismaClient, got ${describe(prisma)}`)
    }
    if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a function, got ${describe(fn)}`)
    const result = await prisma.$transaction((tx) => fn(tx, this.in(tx)), options)
    this.notifyCommitted()
    return result
  }
}

export function createPrismaOutbox<M extends TopicMap>(options: PostgresOutboxOptions<M>): PrismaOutbox<M> {
  return new PrismaOutbox(options)
}

export type { PostgresOutboxOptions as PrismaOutboxOptions, PostgresRelayOptions as PrismaRelayOptions }

function defaultConnection(): string {
  const url = process.env.DATABASE_URL
  if (!url) {
    throw invalidArgument(
      'no database connection given and DATABASE_URL is not set: pass the connection string of your PrismaPg adapter',
    )
  }
  return url
}
