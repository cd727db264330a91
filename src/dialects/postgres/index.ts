import type { OutboxDialect } from '../../core/seams.ts'
import { postgresMigrations } from './migrations.ts'
import { insertOneStatement, insertStatement } from './sql.ts'

/** Rows per statement: far below PostgreSQL's 1 GB message limit for typical payloads. */
const MAX_ROWS_PER_INSERT = 5000

function dialect(notify: boolean): OutboxDialect {
  return {
    name: 'postgres',
    insert(table, records) {
      const [only] = records
      if (records.length === 1 && only !== undefined) return [insertOneStatement(table, only, notify)]
      const statements = []
      for (let start = 0; start < records.length; start += MAX_ROWS_PER_INSERT) {
        statements.push(insertStatement(table, records.slice(start, start + MAX_ROWS_PER_INSERT), notify))
      }
      return statements
    },
    migrations: postgresMigrations,
  }
}

export const postgresDialect: OutboxDialect = dialect(true)
export const postgresDialectWithoutNotify: OutboxDialect = dialect(false)

export { type MigrationResult, migrate, migrationScript } from './migrate.ts'
export { PostgresRelayStore, type PostgresRelayStoreOptions } from './relay-store.ts'
export type { PgSession } from './session.ts'
