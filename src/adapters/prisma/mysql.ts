import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap, TopicProducers } from '../../core/outbox.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import {
  type MysqlDriver,
  MysqlOutbox,
  type MysqlOutboxOptions,
  type MysqlRelayOptions,
} from '../../dialects/mysql/mysql-outbox.ts'
import { assertInTransactionBySavepoint } from '../../dialects/mysql/savepoint-probe.ts'
import { type MariadbConnection, openMariadbSession } from './mariadb-session.ts'
import {
  assertTransactionClient,
  clientProvider,
  closedTransaction,
  driverAdapterCause,
  type PrismaClientWithTransactions,
  type PrismaTransactionClient,
  type PrismaTransactionOptions,
  runPrismaTransaction,
} from './transaction-client.ts'

export type { PrismaClientWithTransactions, PrismaTransactionClient, PrismaTransactionOptions }

/**
 * Where the relay and `migrate()` connect: the URL (`mysql://` or `mariadb://`) or `mariadb`
 * options your `PrismaMariaDb` adapter uses. Prisma does not expose them, so they have to be
 * passed. Defaults to `DATABASE_URL`.
 */
export type PrismaMysqlConnection = MariadbConnection

const HINT = 'use the tx of prisma.$transaction(async (tx) => ...) (or outbox.transaction(prisma, fn))'

/** ER_UNSUPPORTED_PS: MySQL, unlike MariaDB, cannot prepare SAVEPOINT. */
const UNSUPPORTED_PREPARED_STATEMENT = 1295

/**
 * Query engines (one per PrismaClient) whose server refused the savepoint probe: asked once, not
 * at every produce(). Keyed by an internal field, only when present.
 */
const withoutServerCheck = new WeakSet<object>()

/**
 * Wraps the client of an interactive transaction on MySQL or MariaDB (`@prisma/adapter-mariadb`):
 * messages are written with `$executeRawUnsafe` on it, so they commit or roll back with the rows
 * written through it.
 *
 * Before writing, the client must be a transaction client (the root client's raw queries each
 * commit on their own), and the server must report a transaction open (the savepoint probe;
 * Prisma's own state misses one the server ended, e.g. a deadlock victim whose later statements
 * all autocommit). The adapter sends statements as prepared statements, which MySQL refuses for
 * SAVEPOINT: there, unless `PrismaMariaDb` uses `{ useTextProtocol: true }`, Prisma's own state
 * is all that is checked.
 */
export function prismaMysqlTransaction(tx: PrismaTransactionClient): TransactionAdapter {
  const provider = clientProvider(tx)
  if (provider !== undefined && provider !== 'mysql') {
    throw invalidArgument(
      `k-entity/prisma/mysql needs a Prisma client generated for provider "mysql", this one is for ${describe(provider)}; ${
        provider === 'postgresql' || provider === 'postgres'
          ? 'use k-entity/prisma (createPrismaOutbox) for PostgreSQL'
          : "k-entity's Prisma adapters cover PostgreSQL (k-entity/prisma) and MySQL/MariaDB (k-entity/prisma/mysql)"
      }`,
    )
  }
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

const prismaMysqlDriver: MysqlDriver<PrismaTransactionClient, PrismaMysqlConnection> = {
  transaction: prismaMysqlTransaction,
  openSession: openMariadbSession,
}

/**
 * The Prisma adapter for MySQL and MariaDB (Prisma 7, provider "mysql", with the
 * `@prisma/adapter-mariadb` driver adapter): messages are written with `$executeRawUnsafe` on the
 * interactive transaction's client; relays and migrations use a `mariadb` connection of their own.
 *
 * @example
 * const outbox = createPrismaMysqlOutbox({ topics: { orderCreated }, schema: 'shop', kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(process.env.DATABASE_URL)
 * await outbox.transaction(prisma, async (tx, topics) => {
 *   await tx.order.create({ data: order })
 *   await topics.orderCreated.produce(order)
 * })
 */
export class PrismaMysqlOutbox<M extends TopicMap> extends MysqlOutbox<
  M,
  PrismaTransactionClient,
  PrismaMysqlConnection
> {
  constructor(options: MysqlOutboxOptions<M>) {
    super(options, prismaMysqlDriver)
  }

  /**
   * Runs `fn` in `prisma.$transaction()` (an interactive transaction): COMMIT if it resolves,
   * ROLLBACK if it throws. Given a transaction client, Prisma 7 makes it a savepoint.
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

export function createPrismaMysqlOutbox<M extends TopicMap>(
  options: MysqlOutboxOptions<M>,
): PrismaMysqlOutbox<M> {
  return new PrismaMysqlOutbox(options)
}

export type { MysqlOutboxOptions as PrismaMysqlOutboxOptions, MysqlRelayOptions as PrismaMysqlRelayOptions }
