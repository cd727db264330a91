import type { Migration, OutboxTable } from '../../core/seams.ts'
import type { MigrationResult } from '../../outbox/parts.ts'
import { postgresMigrations } from './migrations.ts'
import { lockClass, qualified } from './names.ts'
import type { PgSession } from './session.ts'

export type { MigrationResult }

function bookkeeping(table: OutboxTable): string[] {
  return [
    `CREATE SCHEMA IF NOT EXISTS "${table.schema}"`,
    `CREATE TABLE IF NOT EXISTS ${qualified(table, '_migrations')} (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
  ]
}

/** The whole schema as one SQL script, for teams that apply DDL with their own tooling. */
export function migrationScript(table: OutboxTable): string {
  const lines = ['BEGIN;', ...bookkeeping(table).map((s) => `${s};`)]
  for (const migration of postgresMigrations(table)) {
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
 * Applies the missing migrations in one transaction. A transaction-scoped advisory lock makes
 * concurrent starts of several instances safe: the second waits, then finds nothing to do.
 */
export async function migrate(session: PgSession, table: OutboxTable): Promise<MigrationResult> {
  const migrations: Migration[] = postgresMigrations(table)
  await session.query('BEGIN')
  try {
    await session.query(`SELECT pg_advisory_xact_lock(${lockClass(table, 'migrate')}, 0)`)
    for (const statement of bookkeeping(table)) await session.query(statement)
    const done = await session.query({ text: `SELECT version FROM ${qualified(table, '_migrations')}` })
    const appliedBefore = new Set(done.rows.map((row) => Number(row.version)))
    const applied: number[] = []
    for (const migration of migrations) {
      if (appliedBefore.has(migration.version)) continue
      for (const statement of migration.statements) await session.query(statement)
      await session.query({
        text: `INSERT INTO ${qualified(table, '_migrations')} (version, name) VALUES ($1, $2)`,
        values: [migration.version, migration.name],
      })
      applied.push(migration.version)
    }
    await session.query('COMMIT')
    return { applied, current: Math.max(0, ...appliedBefore, ...applied) }
  } catch (error) {
    await session.query('ROLLBACK').catch(() => {})
    throw error
  }
}
