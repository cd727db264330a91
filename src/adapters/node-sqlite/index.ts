import { DatabaseSync, type StatementSync } from 'node:sqlite'
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
/** SQLite's primary result codes SQLITE_BUSY and SQLITE_LOCKED (extended codes share the low byte). */
const SQLITE_BUSY = 5
const SQLITE_LOCKED = 6

const connections = new WeakMap<DatabaseSync, SqliteConnection>()

/** Wraps a `node:sqlite` `DatabaseSync` (one wrapper per handle, with its prepared statements). */
export function nodeSqliteConnection(db: DatabaseSync): SqliteConnection {
  if (!(db instanceof DatabaseSync)) {
    throw invalidArgument(`expected a node:sqlite DatabaseSync (new DatabaseSync(file)), got ${describe(db)}`)
  }
  const cached = connections.get(db)
  if (cached) return cached
  const statements = new Map<string, StatementSync>()
  const prepare = (sql: string): StatementSync => {
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
    filename: db.location(),
    get inTransaction() {
      return db.isTransaction
    },
    run(sql, values = []) {
      return Number(prepare(sql).run(...(values as never[])).changes)
    },
    all(sql, values = []) {
      return prepare(sql)
        .all(...(values as never[]))
        .map(withBuffers)
    },
    exec(sql) {
      db.exec(sql)
    },
    isBusy(error) {
      const errcode = (error as { errcode?: unknown } | null)?.errcode
      return (
        typeof errcode === 'number' &&
        ((errcode & 0xff) === SQLITE_BUSY || (errcode & 0xff) === SQLITE_LOCKED)
      )
    },
    close() {
      db.close()
    },
  }
  connections.set(db, connection)
  return connection
}

/** node:sqlite reads BLOBs as plain Uint8Arrays; the outbox hands Kafka Buffers (no copy). */
function withBuffers(row: Record<string, unknown>): Record<string, unknown> {
  for (const [name, value] of Object.entries(row)) {
    if (value instanceof Uint8Array && !Buffer.isBuffer(value)) {
      row[name] = Buffer.from(value.buffer, value.byteOffset, value.byteLength)
    }
  }
  return row
}

const nodeSqliteDriver: SqliteDriver<DatabaseSync> = {
  wrap: nodeSqliteConnection,
  open: (filename) => nodeSqliteConnection(new DatabaseSync(filename)),
}

/**
 * The node:sqlite adapter: the outbox in an embedded SQLite database, with Node's built-in driver.
 *
 * @example
 * const outbox = createNodeSqliteOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
 * outbox.migrate(db)
 * db.exec('BEGIN')
 * db.prepare('INSERT INTO orders (id) VALUES (?)').run(order.id)
 * outbox.in(db).orderCreated.produce(order)
 * db.exec('COMMIT')
 */
export class NodeSqliteOutbox<M extends TopicMap> extends SqliteOutbox<M, DatabaseSync> {
  constructor(options: SqliteOutboxOptions<M>) {
    super(options, nodeSqliteDriver)
  }
}

export function createNodeSqliteOutbox<M extends TopicMap>(
  options: SqliteOutboxOptions<M>,
): NodeSqliteOutbox<M> {
  return new NodeSqliteOutbox(options)
}

export type {
  SqliteInboxConsumerOptions,
  SqliteOutboxOptions as NodeSqliteOutboxOptions,
  SqliteRelayOptions as NodeSqliteRelayOptions,
  SqliteTopicProducers,
}
