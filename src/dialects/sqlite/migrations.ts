import type { Migration, OutboxTable } from '../../core/seams.ts'
import { qualified } from './names.ts'
import { NOW_MS } from './sql.ts'

/**
 * Forward-only migrations. Never edit a released one: add the next version instead, since
 * databases that already applied a version will not run it again. SQLite's DDL is
 * transactional, so each run applies all missing migrations or none.
 */
export function sqliteMigrations(table: OutboxTable): Migration[] {
  const index = (name: string) => `"${table.schema}_${table.table}_${name}"`
  return [
    {
      version: 1,
      name: 'create outbox and dead letters',
      statements: [
        // AUTOINCREMENT: ids are never reused, even after the newest rows were deleted, so an id
        // in a log or a dead letter names one message for good. Timestamps are Unix ms.
        `CREATE TABLE ${qualified(table)} (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  topic TEXT NOT NULL,
  key BLOB,
  value BLOB,
  headers TEXT,
  ordering_hash INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0,
  available_at INTEGER NOT NULL DEFAULT (${NOW_MS}),
  created_at INTEGER NOT NULL DEFAULT (${NOW_MS}),
  last_error TEXT,
  errors TEXT NOT NULL DEFAULT '[]'
)`,
        // Only rows that failed can be waiting for a retry, so this index is normally empty: the
        // claim's "is an older message of this key waiting?" probe is one look-up into it.
        `CREATE INDEX ${index('retry_idx')} ON ${qualified(table)} (ordering_hash, id) WHERE attempts > 0`,
        `CREATE TABLE ${qualified(table, '_dead_letters')} (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  message_id INTEGER NOT NULL,
  topic TEXT NOT NULL,
  key BLOB,
  value BLOB,
  headers TEXT,
  ordering_hash INTEGER,
  attempts INTEGER NOT NULL,
  errors TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  dead_at INTEGER NOT NULL DEFAULT (${NOW_MS})
)`,
        `CREATE INDEX ${index('dead_letters_topic_idx')} ON ${qualified(table, '_dead_letters')} (topic, id)`,
      ],
    },
  ]
}
