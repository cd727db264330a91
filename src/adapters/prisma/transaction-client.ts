/**
 * What the Prisma adapters of every database share: the interactive-transaction client, its
 * checks and errors, and the `transaction()` helper. Imports no driver.
 */
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import { type SqlDatabase, wrongDatabase } from '../data-layer.ts'

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
 * Throws unless `tx` looks like a Prisma client; returns the database provider of its schema
 * when Prisma exposes it (`_activeProvider`: internal but stable since Prisma 2), for the caller
 * to name a wrong database early.
 */
export function clientProvider(tx: unknown): string | undefined {
  if (
    typeof tx !== 'object' ||
    tx === null ||
    typeof (tx as PrismaTransactionClient).$executeRawUnsafe !== 'function'
  ) {
    throw invalidArgument(
      `expected the client of a Prisma interactive transaction (prisma.$transaction(async (tx) => ...)), got ${describe(tx)}`,
    )
  }
  const provider = (tx as { _activeProvider?: unknown })._activeProvider
  return typeof provider === 'string' ? provider : undefined
}

/** The runtime check behind the types: the root client has `$connect`, a transaction client does not. */
export function assertTransactionClient(tx: PrismaTransactionClient): void {
  if (typeof (tx as { $connect?: unknown }).$connect === 'function') {
    throw new KEntityError(
      ErrorCodes.NO_TRANSACTION,
      'outbox topics must be produced inside a transaction: this is the root PrismaClient, whose queries each commit on their own; use the tx of prisma.$transaction(async (tx) => ...) (or outbox.transaction(prisma, fn)); nothing was stored',
    )
  }
}

/** Prisma's error for a query on an interactive transaction that was committed, rolled back or timed out. */
const TRANSACTION_CLOSED = 'P2028'

/** KE_NO_TRANSACTION for Prisma's "transaction already closed", undefined for any other error. */
export function closedTransaction(error: unknown): KEntityError | undefined {
  if ((error as { code?: unknown } | null)?.code !== TRANSACTION_CLOSED) return undefined
  return new KEntityError(
    ErrorCodes.NO_TRANSACTION,
    'the interactive transaction is already closed (committed, rolled back or past its timeout); produce inside the $transaction callback, before it returns; nothing was stored',
    { cause: error },
  )
}

/** The driver adapter's error behind a Prisma error (`meta.driverAdapterError.cause`), if any. */
export function driverAdapterCause(error: unknown): Record<string, unknown> | undefined {
  const cause = (error as { meta?: { driverAdapterError?: { cause?: unknown } } } | null)?.meta
    ?.driverAdapterError?.cause
  return typeof cause === 'object' && cause !== null ? (cause as Record<string, unknown>) : undefined
}

/**
 * The body of every Prisma adapter's `transaction()` helper: `fn` in `prisma.$transaction()` (an
 * interactive transaction), COMMIT if it resolves, ROLLBACK if it throws. Given a transaction
 * client, Prisma makes it a savepoint.
 */
export async function runPrismaTransaction<Tx extends PrismaTransactionClient, P, R>(
  prisma: PrismaClientWithTransactions<Tx>,
  fn: (tx: Tx, topics: P) => Promise<R>,
  options: PrismaTransactionOptions | undefined,
  producers: (tx: Tx) => P,
): Promise<R> {
  if (typeof prisma !== 'object' || prisma === null || typeof prisma.$transaction !== 'function') {
    throw invalidArgument(`transaction() needs a PrismaClient, got ${describe(prisma)}`)
  }
  if (typeof fn !== 'function') throw invalidArgument(`transaction() needs a function, got ${describe(fn)}`)
  return prisma.$transaction((tx) => fn(tx, producers(tx)), options)
}

/** Prisma's client is a proxy that answers `in` with false: ask for the method itself. */
export function isPrismaClient(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { $transaction?: unknown }).$transaction === 'function'
  )
}

/** The database of a Prisma provider name ('postgresql' or 'mysql'); undefined for another one. */
export function providerDatabase(provider: string | undefined): SqlDatabase | undefined {
  if (provider === 'postgresql' || provider === 'postgres') return 'postgres'
  if (provider === 'mysql') return 'mysql'
  return undefined
}

/**
 * Refuses a client of another database than the outbox's, saying what to use. Prisma tells the
 * provider its client was generated for (`_activeProvider`); a client that does not is refused
 * too, since nothing else tells its database apart (the driver adapter is private).
 */
export function assertPrismaDatabase(client: unknown, expected: SqlDatabase): void {
  const provider = clientProvider(client)
  const found = providerDatabase(provider)
  if (found === expected) return
  const advice =
    provider === undefined
      ? "this client does not tell its provider: use createPrismaOutbox ('k-entity/prisma') without `db` for PostgreSQL, or createPrismaMysqlOutbox ('k-entity/prisma/mysql')"
      : found === undefined
        ? "k-entity's Prisma adapter covers the providers postgresql and mysql"
        : "pass the PrismaClient as `db` to createPrismaOutbox ('k-entity/prisma'), which detects the database"
  throw wrongDatabase(
    expected,
    `the Prisma client is for ${provider === undefined ? 'an unknown provider' : describe(provider)}`,
    advice,
  )
}
