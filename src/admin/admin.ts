import type { OutboxTable } from '../core/seams.ts'
import { explainDatabaseError, explainingDeadLetters } from '../outbox/not-migrated.ts'
import type { MigrationResult, SqlDialect } from '../outbox/parts.ts'
import { checkStatusOptions } from './figures.ts'
import type { OutboxAdmin, OutboxStatus, StatusOptions } from './types.ts'

/** The parts an admin is composed of: the dialect, the table and the admin session opener. */
export interface AdminParts<Session> {
  // biome-ignore lint/suspicious/noExplicitAny: any relay option type; the admin opens no relay
  dialect: SqlDialect<Session, any>
  table: OutboxTable
  open: () => Session
  /** How to migrate, for `KE_NOT_MIGRATED` (default the dialect's hint). */
  migrateHint?: string
  /** Loads what `open` needs (a driver module) before each call. */
  ready?: () => Promise<void>
  /** Ends what the admin's creator opened; `close()` calls it once. */
  close?: () => Promise<void>
}

/**
 * `OutboxAdmin` over any SQL dialect, like `SqlOutbox` but without topics: what an operator's
 * tool needs is the table, never the app's topic map.
 */
export function composeAdmin<Session>(parts: AdminParts<Session>): OutboxAdmin {
  const { dialect, table, open } = parts
  const classify = dialect.producer({ notify: false }).classifyFailure
  const how = parts.migrateHint ?? dialect.migrateHint
  const explain = (error: unknown): unknown =>
    explainDatabaseError(error, (cause) => classify?.(cause), dialect.qualified(table), how)
  const rethrow = (error: unknown): never => {
    throw explain(error)
  }
  const ready = parts.ready ?? (async () => {})
  const deadLetters = explainingDeadLetters(dialect.deadLetters(table, open), explain)
  let closed: Promise<void> | undefined
  return {
    database: dialect.database,
    deadLetters: {
      list: (filter) => ready().then(() => deadLetters.list(filter)),
      count: (filter) => ready().then(() => deadLetters.count(filter)),
      replay: (filter) => ready().then(() => deadLetters.replay(filter)),
      purge: (filter) => ready().then(() => deadLetters.purge(filter)),
    },
    async status(options?: StatusOptions): Promise<OutboxStatus> {
      const { countCap } = checkStatusOptions(options)
      await ready()
      return dialect.status(table, open, countCap).catch(rethrow)
    },
    async migrate(): Promise<MigrationResult> {
      return ready()
        .then(() => dialect.migrate(table, open))
        .catch(rethrow)
    },
    migrationSql: () => dialect.migrationScript(table),
    close() {
      closed ??= parts.close?.() ?? Promise.resolve()
      return closed
    },
  }
}
