import type { OutboxDialect } from '../../core/seams.ts'
import { classifyError, classifyFailure } from './errors.ts'
import { mysqlMigrations } from './migrations.ts'
import { insertStatements } from './sql.ts'

/** MySQL 8.0.13+ and MariaDB 10.6+ (SKIP LOCKED, expression defaults). */
export const mysqlDialect: OutboxDialect = {
  name: 'mysql',
  insert: insertStatements,
  migrations: mysqlMigrations,
  classifyError,
  classifyFailure,
}

export { type MigrationResult, migrate, migrationScript } from './migrate.ts'
export { lockName } from './names.ts'
export { MysqlRelayStore, type MysqlRelayStoreOptions } from './relay-store.ts'
export type { MysqlResult, MysqlSession } from './session.ts'
