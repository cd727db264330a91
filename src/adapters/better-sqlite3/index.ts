import { resolve } from 'node:path'
import Database from 'better-sqlite3'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { TopicMap } from '../../core/outbox.ts'
import type { SqliteConnection } from '../../dialects/sqlite/index.ts'
import {
  type SqliteDriver,
  type SqliteInboxConsumerOptions,
  SqliteOutbox,
  type SqliteOutboxOptions,
  type SqliteRelayOptions,
  type SqliteTopicProducers,
} from '../../dialects/sqlite/sqlite-outbox.ts'

/** Prepared statements kept per handle; the outbox uses a handful, plus one per batch size. */
const STATEMENT_CACHE = 100

const connections = new WeakMap<Database.Database, SqliteConnection>()

/** Wraps a better-sqlite3 `Database` (one wrapper per handle, with its prepared statements). */
export function betterSqliteConnection(db: Database.Database): SqliteConnection {
  if (!(db instanceof Database)) {
    throw invalidArgument(`expected a better-sqlite3 Database (new Database(file)), got ${describe(db)}`)
  }
  const cached = connections.get(db)
  if (cached) return cached
  const statements = new Map<string, Database.Statement>()
  const prepare = (sql: string): Database.Statement => {
    let statement = statements.get(sql)
    if (statement === undefined) {
      statement = db.prepare(sql)
      if (statements.size >= STATEMENT_CACHE) statements.delete(statements.keys().next().value as string)
      statements.set(sql, statement)
    }
    return statement
  }
  const connection: SqliteConnection = {
    handle: db,
    filename: db.memory || db.name === '' ? null : resolve(db.name),
    get inTransaction() {
      return db.inTransaction
    },
    run(sql, values = []) {
      return Number(prepare(sql).run(...values).changes)
    },
    all(sql, values = []) {
      return prepare(sql).all(...values) as Record<string, unknown>[]
    },
    exec(sql) {
      db.exec(sql)
    },
    isBusy(error) {
      const code = (error as { code?: unknown } | null)?.code
      return typeof code === 'string' && /^SQLITE_(BUSY|LOCKED)/.test(code)
    },
    close() {
      db.close()
    },
  }
  connections.set(db, connection)
  return connection
}

const betterSqliteDriver: SqliteDriver<Database.Database> = {
  wrap: betterSqliteConnection,
  open: (filename) => betterSqliteConnection(new Database(filename)),
}

/**
 * The better-sqlite3 adapter: the outbox in an embedded SQLite database.
 *
 * @example
 * const outbox = createBetterSqliteOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * outbox.migrate(db)
 * const placeOrder = db.transaction((order) => {
 *   db.prepare('INSERT INTO orders (id) VALUES (?)').run(order.id)
 *   outbox.in(db).orderCreated.produce(order)
 * })
 * await outbox.relay({ connection: db }).start()
 */
export class BetterSqliteOutbox<M extends TopicMap> extends SqliteOutbox<M, Database.Database> {
  constructor(options: SqliteOutboxOptions<M>) {
    super(options, betterSqliteDriver)
  }
}

export function createBetterSqliteOutbox<M extends TopicMap>(
  options: SqliteOutboxOptions<M>,
): BetterSqliteOutbox<M> {
  return new BetterSqliteOutbox(options)
}

export type {
  SqliteInboxConsumerOptions,
  SqliteOutboxOptions as BetterSqliteOutboxOptions,
  SqliteRelayOptions as BetterSqliteRelayOptions,
  SqliteTopicProducers,
}
