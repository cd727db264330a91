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

/** What `in()` accepts: a connected `pg.Client` or a `PoolClient` on which BEGIN was run. */
export type PgTransactionClient = Pick<pg.ClientBase, 'query'> & {
  getTransactionStatus?: () => string | null
}

/** Wraps the app's node-postgres client, checked to be inside a transaction. */
export function pgTransaction(client: PgTransactionClient): TransactionAdapter {
  if (typeof client !== 'object' || client === null || typeof client.query !== 'function') {
    throw invalidArgument(
      `expected a node-postgres Client or PoolClient inside a transaction, got ${describe(client)}`,
    )
  }
  if (client instanceof pg.Pool) {
    throw invalidArgument(
      'got a pg.Pool: a pool has no transaction of its own. Check out a client (const client = await pool.connect()), run BEGIN on it, and pass that client',
    )
  }
  if (typeof client.getTransactionStatus !== 'function') {
    throw invalidArgument(
      'this node-postgres version cannot report transaction state; upgrade pg to 8.21 or newer',
    )
  }
  return {
    dialect: 'postgres',
    assertInTransaction() {
      const status = client.getTransactionStatus?.()
      if (status === 'T') return
      if (status === 'E') throw abortedTransaction()
      throw new KEntityError(
        ErrorCodes.NO_TRANSACTION,
        'outbox topics must be produced inside a transaction: run BEGIN on this client first (or use outbox.transaction(pool, fn)); nothing was stored',
      )
    },
    async execute(statement: SqlStatement) {
      try {
        await client.query(statement.name ? statement : { text: statement.text, values: statement.values })
      } catch (error) {
        // The driver rejects a failed query before it reads the server's new transaction state,
        // so an aborted transaction can still look open to assertInTransaction().
        if ((error as { code?: string }).code === IN_FAILED_TRANSACTION) throw abortedTransaction(error)
        throw error
      }
    },
  }
}

const IN_FAILED_TRANSACTION = '25P02'

function abortedTransaction(cause?: unknown): KEntityError {
  return new KEntityError(
    ErrorCodes.TRANSACTION_ABORTED,
    'the transaction already failed (PostgreSQL ignores further commands until ROLLBACK); nothing was stored',
    { cause },
  )
}

export type PgConnection = string | pg.ClientConfig | pg.Pool | PgTransactionClient

const pgDriver: PostgresDriver<PgTransactionClient, PgConnection> = {
  transaction: pgTransaction,
  async openSession(target, applicationName) {
    const resolved = target ?? defaultConnection()
    if (resolved instanceof pg.Pool) {
      // A pool would spread the relay's claim, leader lock and LISTEN over several connections:
      // open a dedicated client with the pool's settings instead.
      return (await openClient(resolved.options as pg.ClientConfig, applicationName)) as unknown as PgSession
    }
    if (typeof resolved === 'object' && resolved !== null && 'query' in resolved) {
      // The caller's own client (e.g. for migrate(client)): use it, but never end it.
      const client = resolved as unknown as PgSession
      return {
        query: ((...args: Parameters<PgSession['query']>) => client.query(...args)) as PgSession['query'],
        on: () => client,
        end: async () => {},
      }
    }
    if (typeof resolved !== 'string' && (typeof resolved !== 'object' || resolved === null)) {
      throw invalidArgument(
        `expected a connection string, pg client config or pg client, got ${describe(resolved)}`,
      )
    }
    return (await openClient(resolved, applicationName)) as unknown as PgSession
  },
}

/**
 * The node-postgres adapter: the outbox for apps that use `pg` directly.
 *
 * @example
 * const outbox = createPgOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * await outbox.migrate(process.env.DATABASE_URL)
 * await outbox.transaction(pool, async (client, topics) => {
 *   await client.query('INSERT INTO orders ...')
 *   await topics.orderCreated.produce(order)
 * })
 */
export class PgOutbox<M extends TopicMap> extends PostgresOutbox<M, PgTransactionClient, PgConnection> {
  constructor(options: PostgresOutboxOptions<M>) {
    super(options, pgDriver)
  }

  /** Runs `fn` in a transaction on a client from `pool`: COMMIT if it resolves, ROLLBACK if it throws. */
  async transaction<R>(
    pool: pg.Pool,
    fn: (client: pg.PoolClient, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    if (!(pool instanceof pg.Pool))
      throw invalidArgument(`transaction() needs a pg.Pool, got ${describe(pool)}`)
    const client = await pool.connect()
    try {
      await client.query('BEGIN')
      const result = await fn(client, this.in(client))
      await client.query('COMMIT')
      this.notifyCommitted()
      return result
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      throw error
    } finally {
      client.release()
    }
  }
}

export function createPgOutbox<M extends TopicMap>(options: PostgresOutboxOptions<M>): PgOutbox<M> {
  return new PgOutbox(options)
}

export type { PostgresOutboxOptions as PgOutboxOptions, PostgresRelayOptions as PgRelayOptions }

function defaultConnection(): string {
  const url = process.env.DATABASE_URL
  if (!url) throw invalidArgument('no database connection given and DATABASE_URL is not set')
  return url
}

async function openClient(target: string | pg.ClientConfig, applicationName: string): Promise<pg.Client> {
  const config: pg.ClientConfig =
    typeof target === 'string'
      ? { connectionString: target, application_name: applicationName }
      : { application_name: applicationName, ...target }
  const client = new pg.Client(config)
  // Without a listener, a server-side disconnect of an idle client would crash the process.
  client.on('error', () => {})
  await client.connect()
  return client
}
