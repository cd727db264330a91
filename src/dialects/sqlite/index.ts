import type { OutboxDialect } from '../../core/seams.ts'
import { classifyError, classifyFailure } from './errors.ts'
import { sqliteMigrations } from './migrations.ts'
import { insertStatements } from './sql.ts'

export const sqliteDialect: OutboxDialect = {
  name: 'sqlite',
  insert: insertStatements,
  migrations: sqliteMigrations,
  classifyError,
  classifyFailure,
}

export type { SqliteConnection } from './connection.ts'
export { type MigrationResult, migrate, migrationScript } from './migrate.ts'
export { SqliteRelayStore, type SqliteRelayStoreOptions } from './relay-store.ts'
