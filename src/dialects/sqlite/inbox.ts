import { type InboxSql, inboxScript, purgeInBatches } from '../../consumer/inbox-sql.ts'
import { errorChain } from '../../core/error-chain.ts'
import { internalError, invalidArgument } from '../../core/errors.ts'
import type { OutboxTable } from '../../core/seams.ts'
import { encodeHeaders } from '../shared/stored-columns.ts'
import type { SqliteConnection } from './connection.ts'
import { qualified } from './names.ts'
import { NOW_MS } from './sql.ts'
import type { SqliteBorrowed } from './sql-dialect.ts'

/** SQLITE_CONSTRAINT_PRIMARYKEY: better-sqlite3 names it, node:sqlite gives its number. */
const PRIMARY_KEY_NAME = 'SQLITE_CONSTRAINT_PRIMARYKEY'
const PRIMARY_KEY_CODE = 1555

function statements(table: OutboxTable): string[] {
  const inbox = qualified(table, '_inbox')
  const dead = qualified(table, '_consumer_dead_letters')
  const index = (name: string) => `"${table.schema}_${table.table}_${name}"`
  return [
    // WITHOUT ROWID: the key is the table, one B-tree instead of rows plus a key index. Times are
    // Unix ms, as in the outbox's tables.
    `CREATE TABLE IF NOT EXISTS ${inbox} (
  consumer_group TEXT NOT NULL,
  message_key TEXT NOT NULL,
  topic TEXT NOT NULL,
  partition INTEGER NOT NULL,
  "offset" INTEGER NOT NULL,
  processed_at INTEGER NOT NULL DEFAULT (${NOW_MS}),
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (consumer_group, message_key)
) WITHOUT ROWID`,
    `CREATE INDEX IF NOT EXISTS ${index('inbox_expires_idx')} ON ${inbox} (expires_at)`,
    `CREATE TABLE IF NOT EXISTS ${dead} (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  consumer_group TEXT NOT NULL,
  topic TEXT NOT NULL,
  partition INTEGER NOT NULL,
  "offset" INTEGER NOT NULL,
  key BLOB,
  value BLOB,
  headers TEXT,
  error TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  dead_at INTEGER NOT NULL DEFAULT (${NOW_MS})
)`,
    `CREATE INDEX IF NOT EXISTS ${index('consumer_dead_letters_group_idx')} ON ${dead} (consumer_group, id)`,
  ]
}

/** An app's handle with a transaction open would take this call into it (and could roll it back). */
function outsideTransaction(connection: SqliteConnection, what: string): void {
  if (connection.inTransaction) {
    throw invalidArgument(
      `${what} runs its own transaction, but one is open on this database handle; call it before BEGIN or after COMMIT`,
    )
  }
}

/**
 * The inbox on SQLite. Its statements run on the app's handle inside the synchronous transaction
 * of `SqliteOutbox` (see `syncInboxProcessor`), so nothing here waits.
 */
export const sqliteInbox: InboxSql<SqliteBorrowed> = {
  insert: (table, entry) => ({
    text: `INSERT INTO ${qualified(table, '_inbox')} (consumer_group, message_key, topic, partition, "offset", expires_at)
VALUES (?, ?, ?, ?, ?, ${NOW_MS} + ?)`,
    values: [entry.group, entry.key, entry.topic, entry.partition, entry.offset, entry.retentionMs],
  }),
  insertMany: (table, entries) => {
    const first = entries[0]
    if (first === undefined) throw internalError('sqliteInbox.insertMany() got no entries')
    // The rows as one JSON array bound to one parameter: a VALUES list of 10,000 rows (the
    // largest batch) would need 60,000 parameters, past SQLite's 32,766, and the drivers bind
    // numbered ones (?1) only by name. One statement text for every batch size, prepared once.
    const rows = entries.map(
      (entry) =>
        `[${JSON.stringify(entry.key)},${JSON.stringify(entry.topic)},${entry.partition},${entry.offset}]`,
    )
    return {
      text: `INSERT INTO ${qualified(table, '_inbox')} (consumer_group, message_key, topic, partition, "offset", expires_at)
SELECT ?, json_extract(row.value, '$[0]'), json_extract(row.value, '$[1]'), json_extract(row.value, '$[2]'), json_extract(row.value, '$[3]'), ${NOW_MS} + ?
FROM json_each(?) AS row`,
      values: [first.group, first.retentionMs, `[${rows.join(',')}]`],
    }
  },
  deadLetter: (table, dead) => ({
    text: `INSERT INTO ${qualified(table, '_consumer_dead_letters')} (consumer_group, topic, partition, "offset", key, value, headers, error, attempts)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    values: [
      dead.group,
      dead.topic,
      dead.partition,
      dead.offset,
      dead.key,
      dead.value,
      encodeHeaders([...dead.headers]),
      dead.error,
      dead.attempts,
    ],
  }),
  // DELETE ... LIMIT needs a compile option the drivers lack: the batch is picked by key.
  purgeBatch: (table, limit) => ({
    text: `DELETE FROM ${qualified(table, '_inbox')} WHERE (consumer_group, message_key) IN (SELECT consumer_group, message_key FROM ${qualified(table, '_inbox')} WHERE expires_at < ${NOW_MS} LIMIT ${Math.trunc(limit)})`,
    values: [],
  }),
  isDuplicate: (error) =>
    errorChain(error).some(
      (link) =>
        (link.code === PRIMARY_KEY_NAME || link.errcode === PRIMARY_KEY_CODE) &&
        // SQLite names the key's columns: the inbox's, not a key of the handler's own tables.
        typeof link.message === 'string' &&
        /_inbox\.consumer_group, \S+_inbox\.message_key\b/.test(link.message),
    ),
  // BEGIN IMMEDIATE: processes migrating at once take the write lock one after the other.
  migrate(table, open) {
    const { connection, owned } = open()
    try {
      outsideTransaction(connection, 'migrateInbox()')
      connection.exec('BEGIN IMMEDIATE')
      try {
        for (const statement of statements(table)) connection.exec(statement)
        connection.exec('COMMIT')
      } catch (error) {
        if (connection.inTransaction) connection.exec('ROLLBACK')
        throw error
      }
    } finally {
      if (owned) connection.close()
    }
  },
  script: (table) => inboxScript(statements(table)),
  // Each batch commits on its own, so the write lock is held for one batch at a time.
  async purge(table, open, batchSize) {
    const { connection, owned } = open()
    try {
      outsideTransaction(connection, 'purgeInbox()')
      const text = sqliteInbox.purgeBatch(table, batchSize).text
      return await purgeInBatches(batchSize, async () => {
        // The app's transactions (the consumer's among them) get the handle between batches.
        await new Promise((resolve) => setImmediate(resolve))
        return connection.run(text)
      })
    } finally {
      if (owned) connection.close()
    }
  },
}
