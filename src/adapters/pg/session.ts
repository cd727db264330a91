import pg from 'pg'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { PgSession } from '../../dialects/postgres/index.ts'

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
  const resolved = target ?? process.env.DATABASE_URL
  if (resolved === undefined || resolved === '') {
    throw invalidArgument('no database connection given and DATABASE_URL is not set')
  }
  const client = new pg.Client(clientConfig(resolved, applicationName))
  // Without a listener, a server-side disconnect of an idle client would crash the process.
  client.on('error', () => {})
  await client.connect()
  return client as unknown as PgSession
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
