import { invalidArgument } from '../../core/errors.ts'
import type { OutboxTable } from '../../core/seams.ts'
import type { MigrationResult } from '../../outbox/parts.ts'
import type { SqliteConnection } from './connection.ts'
import { sqliteMigrations } from './migrations.ts'
import { qualified } from './names.ts'
import { NOW_MS } from './sql.ts'

export type { MigrationResult }

function bookkeeping(table: OutboxTable): string {
  return `CREATE TABLE IF NOT EXISTS ${qualified(table, '_migrations')} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL DEFAULT (${NOW_MS}))`
}

/** The whole schema as one SQL script, for teams that apply DDL with their own tooling. */
export function migrationScript(table: OutboxTable): string {
  const lines = ['BEGIN IMMEDIATE;', `${bookkeeping(table)};`]
  for (const migration of sqliteMigrations(table)) {
    lines.push(`-- ${migration.version}: ${migration.name}`)
    lines.push(...migration.statements.map((s) => `${s};`))
    lines.push(
      `INSERT INTO ${qualified(table, '_migrations')} (version, name) VALUES (${migration.version}, '${migration.name}');`,
    )
  }
  lines.push('COMMIT;')
  return `${lines.join('\n')}\n`
}

/**
 * Applies the missing migrations in one transaction. BEGIN IMMEDIATE takes the database's write
 * lock first, so processes starting at once run one after the other and the later ones find
 * nothing to do.
 */
export function migrate(connection: SqliteConnection, table: OutboxTable): MigrationResult {
  if (connection.inTransaction) {
    throw invalidArgument(
      'migrate() runs its own transaction, but one is already open on this database handle; call it before BEGIN or after COMMIT',
    )
  }
  connection.exec('BEGIN IMMEDIATE')
  try {
    connection.exec(bookkeeping(table))
    const done = connection.all(`SELECT version FROM ${qualified(table, '_migrations')}`)
    const appliedBefore = new Set(done.map((row) => Number(row.version)))
    const applied: number[] = []
    for (const migration of sqliteMigrations(table)) {
      if (appliedBefore.has(migration.version)) continue
      for (const statement of migration.statements) connection.exec(statement)
      connection.run(`INSERT INTO ${qualified(table, '_migrations')} (version, name) VALUES (?, ?)`, [
        migration.version,
        migration.name,
      ])
      applied.push(migration.version)
    }
    connection.exec('COMMIT')
    return { applied, current: Math.max(0, ...appliedBefore, ...applied) }
  } catch (error) {
    if (connection.inTransaction) connection.exec('ROLLBACK')
    throw error
  }
}
