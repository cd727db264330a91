import postgres from 'postgres'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import type { PgSession } from '../../dialects/postgres/index.ts'
import { withArrayLiterals } from '../../dialects/postgres/parameters.ts'
import type { PgQueryResult } from '../../dialects/postgres/session.ts'
import { databaseUrl } from '../../dialects/shared/database-url.ts'

/**
 * Where a relay or migration session connects: a connection URL, postgres.js options, or the
 * app's `sql` instance (its connection settings are reused for a new, dedicated connection).
 */
export type PostgresJsConnection =
  | string
  | postgres.Options<Record<string, postgres.PostgresType>>
  // biome-ignore lint/suspicious/noExplicitAny: any custom type map of the app's postgres.js instance
  | postgres.Sql<any>

/**
 * A dedicated postgres.js connection shaped as the dialect's `PgSession`. Never a connection of
 * the app's pool: the relay leaves session state on it (timeouts, the leader's advisory lock).
 * Once the connection closed, every query fails: postgres.js would silently reconnect, and a
 * new connection must not finish a claim that the old one lost.
 */
export async function openPostgresJsSession(
  target: PostgresJsConnection | undefined,
  applicationName: string,
): Promise<PgSession> {
  const errorListeners: ((error: Error) => void)[] = []
  const notificationListeners: ((message: { channel: string; payload: string }) => void)[] = []
  let closed: Error | undefined
  const onclose = () => {
    if (closed !== undefined) return
    closed = sessionGone('the relay database connection was closed')
    for (const listener of errorListeners) listener(closed)
  }
  const settings = {
    max: 1,
    // The relay reads rows by column name and decodes bytea, jsonb and timestamps itself.
    transform: undefined,
    types: {},
    idle_timeout: 0,
    max_lifetime: null,
    // TCP keepalive after 10 s of silence (postgres.js's default is 60), and a bounded
    // connection attempt: a server behind a dead network would otherwise keep it waiting.
    keep_alive: 10,
    connect_timeout: 10,
    onnotice: () => {},
    // The relay LISTENs on this connection to wake at commit; postgres.js reports it here.
    onnotify: (channel: string, payload: string) => {
      for (const listener of notificationListeners) listener({ channel, payload })
    },
    onclose,
  }
  const sql = connect(target ?? databaseUrl(), applicationName, settings)
  let reserved: postgres.ReservedSql
  try {
    reserved = await sql.reserve()
  } catch (error) {
    await sql.end({ timeout: 0 }).catch(() => {})
    throw error
  }
  const run = async (text: string, values: unknown[] | undefined, prepare: boolean) => {
    if (closed !== undefined) throw closed
    const result = await reserved.unsafe(
      text,
      withArrayLiterals(values ?? []) as postgres.ParameterOrJSON<never>[],
      {
        prepare,
      },
    )
    return toPgResults(result)
  }
  const query = (
    textOrConfig: string | { text: string; values?: unknown[]; name?: string },
    values?: unknown[],
  ) =>
    typeof textOrConfig === 'string'
      ? run(textOrConfig, values, false)
      : run(textOrConfig.text, textOrConfig.values, textOrConfig.name !== undefined)
  return {
    query: query as PgSession['query'],
    on(event: string, listener: (value: never) => void) {
      if (event === 'error') errorListeners.push(listener as (error: Error) => void)
      if (event === 'notification') {
        notificationListeners.push(listener as (message: { channel: string; payload: string }) => void)
      }
      return this
    },
    async end() {
      closed ??= sessionGone('the relay database session was ended')
      reserved.release()
      await sql.end({ timeout: 0 })
    },
    // A timeout of 0 destroys the socket instead of waiting for the server's goodbye.
    destroy() {
      closed ??= sessionGone('the relay database session was closed')
      reserved.release()
      void sql.end({ timeout: 0 }).catch(() => {})
    },
  }
}

type SessionSettings = postgres.Options<Record<string, postgres.PostgresType>>

function connect(
  target: PostgresJsConnection,
  applicationName: string,
  settings: SessionSettings,
): postgres.Sql {
  if (typeof target === 'string') {
    return postgres(target, { ...settings, connection: { application_name: applicationName } })
  }
  if (
    typeof target === 'function' &&
    typeof target.unsafe === 'function' &&
    typeof target.options === 'object'
  ) {
    return postgres({
      ...connectionSettingsOf(target.options),
      ...settings,
      connection: { ...target.options.connection, application_name: applicationName },
    })
  }
  if (typeof target === 'object' && target !== null && !Array.isArray(target)) {
    return postgres({
      ...target,
      ...settings,
      connection: { application_name: applicationName, ...target.connection },
    })
  }
  throw invalidArgument(
    `expected a connection URL, postgres.js options or a postgres.js sql instance, got ${describe(target)}`,
  )
}

/** Only what says where and how to connect; pool size, transforms and types stay the app's. */
function connectionSettingsOf(options: postgres.Sql['options']): SessionSettings {
  const { host, port, path, database, user, pass, ssl, connect_timeout, keep_alive, target_session_attrs } =
    options as postgres.Sql['options'] & { target_session_attrs?: SessionSettings['target_session_attrs'] }
  return {
    host: host as unknown as string,
    port: port as unknown as number,
    ...(path ? { path } : {}),
    database,
    user,
    ...(pass === null ? {} : { pass }),
    ssl,
    connect_timeout,
    keep_alive,
    ...(target_session_attrs ? { target_session_attrs } : {}),
  }
}

/** postgres.js gives one result array for one statement, an array of them for several. */
function toPgResults(
  result: postgres.RowList<postgres.Row[]> | postgres.RowList<postgres.Row[]>[],
): PgQueryResult | PgQueryResult[] {
  const isMany = Array.isArray(result) && !('command' in result && typeof result.command === 'string')
  if (isMany) return (result as postgres.RowList<postgres.Row[]>[]).map(toPgResult)
  return toPgResult(result as postgres.RowList<postgres.Row[]>)
}

function toPgResult(result: postgres.RowList<postgres.Row[]>): PgQueryResult {
  return { rows: [...result], rowCount: result.count ?? null }
}

/**
 * Every query after the relay's connection closed fails with this: retryable, since the relay
 * opens a new session, and never on the same connection, whose claim is lost.
 */
function sessionGone(what: string): KEntityError {
  return new KEntityError(ErrorCodes.STORE_FAILED, `${what}; the relay reconnects and claims again`, {
    retryable: true,
  })
}
