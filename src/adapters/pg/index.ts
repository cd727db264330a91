import pg from 'pg'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import { Outbox, type OutboxOptions, type TopicMap, type TopicProducers } from '../../core/outbox.ts'
import { OutboxRelay, RELAY_DEFAULTS, type RelayOptions } from '../../core/relay.ts'
import type { MessageTransport, SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import {
  type MigrationResult,
  migrate,
  migrationScript,
  type PgSession,
  PostgresRelayStore,
  postgresDialect,
} from '../../dialects/postgres/index.ts'
import { type KafkaOptions, KafkaTransport, validateKafkaOptions } from '../../transports/kafka/index.ts'

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

export interface PgOutboxOptions<M extends TopicMap> extends OutboxOptions<M> {
  /** Kafka connection for the relay and for topics mapped with `outbox: false`. */
  kafka?: KafkaOptions | MessageTransport
}

export interface PgRelayOptions extends RelayOptions {
  /** Where the relay connects: a connection string or pg client config. Defaults to `DATABASE_URL`. */
  connection?: string | pg.ClientConfig
  /** Kafka for this relay; defaults to the outbox's `kafka` option. */
  kafka?: KafkaOptions | MessageTransport
  /** Longest a claimed batch may stay unacknowledged before PostgreSQL releases it, in ms (default 60000). */
  claimTimeout?: number
}

export type MigrationTarget = string | pg.ClientConfig | PgTransactionClient

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
export class PgOutbox<M extends TopicMap> {
  readonly outbox: Outbox<M>
  readonly #kafka: KafkaOptions | MessageTransport | undefined
  /** Relays of this process, woken right after `transaction()` commits instead of at their next poll. */
  readonly #localRelays = new Set<OutboxRelay>()
  #direct: MessageTransport | undefined

  constructor(options: PgOutboxOptions<M>) {
    this.outbox = new Outbox(options, postgresDialect)
    if (options.kafka !== undefined && !isTransport(options.kafka)) validateKafkaOptions(options.kafka)
    this.#kafka = options.kafka
  }

  /** Typed producers bound to the transaction open on `client`. */
  in(client: PgTransactionClient): TopicProducers<M> {
    return this.outbox.producers(pgTransaction(client), () => this.#directTransport())
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
      for (const relay of this.#localRelays) relay.wake()
      return result
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      throw error
    } finally {
      client.release()
    }
  }

  /** Creates or upgrades the outbox schema; safe to run from several instances at once. */
  async migrate(target: MigrationTarget = defaultConnection()): Promise<MigrationResult> {
    if (typeof target === 'object' && target !== null && 'query' in target) {
      return migrate(target as unknown as PgSession, this.outbox.table)
    }
    const client = await openClient(target)
    try {
      return await migrate(client as unknown as PgSession, this.outbox.table)
    } finally {
      await client.end()
    }
  }

  /** The schema as a SQL script, for applying with your own migration tool. */
  migrationSql(): string {
    return migrationScript(this.outbox.table)
  }

  /** A relay worker for this outbox; call `start()` on it. */
  relay(options: PgRelayOptions = {}): OutboxRelay {
    const kafka = options.kafka ?? this.#kafka
    if (kafka === undefined) {
      throw invalidArgument(
        `the relay needs Kafka: pass kafka: { brokers: ['host:9092'] } to createPgOutbox() or relay()`,
      )
    }
    const claimTimeout = options.claimTimeout ?? 60_000
    if (!Number.isInteger(claimTimeout) || claimTimeout < 1000) {
      throw invalidArgument(
        `relay option 'claimTimeout' must be an integer number of ms >= 1000, got ${describe(claimTimeout)}`,
      )
    }
    const connection = options.connection ?? defaultConnection()
    if (typeof connection !== 'string' && (typeof connection !== 'object' || connection === null)) {
      throw invalidArgument(`relay option 'connection' must be a connection string or pg client config`)
    }
    const transport = isTransport(kafka) ? kafka : new KafkaTransport(kafka)
    const exclusive = options.mode === 'exclusive'
    const idle = Math.max(
      options.pollingInterval ?? RELAY_DEFAULTS.pollingInterval,
      options.leaderCheckInterval ?? RELAY_DEFAULTS.leaderCheckInterval,
    )
    const store = new PostgresRelayStore({
      table: this.outbox.table,
      connect: async () => (await openClient(connection, 'k-entity-relay')) as unknown as PgSession,
      claimTimeout,
      // Long enough that a healthy relay (which speaks at least once per interval) never hits it.
      sessionIdleTimeout: exclusive ? Math.max(10_000, idle * 5) : 0,
    })
    const relay = new OutboxRelay(store, transport, {
      ...options,
      onStop: () => {
        this.#localRelays.delete(relay)
        options.onStop?.()
      },
    })
    this.#localRelays.add(relay)
    return relay
  }

  /** Closes the Kafka producer used for `outbox: false` topics. */
  async close(): Promise<void> {
    const direct = this.#direct
    this.#direct = undefined
    if (direct && !isTransport(this.#kafka)) await direct.close()
  }

  #directTransport(): MessageTransport {
    if (this.#direct) return this.#direct
    if (this.#kafka === undefined) {
      throw new KEntityError(
        ErrorCodes.NO_TRANSPORT,
        'a topic mapped with outbox: false is sent straight to Kafka, but createPgOutbox() got no kafka option',
      )
    }
    this.#direct = isTransport(this.#kafka) ? this.#kafka : new KafkaTransport(this.#kafka)
    return this.#direct
  }
}

export function createPgOutbox<M extends TopicMap>(options: PgOutboxOptions<M>): PgOutbox<M> {
  return new PgOutbox(options)
}

function isTransport(value: unknown): value is MessageTransport {
  return typeof value === 'object' && value !== null && typeof (value as MessageTransport).send === 'function'
}

function defaultConnection(): string {
  const url = process.env.DATABASE_URL
  if (!url) throw invalidArgument('no database connection given and DATABASE_URL is not set')
  return url
}

async function openClient(
  target: string | pg.ClientConfig,
  applicationName = 'k-entity',
): Promise<pg.Client> {
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
