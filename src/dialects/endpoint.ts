import { databaseUrlIfSet } from './shared/database-url.ts'

/**
 * `host:port` of a relay's connection target, for log lines: never the user, the password or
 * the rest of a URL. Knows URLs and the option objects of the drivers and the libraries that
 * hold them (`connectionString`, `host`/`port`, a pool's `options`, a Knex or mysql2 `config`);
 * anything else gives `undefined`, and the log says what the driver's error says.
 */
export function endpointOf(target: unknown, defaultPort: number, depth = 0): string | undefined {
  if (depth > 3) return undefined
  if (target === undefined || target === null) {
    return depth === 0 ? endpointOf(databaseUrlIfSet(), defaultPort, 1) : undefined
  }
  if (typeof target === 'string' || target instanceof URL) {
    try {
      const url = new URL(String(target))
      if (url.hostname === '') return undefined
      return `${url.hostname}:${url.port === '' ? defaultPort : url.port}`
    } catch {
      return undefined
    }
  }
  if (typeof target !== 'object' && typeof target !== 'function') return undefined
  let fields: Record<string, unknown>
  try {
    fields = target as Record<string, unknown>
    if (typeof fields.connectionString === 'string')
      return endpointOf(fields.connectionString, defaultPort, depth + 1)
    if (typeof fields.uri === 'string') return endpointOf(fields.uri, defaultPort, depth + 1)
    if (typeof fields.host === 'string' && fields.host !== '') {
      const port =
        typeof fields.port === 'number' || typeof fields.port === 'string' ? fields.port : defaultPort
      return `${fields.host}:${port}`
    }
    for (const inner of ['options', 'config', 'connectionConfig', 'connection']) {
      const value = fields[inner]
      if (typeof value === 'object' && value !== null) {
        const found = endpointOf(value, defaultPort, depth + 1)
        if (found !== undefined) return found
      }
    }
  } catch {
    // A getter that throws (a closed pool, a proxy): no endpoint rather than no relay.
  }
  return undefined
}
