import { describe, invalidArgument, type KEntityError } from '../../core/errors.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { assertInTransactionBySavepoint } from '../../dialects/mysql/savepoint-probe.ts'
import { transactionError } from '../../dialects/postgres/transaction.ts'
import type { SqlDatabase } from '../data-layer.ts'
import {
  assertTransactionClient,
  clientProvider,
  closedTransaction,
  driverAdapterCause,
  type PrismaTransactionClient,
  providerDatabase,
} from './transaction-client.ts'

const HINT = 'use the tx of prisma.$transaction(async (tx) => ...) (or outbox.transaction(prisma, fn))'

/** ER_UNSUPPORTED_PS: MySQL, unlike MariaDB, cannot prepare SAVEPOINT. */
const UNSUPPORTED_PREPARED_STATEMENT = 1295

/**
 * Query engines (one per PrismaClient) whose server refused the savepoint probe: asked once, not
 * at every produce(). Keyed by an internal field, only when present.
 */
const withoutServerCheck = new WeakSet<object>()

/**
 * The Prisma transaction binding on `database`: wraps the client of an interactive transaction
 * (`prisma.$transaction(async (tx) => ...)`); messages are written with `$executeRawUnsafe` on
 * it, so they commit or roll back with the rows written through it. A client whose provider is
 * known must be of that database (`@prisma/adapter-pg` on PostgreSQL, `@prisma/adapter-mariadb`
 * on MySQL/MariaDB).
 */
export function prismaTransaction(
  tx: PrismaTransactionClient,
  database: SqlDatabase = 'postgres',
): TransactionAdapter {
  const provider = clientProvider(tx)
  const found = providerDatabase(provider)
  if (provider !== undefined && found !== database) throw wrongProvider(database, provider, found)
  return database === 'postgres' ? postgresBinding(tx) : mysqlBinding(tx)
}

function postgresBinding(tx: PrismaTransactionClient): TransactionAdapter {
  return {
    dialect: 'postgres',
    assertInTransaction() {
      assertTransactionClient(tx)
    },
    async execute(statement: SqlStatement) {
      try {
        await tx.$executeRawUnsafe(statement.text, ...statement.values)
      } catch (error) {
        const closed = closedTransaction(error)
        if (closed !== undefined) throw closed
        // The driver adapter's error keeps the SQLSTATE as originalCode, out of sqlState's reach.
        throw transactionError({ code: driverAdapterCause(error)?.originalCode, cause: error }) ?? error
      }
    },
  }
}

/**
 * MySQL/MariaDB: the client must be a transaction client (the root client's raw queries each
 * commit on their own), and the server must report a transaction open (the savepoint probe;
 * Prisma's own state misses one the server ended, e.g. a deadlock victim whose later statements
 * all autocommit). The adapter sends statements as prepared statements, which MySQL refuses for
 * SAVEPOINT: there, unless `PrismaMariaDb` uses `{ useTextProtocol: true }`, Prisma's own state
 * is all that is checked.
 */
function mysqlBinding(tx: PrismaTransactionClient): TransactionAdapter {
  const engine = (tx as { _engine?: unknown })._engine
  return {
    dialect: 'mysql',
    async assertInTransaction() {
      assertTransactionClient(tx)
      if (typeof engine === 'object' && engine !== null && withoutServerCheck.has(engine)) return
      try {
        await assertInTransactionBySavepoint(
          tx,
          (sql) => Promise.resolve(tx.$executeRawUnsafe(sql)),
          errno,
          HINT,
        )
      } catch (error) {
        const closed = closedTransaction(error)
        if (closed !== undefined) throw closed
        if (errno(error) !== UNSUPPORTED_PREPARED_STATEMENT) throw error
        if (typeof engine === 'object' && engine !== null) withoutServerCheck.add(engine)
      }
    },
    async execute(statement: SqlStatement) {
      try {
        await tx.$executeRawUnsafe(statement.text, ...statement.values)
      } catch (error) {
        throw closedTransaction(error) ?? error
      }
    },
  }
}

/** The server's error number behind a Prisma error (`originalCode` is a string of it). */
function errno(error: unknown): number | undefined {
  const code = Number(driverAdapterCause(error)?.originalCode)
  return Number.isInteger(code) ? code : undefined
}

function wrongProvider(
  expected: SqlDatabase,
  provider: string,
  found: SqlDatabase | undefined,
): KEntityError {
  const wanted =
    expected === 'postgres' ? 'a PostgreSQL Prisma client' : 'a Prisma client generated for provider "mysql"'
  const advice =
    found === undefined
      ? "k-entity's Prisma adapter covers the providers postgresql and mysql"
      : found === 'postgres'
        ? 'use k-entity/prisma (createPrismaOutbox) for PostgreSQL'
        : 'pass the PrismaClient as `db` to createPrismaOutbox, which then speaks MySQL, or use k-entity/prisma/mysql'
  return invalidArgument(`this outbox needs ${wanted}, this one is for ${describe(provider)}; ${advice}`)
}
