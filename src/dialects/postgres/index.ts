import type { OutboxDialect } from '../../core/seams.ts'
import { classifyError, classifyFailure } from './errors.ts'
import { postgresMigrations } from './migrations.ts'
import { insertOneStatement, insertStatement } from './sql.ts'

/** Rows per statement: far below PostgreSQL's 1 GB message limit for typical payloads. */
const MAX_ROWS_PER_INSERT = 5000

/**
 * Least time between two wake-up NOTIFYs queued by one outbox object, in ms. PostgreSQL makes
 * every committing transaction that queued a NOTIFY wait for one cluster-wide lock, held through
 * its commit's WAL flush, so such commits cannot share a flush. With 8 concurrent writers
 * (pgbench, PostgreSQL 15, this project's test machine) a NOTIFY in 100% of the transactions gave
 * 4,600-4,700 commits/s, in 33% 8,000-8,100, in 8% 11,300-11,600, in none 11,800-12,100. The
 * window is per process, so many small instances each notify up to 1000 / NOTIFY_SPACING_MS times
 * a second: it is as wide as the relay's side allows. One NOTIFY per window is enough to wake
 * relays, because a woken relay keeps polling briefly (`NOTIFIED_FOR_MS` in relay-store.ts,
 * which must stay well above this).
 */
export const NOTIFY_SPACING_MS = 20

/** Whether the next statement should carry a NOTIFY: at most one per `NOTIFY_SPACING_MS`. */
export class NotifySpacing {
  #last = Number.NEGATIVE_INFINITY

  take(now = performance.now()): boolean {
    if (now - this.#last < NOTIFY_SPACING_MS) return false
    this.#last = now
    return true
  }
}

function dialect(notify: () => boolean): OutboxDialect {
  return {
    name: 'postgres',
    insert(table, records) {
      const [only] = records
      const wake = notify()
      if (records.length === 1 && only !== undefined) return [insertOneStatement(table, only, wake)]
      const statements = []
      for (let start = 0; start < records.length; start += MAX_ROWS_PER_INSERT) {
        // One NOTIFY per transaction suffices: it is delivered at commit.
        const slice = records.slice(start, start + MAX_ROWS_PER_INSERT)
        statements.push(insertStatement(table, slice, wake && start === 0))
      }
      return statements
    },
    migrations: postgresMigrations,
    classifyError,
    classifyFailure,
  }
}

/** NOTIFY with every write: for single-connection databases (PGlite), where commits never contend. */
export const postgresDialect: OutboxDialect = dialect(() => true)

/**
 * The dialect for one outbox object: `notify` true spaces its NOTIFYs (see `NotifySpacing`), so
 * each outbox needs its own; `everyCommit` sends one with every write instead.
 */
export function postgresDialectFor(notify: boolean, everyCommit = false): OutboxDialect {
  if (!notify) return dialect(() => false)
  if (everyCommit) return postgresDialect
  const spacing = new NotifySpacing()
  return dialect(() => spacing.take())
}

export { type MigrationResult, migrate, migrationScript } from './migrate.ts'
export { PostgresRelayStore, type PostgresRelayStoreOptions } from './relay-store.ts'
export type { PgSession } from './session.ts'
