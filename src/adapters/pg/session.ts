import pg from 'pg'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { PgSession } from '../../dialects/postgres/index.ts'
import { databaseUrl } from '../../dialects/shared/database-url.ts'
import { Submittable } from './submittable.ts'

/**
 * Where a relay or migration session connects when the app's data layer sits on node-postgres:
 * a connection URL, a `pg` client config, or the app's `pg.Pool` (its settings are reused for a
 * new, dedicated client; the relay keeps session state on it, so never a pooled one).
 */
export type PgRelayConnection = string | pg.ClientConfig | pg.Pool

export async function openPgSession(
  target: PgRelayConnection | undefined,
  applicationName: string,
): Promise<PgSession> {
  const resolved = target ?? databaseUrl()
  return connectSession(clientConfig(resolved, applicationName))
}

/** A new connected client that k-entity owns (relay, migration or admin session). */
export async function connectSession(config: pg.ClientConfig): Promise<PgSession> {
  // node-postgres's pipeline mode refuses custom query objects, which the relay's COPY claim is;
  // k-entity's sessions send one query at a time anyway.
  const client = new SessionClient({ ...withDeadPeerDetection(config), pipeline: false })
  // Without a listener, a server-side disconnect of an idle client would crash the process.
  client.on('error', () => {})
  await client.connect()
  return client as unknown as PgSession
}

/** A node-postgres client that can also read COPY ... TO STDOUT data (see `PgSession.copyOut`). */
class SessionClient extends pg.Client {
  /** Closes the socket now: `end()` waits for a goodbye that a dead peer never sends. */
  destroy(): void {
    ;(this as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy()
  }

  copyOut(text: string, onData: (chunk: Buffer) => void): Promise<void> {
    const query = new CopyOutQuery(text, onData)
    this.query(query as unknown as pg.QueryConfig)
    return query.done
  }
}

/**
 * A node-postgres "submittable": the client hands it every message of its simple query.
 * node-postgres reads COPY data only when writing to a table (COPY FROM); pg-copy-streams reads
 * it too, but as a stream that ends at the first statement's completion, while the relay's claim
 * is the last of several statements in one query.
 */
class CopyOutQuery extends Submittable {
  /** Statements of the query that completed (read by the benchmark's statement counter). */
  completed = 0
  readonly #text: string
  readonly #onData: (chunk: Buffer) => void

  constructor(text: string, onData: (chunk: Buffer) => void) {
    super()
    this.#text = text
    this.#onData = onData
  }

  submit(connection: { query(text: string): void }): void {
    connection.query(this.#text)
  }

  override handleCopyData(message: { chunk: Buffer }): void {
    if (this.pending !== undefined) return
    try {
      this.#onData(message.chunk)
    } catch (error) {
      this.pending = error
    }
  }

  override handleCommandComplete(): void {
    this.completed++
  }
}

/**
 * TCP keepalive, so the kernel notices a peer that vanished while the session is idle (node's
 * sockets have it off), and a bounded connection attempt: a server behind a dead network or a
 * proxy that forwards nothing would otherwise keep `connect()` waiting forever. An app's own
 * settings win where it chose them (a pool's `connectionTimeoutMillis` of 0, node-postgres's
 * "no limit" default, counts as unset).
 */
function withDeadPeerDetection(config: pg.ClientConfig): pg.ClientConfig {
  return {
    ...config,
    keepAlive: config.keepAlive ?? true,
    keepAliveInitialDelayMillis: config.keepAliveInitialDelayMillis ?? 10_000,
    connectionTimeoutMillis:
      config.connectionTimeoutMillis !== undefined && config.connectionTimeoutMillis > 0
        ? config.connectionTimeoutMillis
        : 10_000,
  }
}

function clientConfig(target: PgRelayConnection, applicationName: string): pg.ClientConfig {
  if (typeof target === 'string') return { connectionString: target, application_name: applicationName }
  if (target instanceof pg.Pool) {
    return {
      ...(target as unknown as { options: pg.ClientConfig }).options,
      application_name: applicationName,
    }
  }
  if (typeof target === 'object' && target !== null && !Array.isArray(target) && !('query' in target)) {
    return { application_name: applicationName, ...target }
  }
  throw invalidArgument(
    `expected a connection URL, a pg client config or a pg.Pool, got ${describe(target)}; a client or a transaction cannot host a relay, which needs its own session`,
  )
}
