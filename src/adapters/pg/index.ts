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
import {
  abortedTransaction,
  IN_FAILED_SQL_TRANSACTION,
  sqlState,
} from '../../dialects/postgres/transaction.ts'
import { databaseUrl } from '../../dialects/shared/database-url.ts'
import {
  type HeldConnection,
  heldConnection,
  holdingAdapter,
  sendHeld,
  wakingAdapter,
} from './held-connection.ts'
import { holdWritesOption } from './held-scope.ts'
import { withPoolClient } from './pool-client.ts'
import { connectSession } from './session.ts'

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
        if (sqlState(error) === IN_FAILED_SQL_TRANSACTION) throw abortedTransaction(error)
        throw error
      }
    },
  }
}

export type PgConnection = string | pg.ClientConfig | pg.Pool | PgTransactionClient

const pgDriver: PostgresDriver<PgTransactionClient, PgConnection> = {
  transaction: pgTransaction,
  async openSession(target, applicationName) {
    const resolved = target ?? databaseUrl()
    if (resolved instanceof pg.Pool) {
      // A pool would spread the relay's claim, leader lock and LISTEN over several connections:
      // open a dedicated client with the pool's settings instead.
      return openClient(resolved.options as pg.ClientConfig, applicationName)
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
    return openClient(resolved, applicationName)
  },
}

export interface PgOutboxOptions<M extends TopicMap> extends PostgresOutboxOptions<M> {
  /**
   * `transaction()` holds its messages until the client's next query (sent just ahead of it) or
   * its COMMIT (sent in the same round trip), through a named prepared statement of the
   * connection, instead of one INSERT round trip per produce() (default true). It owns BEGIN and
   * COMMIT, so no COMMIT can miss them. A write that fails then rejects the client's next query
   * or the COMMIT instead of `produce()`, and the transaction is rolled back; validation and
   * serialization errors still throw from `produce()`. The same mechanism serves
   * `in(client, { holdWrites: true })`.
   *
   * Set false behind a transaction-mode pooler that does not keep prepared statements per client
   * (PgBouncer before 1.21, or with `max_prepared_statements = 0`), or to see write errors at
   * `produce()`. Clients in node-postgres's pipeline mode and native clients always write at
   * produce().
   */
  writeWithCommit?: boolean
}

/** Options of `in(client, options)`. */
export interface PgInOptions {
  /**
   * Hold the messages until the client's next query or its COMMIT, sent in that COMMIT's round
   * trip, instead of writing each at `produce()` (default false: one round trip per produce(),
   * and a failing write rejects `produce()` itself). With it, the COMMIT must go through
   * `client.query(...)`: a COMMIT (or SAVEPOINT, RELEASE, ROLLBACK TO) sent through a reference
   * to the method taken before `in(client)` is refused, the transaction rolled back and nothing
   * of it committed. Needs `writeWithCommit` (the default); a client in pipeline mode or a
   * native client writes at produce() anyway.
   */
  holdWrites?: boolean
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
  readonly #writeWithCommit: boolean

  constructor(options: PgOutboxOptions<M>) {
    super(options, pgDriver)
    if (options.writeWithCommit !== undefined && typeof options.writeWithCommit !== 'boolean') {
      throw invalidArgument(
        `'writeWithCommit' must be true or false, got ${describe(options.writeWithCommit)}`,
      )
    }
    this.#writeWithCommit = options.writeWithCommit ?? true
  }

  /**
   * Typed producers bound to the transaction open on `client` (BEGIN already run). Each
   * `produce()` writes its messages in that transaction at once; `{ holdWrites: true }` holds
   * them for the client's next query or its COMMIT instead (see `PgInOptions`).
   */
  override in(client: PgTransactionClient, options?: PgInOptions): TopicProducers<M> {
    const hold = holdWritesOption(options, this.#writeWithCommit, 'client')
    const inner = pgTransaction(client)
    // Written at once or held, the app's own COMMIT through the wrapped query wakes this
    // process's relays (a relay without LISTEN would otherwise wait for its polling interval).
    const state = canHold(client) ? heldConnection(client) : undefined
    if (state === undefined) return this.producersOn(inner)
    const onWrite = () => state.wake.add(this.#wake)
    return this.producersOn(hold ? holdingAdapter(state, inner, onWrite) : wakingAdapter(inner, onWrite))
  }

  /** One function per outbox, so a transaction's writes wake its relays once. */
  readonly #wake = () => this.notifyCommitted()

  /**
   * Runs `fn` in a transaction on a client from `pool`: COMMIT if it resolves, ROLLBACK if it
   * throws. Messages are written just before the client's next query, or with the COMMIT in the
   * same round trip (see `writeWithCommit`), so messages produced last add no round trip to the
   * transaction; validation and serialization errors still throw from `produce()`.
   */
  async transaction<R>(
    pool: pg.Pool,
    fn: (client: pg.PoolClient, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    if (!(pool instanceof pg.Pool))
      throw invalidArgument(`transaction() needs a pg.Pool, got ${describe(pool)}`)
    return withPoolClient(pool, (client) => {
      const state = this.#writeWithCommit && canHold(client) ? heldConnection(client) : undefined
      return state === undefined
        ? this.#eagerTransaction(client, fn)
        : this.#heldTransaction(state, client, fn)
    })
  }

  async #heldTransaction<R>(
    state: HeldConnection,
    client: pg.PoolClient,
    fn: (client: pg.PoolClient, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    const { buffer, query } = state
    const helper = { flushes: [] as Promise<void>[] }
    state.helper = helper
    let ended = false
    const topics = this.producersOn(
      holdingAdapter(
        state,
        pgTransaction(client),
        () => {},
        () => ended,
      ),
    )
    try {
      await query.call(client, 'BEGIN')
      const result = await fn(client, topics)
      // A failed flush aborted the transaction; its error says why, the app's later queries don't.
      for (const flush of helper.flushes) await flush
      ended = true
      const held = buffer.drain()
      await (held === undefined ? query.call(client, 'COMMIT') : sendHeld(state, held, true))
      // Outboxes whose in(client) wrote in this transaction wake their relays too.
      for (const wake of state.wake) wake()
      this.notifyCommitted()
      return result
    } catch (error) {
      buffer.discard()
      await (query.call(client, 'ROLLBACK') as Promise<unknown>).catch(() => {})
      throw error
    } finally {
      ended = true
      state.helper = undefined
      state.wake.clear()
      state.failedFlush = undefined
    }
  }

  async #eagerTransaction<R>(
    client: pg.PoolClient,
    fn: (client: pg.PoolClient, topics: TopicProducers<M>) => Promise<R>,
  ): Promise<R> {
    try {
      await client.query('BEGIN')
      const result = await fn(client, this.in(client))
      await client.query('COMMIT')
      this.notifyCommitted()
      return result
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      throw error
    }
  }
}

/** node-postgres's pipeline mode refuses the custom query object that carries held writes. */
function canHold(client: PgTransactionClient): client is pg.Client {
  return client instanceof pg.Client && (client as { pipeline?: boolean }).pipeline !== true
}

export function createPgOutbox<M extends TopicMap>(options: PgOutboxOptions<M>): PgOutbox<M> {
  return new PgOutbox(options)
}

export type { PostgresRelayOptions as PgRelayOptions }

function openClient(target: string | pg.ClientConfig, applicationName: string): Promise<PgSession> {
  return connectSession(
    typeof target === 'string'
      ? { connectionString: target, application_name: applicationName }
      : { application_name: applicationName, ...target },
  )
}
