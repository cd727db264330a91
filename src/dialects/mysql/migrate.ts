import { ErrorCodes, KEntityError } from '../../core/errors.ts'
import type { OutboxTable } from '../../core/seams.ts'
import type { MigrationResult } from '../../outbox/parts.ts'
import { mysqlMigrations } from './migrations.ts'
import { lockName, qualified } from './names.ts'
import type { MysqlSession } from './session.ts'

export type { MigrationResult }

/** How long a start waits for another instance's migration before giving up, in seconds. */
const MIGRATION_LOCK_WAIT_SECONDS = 120

function bookkeeping(table: OutboxTable): string {
  return `CREATE TABLE IF NOT EXISTS ${qualified(table, '_migrations')} (
  version INT NOT NULL PRIMARY KEY,
  name VARCHAR(200) NOT NULL,
  applied_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6))
) ENGINE=InnoDB`
}

/**
 * The whole schema as one SQL script, for teams that apply DDL with their own tooling. Every
 * statement is idempotent, so the script can be run again after an interruption.
 */
export function migrationScript(table: OutboxTable): string {
  const lines = [`CREATE DATABASE IF NOT EXISTS \`${table.schema}\`;`, `${bookkeeping(table)};`]
  for (const migration of mysqlMigrations(table)) {
    lines.push(`-- ${migration.version}: ${migration.name}`)
    lines.push(...migration.statements.map((s) => `${s};`))
    lines.push(
      `INSERT IGNORE INTO ${qualified(table, '_migrations')} (version, name) VALUES (${migration.version}, '${migration.name}');`,
    )
  }
  return `${lines.join('\n')}\n`
}

/**
 * Applies the missing migrations. MySQL DDL is not transactional, so concurrent starts are
 * serialised by a server-wide GET_LOCK instead of a transaction: the second instance waits,
 * then finds nothing to do. The lock belongs to this session and is released with it, even if
 * the process dies half-way; the idempotent steps are then simply run again.
 */
export async function migrate(session: MysqlSession, table: OutboxTable): Promise<MigrationResult> {
  const lock = lockName(table, 'migrate')
  const locked = await session.query('SELECT GET_LOCK(?, ?) AS locked', [lock, MIGRATION_LOCK_WAIT_SECONDS])
  if (Number(locked.rows[0]?.locked) !== 1) {
    throw new KEntityError(
      ErrorCodes.STORE_FAILED,
      `another instance has been migrating the outbox ${qualified(table)} for over ${MIGRATION_LOCK_WAIT_SECONDS} s (lock '${lock}'); check SELECT IS_USED_LOCK('${lock}') and retry`,
      { retryable: true },
    )
  }
  try {
    // CREATE DATABASE needs a privilege the app's user often lacks even when the database exists.
    const exists = await session.query(
      'SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?',
      [table.schema],
    )
    if (exists.rows.length === 0) await session.query(`CREATE DATABASE IF NOT EXISTS \`${table.schema}\``)
    await session.query(bookkeeping(table))
    const done = await session.query(`SELECT version FROM ${qualified(table, '_migrations')}`)
    const appliedBefore = new Set(done.rows.map((row) => Number(row.version)))
    const applied: number[] = []
    for (const migration of mysqlMigrations(table)) {
      if (appliedBefore.has(migration.version)) continue
      for (const statement of migration.statements) await session.query(statement)
      await session.query(`INSERT INTO ${qualified(table, '_migrations')} (version, name) VALUES (?, ?)`, [
        migration.version,
        migration.name,
      ])
      applied.push(migration.version)
    }
    return { applied, current: Math.max(0, ...appliedBefore, ...applied) }
  } finally {
    await session.query('SELECT RELEASE_LOCK(?)', [lock]).catch(() => {})
  }
}
