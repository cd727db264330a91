import type pg from 'pg'
import type postgres from 'postgres'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { PgSession } from '../../dialects/postgres/index.ts'

/**
 * Where a relay or migration session connects: the app's Drizzle `db` or its client (a
 * `pg.Pool` or a postgres.js `sql`, whose settings are reused for a new dedicated connection),
 * a `pg` client config, or a URL (opened with node-postgres if installed, else postgres.js).
 */
export type DrizzleRelayConnection =
  | string
  | pg.ClientConfig
  | pg.Pool
  | PostgresJsSql
  | { readonly $client: pg.Pool | PostgresJsSql }

// biome-ignore lint/suspicious/noExplicitAny: any custom type map of the app's postgres.js instance
type PostgresJsSql = postgres.Sql<any>

/**
 * Drivers are imported on first use, so an app needs only the one its Drizzle runs on.
 */
export async function openDrizzleSession(
  target: DrizzleRelayConnection | undefined,
  applicationName: string,
): Promise<PgSession> {
  const resolved = (isDrizzleDb(target) ? target.$client : target) as
    | Exclude<DrizzleRelayConnection, { readonly $client: unknown }>
    | undefined
  if (isPostgresJs(resolved)) {
    const { openPostgresJsSession } = await import('../postgres-js/session.ts')
    return openPostgresJsSession(resolved, applicationName)
  }
  if (
    resolved !== undefined &&
    typeof resolved !== 'string' &&
    (typeof resolved !== 'object' || resolved === null)
  ) {
    throw invalidArgument(
      `expected the Drizzle db, a pg.Pool, a postgres.js sql, a pg client config or a URL, got ${describe(resolved)}`,
    )
  }
  let pgSessions: typeof import('../pg/session.ts')
  try {
    pgSessions = await import('../pg/session.ts')
  } catch (error) {
    if (!isMissingModule(error) || (resolved !== undefined && typeof resolved !== 'string')) throw error
    const { openPostgresJsSession } = await import('../postgres-js/session.ts')
    return openPostgresJsSession(resolved, applicationName)
  }
  return pgSessions.openPgSession(resolved, applicationName)
}

function isDrizzleDb(value: unknown): value is { $client: pg.Pool | PostgresJsSql } {
  return typeof value === 'object' && value !== null && '$client' in value
}

function isPostgresJs(value: unknown): value is PostgresJsSql {
  return (
    typeof value === 'function' &&
    typeof (value as { unsafe?: unknown }).unsafe === 'function' &&
    typeof (value as { options?: unknown }).options === 'object'
  )
}

function isMissingModule(error: unknown): boolean {
  return (error as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND'
}
