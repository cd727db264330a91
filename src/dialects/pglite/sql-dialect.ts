import type { PGliteInterface } from '@electric-sql/pglite'
import type { SessionOpener, SqlDialect } from '../../outbox/parts.ts'
import type { PgSession } from '../postgres/session.ts'
import { postgresSql } from '../postgres/sql-dialect.ts'
import { postgresStatus } from '../postgres/status.ts'
import { PgliteRelayStore } from './relay-store.ts'
import { PgliteSession } from './session.ts'

/**
 * PGlite: PostgreSQL's SQL in an embedded database of one connection, relayed in the process
 * that embeds it. One relay (`single`), no companion session, and the relay always runs on the
 * outbox's own `db`.
 */
export function pgliteSql(db: PGliteInterface): SqlDialect<Promise<PgSession>> {
  return {
    // One connection: NOTIFYs never hold other commits back, and the PGlite relay does not poll
    // after a notification, so every commit sends one.
    ...postgresSql(true),
    database: 'PGlite',
    capabilities: {
      modes: ['single'],
      pipeline: false,
      listen: true,
      synchronous: false,
      relayOptions: [],
    },
    refusals: {
      modes:
        "an embedded database has one relay, in the process that embeds it, so there is no leader to elect; use mode 'single' on PGlite (the default)",
      options: "the relay always runs on the outbox's own database, without a claim transaction or leader",
    },
    relayStore: (table) => new PgliteRelayStore(db, table),
    // One connection in this process: no other sessions to show.
    status: (table, open, countCap) => postgresStatus(table, open, countCap, { relays: false }),
    endpoint: () => undefined,
  }
}

/** PGlite's sessions: the outbox's own database (or another one passed), never closed here. */
export function pgliteSessions(db: PGliteInterface): SessionOpener<PGliteInterface, Promise<PgSession>> {
  return (target) => async () => new PgliteSession(target ?? db)
}
