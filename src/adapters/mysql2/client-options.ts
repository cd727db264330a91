import type mysql from 'mysql2/promise'

/**
 * What a derived connection keeps: where the server is, how to authenticate, TLS, the character
 * set. Not how statements are formatted or results shaped (`queryFormat`, `typeCast`,
 * `rowsAsArray`, `bigNumberStrings`, ...): the outbox's statements rely on mysql2's defaults.
 * Not pool sizing, nor what mysql2 computes itself (`clientFlags`).
 */
const KEPT = [
  'uri',
  'host',
  'port',
  'localAddress',
  'socketPath',
  'stream',
  'user',
  'password',
  'password1',
  'password2',
  'password3',
  'passwordSha1',
  'database',
  'connectTimeout',
  'insecureAuth',
  'authPlugins',
  'authSwitchHandler',
  'enableCleartextPlugin',
  'disableEval',
  'flags',
  'ssl',
  'charset',
  'charsetNumber',
  'compress',
  'enableKeepAlive',
  'keepAliveInitialDelay',
  'connectAttributes',
] as const

type Holder = { config?: unknown; pool?: unknown; connection?: unknown; query?: unknown }

/**
 * The connection settings of an app's mysql2 pool or connection (promise or callback API), for
 * opening a dedicated connection to the same server as the same user; undefined when `client`
 * is none of those. For data layers that expose the app's mysql2 client (Drizzle's `db.$client`).
 */
export function mysql2ClientOptions(client: unknown): mysql.ConnectionOptions | undefined {
  if (!isObject(client)) return undefined
  const holder = client as Holder
  // The promise API wraps the callback API's pool or connection.
  const core = (
    isObject(holder.pool) ? holder.pool : isObject(holder.connection) ? holder.connection : holder
  ) as Holder
  if (!isObject(core.config) || typeof core.query !== 'function') return undefined
  const config = core.config as { connectionConfig?: unknown }
  const settings = (isObject(config.connectionConfig) ? config.connectionConfig : config) as Record<
    string,
    unknown
  >
  // A ConnectionConfig always has the flags mysql2 computed: anything else is not a mysql2 client.
  if (typeof settings.clientFlags !== 'number') return undefined
  return connectionOptions(settings)
}

/**
 * The settings of `source` (mysql2 options an app gave its data layer, or a mysql2
 * ConnectionConfig) that a connection of the outbox's own keeps (see KEPT).
 */
export function connectionOptions(source: Readonly<Record<string, unknown>>): mysql.ConnectionOptions {
  const options: Record<string, unknown> = {}
  for (const key of KEPT) {
    if (source[key] !== undefined) options[key] = source[key]
  }
  // A stream factory opens a new socket per connection; a stream instance belongs to the app's.
  if (typeof options.stream !== 'function') delete options.stream
  return options as mysql.ConnectionOptions
}

function isObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null
}
