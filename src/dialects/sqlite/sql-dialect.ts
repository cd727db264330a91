import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import type { SqlStatement, SyncTransactionAdapter } from '../../core/seams.ts'
import type { SessionOpener, SqlDialect, SqlRelayOptions } from '../../outbox/parts.ts'
import type { SqliteConnection } from './connection.ts'
import { sqliteDeadLetters, sqliteStats } from './dead-letters.ts'
import { sqliteInbox } from './inbox.ts'
import { sqliteDialect } from './index.ts'
import { migrate, migrationScript } from './migrate.ts'
import { qualified } from './names.ts'
import { SqliteRelayStore } from './relay-store.ts'
import { sqliteStatus } from './status.ts'

/** A SQLite session: the app's handle (shared, never closed here) or a file opened for one use. */
export interface SqliteBorrowed {
  connection: SqliteConnection
  owned: boolean
}

/**
 * The SQLite dialect part: one relay (`single`), no pipelining, no notifications, synchronous
 * produce. `openFile` is the driver's way to open a database file (for the relay lock beside it).
 */
export function sqliteSql(openFile: (filename: string) => SqliteConnection): SqlDialect<SqliteBorrowed> {
  return {
    database: 'SQLite',
    capabilities: {
      modes: ['single'],
      pipeline: false,
      listen: false,
      synchronous: true,
      relayOptions: ['connection', 'busyTimeout', 'leaderCheckInterval'],
    },
    refusals: {
      modes:
        "it has a single writer and no session-bound locks, so a relay that stalls cannot be fenced off, and several relays would send keys out of order. Run one relay (mode 'single'), in the process that owns the database",
    },
    migrateHint: 'outbox.migrate(db)',
    relayOptionsHint:
      'relay() needs options with the database: outbox.relay({ connection: db }) (or a file path)',
    producer: () => sqliteDialect,
    qualified: (table) => qualified(table),
    migrate(table, open) {
      const { connection, owned } = open()
      try {
        return migrate(connection, table)
      } finally {
        if (owned) connection.close()
      }
    },
    migrationScript,
    deadLetters: sqliteDeadLetters,
    stats: sqliteStats,
    status: sqliteStatus,
    relayStore(table, open, options: SqlRelayOptions) {
      const busyTimeout = options.busyTimeout ?? 10_000
      if (!Number.isInteger(busyTimeout) || busyTimeout < 0) {
        throw invalidArgument(
          `relay option 'busyTimeout' must be an integer number of ms >= 0, got ${describe(busyTimeout)}`,
        )
      }
      return new SqliteRelayStore({ table, connect: open, busyTimeout, openLock: openFile })
    },
    endpoint: (target) => (typeof target === 'string' ? target : undefined),
    inbox: sqliteInbox,
  }
}

/**
 * The SQLite session opener: the app's handle (wrapped by the driver), or the path of a database
 * file opened for each use and closed after. Checked at once, so a bad target throws from the
 * call that passes it.
 */
export function sqliteSessions<Db>(driver: {
  wrap(db: Db): SqliteConnection
  open(filename: string): SqliteConnection
}): SessionOpener<Db | string, SqliteBorrowed> {
  return (db) => {
    if (db === undefined || db === null) {
      throw invalidArgument('pass the database: a database handle or the path of the database file')
    }
    if (typeof db === 'string') {
      const filename = checkFilename(db)
      return () => ({ connection: driver.open(filename), owned: true })
    }
    const wrapped = driver.wrap(db)
    return () => ({ connection: wrapped, owned: false })
  }
}

/** The SQLite transaction binding: writes at once, inside the transaction open on the handle. */
export function sqliteTransaction(connection: SqliteConnection): SyncTransactionAdapter {
  return {
    dialect: 'sqlite',
    assertInTransaction() {
      if (connection.inTransaction) return
      throw new KEntityError(
        ErrorCodes.NO_TRANSACTION,
        'outbox topics must be produced inside a transaction: wrap the work in db.transaction(...) (better-sqlite3), run BEGIN first, or use outbox.transaction(db, fn); nothing was stored',
      )
    },
    execute(statement: SqlStatement) {
      connection.run(statement.text, statement.values)
    },
  }
}

function checkFilename(filename: string): string {
  if (filename === '' || filename === ':memory:' || filename.startsWith('file::memory:')) {
    throw invalidArgument(
      `an in-memory or temporary database exists only inside its handle, so '${filename}' would open a different, empty one; pass the database handle itself`,
    )
  }
  return filename
}
