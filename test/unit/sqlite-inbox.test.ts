// The consumer inbox on SQLite without Kafka: the processor outbox.consume() builds (the same
// one, reached through a subclass) driven by hand on a real database, through both drivers; and
// the types that make an async handler a compile error. The run through Kafka is the shared
// inbox contract (test/consumer-adapters.test.ts).
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { BetterSqliteOutbox, betterSqliteConnection } from '../../src/adapters/better-sqlite3/index.ts'
import { NodeSqliteOutbox, nodeSqliteConnection } from '../../src/adapters/node-sqlite/index.ts'
import type { SyncInboxConsumerOptions } from '../../src/consumer/inbox-sync.ts'
import type { MessageProcessor } from '../../src/consumer/kafka-consumer.ts'
import type { ConsumedMessage } from '../../src/consumer/message.ts'
import type { DeadMessage } from '../../src/consumer/options.ts'
import { isKEntityError, KEntityError } from '../../src/core/errors.ts'
import { defineTopic, MESSAGE_ID_HEADER } from '../../src/core/topic.ts'
import type { SqliteConnection } from '../../src/dialects/sqlite/connection.ts'
import { sqliteInbox } from '../../src/dialects/sqlite/inbox.ts'
import { sqliteTransaction } from '../../src/dialects/sqlite/sql-dialect.ts'

type Event = { id: string }
const events = defineTopic<Event>({ name: 'events', key: (event) => event.id })
const topics = { events }
const kafka = { brokers: ['127.0.0.1:1'] }

/** What the tests need of an app's handle, whichever the driver. */
interface Handle {
  exec(sql: string): void
  prepare(sql: string): { run(...values: never[]): unknown; all(...values: never[]): unknown[] }
  close(): void
}

interface Driver {
  name: string
  open(file: string): Handle
  outbox(): {
    migrateInbox(db: Handle): undefined
    inboxMigrationSql(): string
    purgeInbox(db: Handle, options?: { batchSize?: number }): Promise<number>
    consume(topic: typeof events, options: Record<string, unknown>): unknown
    processor(
      options: Partial<SyncInboxConsumerOptions<Event, Handle, typeof topics>>,
    ): MessageProcessor<Event>
  }
}

/** The processor consume() would hand its KafkaConsumer, for driving it by hand. */
function probe<Db>(
  Base: new (options: {
    topics: typeof topics
    kafka: typeof kafka
  }) => BetterSqliteOutbox<typeof topics> | NodeSqliteOutbox<typeof topics>,
  wrap: (db: Db) => SqliteConnection,
) {
  class Probe extends (Base as unknown as typeof BetterSqliteOutbox<typeof topics>) {
    processor(options: Record<string, unknown>): MessageProcessor<Event> {
      return this.inboxProcessor(
        { groupId: 'g', purgeIntervalMs: 0, ...options } as never,
        {
          table: this.outbox.table,
          sql: sqliteInbox as never,
          binding: (db) => sqliteTransaction(wrap(db as Db)),
          isRetryable: (error) => this.isRetryable(error),
          logger: { error() {}, warn() {}, info() {}, debug() {} } as never,
        },
        'g',
      )
    }
  }
  return () => new Probe({ topics, kafka }) as unknown as ReturnType<Driver['outbox']>
}

const drivers: Driver[] = [
  {
    name: 'better-sqlite3',
    open: (file) => new Database(file) as unknown as Handle,
    outbox: probe(BetterSqliteOutbox, betterSqliteConnection),
  },
  {
    name: 'node:sqlite',
    open: (file) => new DatabaseSync(file) as unknown as Handle,
    outbox: probe(NodeSqliteOutbox as never, nodeSqliteConnection),
  },
]

function message(id: string, offset: number): ConsumedMessage<Event> {
  return {
    value: { id },
    key: Buffer.from(id),
    headers: { [MESSAGE_ID_HEADER]: Buffer.from(`m-${id}`) },
    headerList: [[MESSAGE_ID_HEADER, Buffer.from(`m-${id}`)]],
    topic: 'events',
    partition: 0,
    offset: BigInt(offset),
    timestamp: 0n,
    attempt: 1,
  }
}

function withDatabase(
  driver: Driver,
  body: (db: Handle, outbox: ReturnType<Driver['outbox']>) => Promise<void>,
) {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ke-sqlite-inbox-'))
    const db = driver.open(join(dir, 'app.db'))
    try {
      db.exec('CREATE TABLE orders (id TEXT PRIMARY KEY)')
      const outbox = driver.outbox()
      assert.equal(outbox.migrateInbox(db), undefined, 'migrateInbox() is synchronous on SQLite')
      await body(db, outbox)
    } finally {
      db.close()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

const count = (db: Handle, table: string) =>
  Number((db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).all()[0] as { n: number | bigint }).n)
const insertOrder = (db: Handle, id: string) =>
  db.prepare('INSERT INTO orders (id) VALUES (?)').run(id as never)

for (const driver of drivers) {
  describe(`the inbox on SQLite (${driver.name})`, () => {
    it(
      'migrateInbox() and inboxMigrationSql() can run again; the script creates what migrateInbox() does',
      withDatabase(driver, async (db, outbox) => {
        outbox.migrateInbox(db)
        db.exec(outbox.inboxMigrationSql())
        db.exec(outbox.inboxMigrationSql())
        const tables = db
          .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'k_entity_outbox_%' ORDER BY name",
          )
          .all()
          .map((row) => (row as { name: string }).name)
        assert.deepEqual(tables, ['k_entity_outbox_consumer_dead_letters', 'k_entity_outbox_inbox'])
        db.exec('BEGIN')
        assert.throws(
          () => outbox.migrateInbox(db),
          (error: unknown) => isKEntityError(error, 'KE_INVALID_ARGUMENT'),
        )
        db.exec('ROLLBACK')
      }),
    )

    it(
      'a message once: its effect and inbox row commit together, a repeat is skipped without the handler',
      withDatabase(driver, async (db, outbox) => {
        const calls: string[] = []
        const processor = outbox.processor({
          db,
          handler: (consumed, tx) => {
            calls.push((consumed.value as Event).id)
            insertOrder(tx, (consumed.value as Event).id)
          },
        })
        assert.equal(await processor.handle(message('a', 1)), undefined)
        assert.equal(
          await processor.handle(message('a', 7)),
          'duplicate',
          'the same message id at another offset',
        )
        assert.deepEqual(calls, ['a'])
        assert.equal(count(db, 'orders'), 1)
        assert.equal(count(db, 'k_entity_outbox_inbox'), 1)
      }),
    )

    it(
      "a throwing handler rolls back its write and the inbox row; the handler's own duplicate key is no repeat",
      withDatabase(driver, async (db, outbox) => {
        insertOrder(db, 'taken')
        const processor = outbox.processor({
          db,
          handler: (consumed, tx) => {
            insertOrder(tx, `${(consumed.value as Event).id}-effect`)
            insertOrder(tx, 'taken')
          },
        })
        await assert.rejects(processor.handle(message('b', 1)), /UNIQUE constraint failed: orders\.id/)
        assert.equal(count(db, 'orders'), 1, 'only the row inserted before')
        assert.equal(count(db, 'k_entity_outbox_inbox'), 0)
        assert.equal(processor.countsAsAttempt?.(new Error('x')), true)
      }),
    )

    it(
      'a batch: all rows in one statement, then the handlers; a key seen before fails the whole batch',
      withDatabase(driver, async (db, outbox) => {
        const calls: string[] = []
        const processor = outbox.processor({
          db,
          handler: (consumed, tx) => {
            calls.push((consumed.value as Event).id)
            insertOrder(tx, (consumed.value as Event).id)
          },
        })
        await processor.handleBatch?.([message('a', 1), message('b', 2), message('c', 3)])
        assert.deepEqual(calls, ['a', 'b', 'c'])
        const stored = db
          .prepare(
            'SELECT message_key, topic, partition, "offset" FROM k_entity_outbox_inbox ORDER BY "offset"',
          )
          .all()
          .map((row) => {
            const r = row as {
              message_key: string
              topic: string
              partition: number
              offset: number | bigint
            }
            return [r.message_key, r.topic, Number(r.partition), Number(r.offset)]
          })
        assert.deepEqual(stored, [
          ['id:m-a', 'events', 0, 1],
          ['id:m-b', 'events', 0, 2],
          ['id:m-c', 'events', 0, 3],
        ])
        calls.length = 0
        await assert.rejects(processor.handleBatch?.([message('d', 4), message('b', 5)]) as Promise<void>)
        assert.deepEqual(calls, [], 'no handler ran')
        assert.equal(count(db, 'orders'), 3)
        assert.equal(count(db, 'k_entity_outbox_inbox'), 3)
        // The largest batch the option allows fits one statement.
        const large = Array.from({ length: 10_000 }, (_, i) => message(`x${i}`, 100 + i))
        await outbox.processor({ db, handler: () => {} }).handleBatch?.(large)
        assert.equal(count(db, 'k_entity_outbox_inbox'), 10_003)
      }),
    )

    it(
      'a dead letter stores the message with its inbox row, once; the message is then skipped',
      withDatabase(driver, async (db, outbox) => {
        const processor = outbox.processor({ db, handler: () => {} })
        const consumed = message('dead', 3)
        const dead: DeadMessage<Event> = {
          message: consumed,
          topic: 'events',
          partition: 0,
          offset: 3n,
          key: Buffer.from('dead'),
          value: Buffer.from('{"id":"dead"}'),
          error: new Error('cannot apply'),
          attempts: 5,
        }
        await processor.deadLetter(dead)
        await processor.deadLetter(dead)
        await processor.deadLetter({ ...dead, message: undefined, offset: 9n })
        assert.equal(await processor.handle(consumed), 'duplicate')
        const rows = db
          .prepare(
            'SELECT error, attempts, "offset", key, headers FROM k_entity_outbox_consumer_dead_letters ORDER BY id',
          )
          .all() as {
          error: string
          attempts: number
          offset: number
          key: Uint8Array
          headers: string | null
        }[]
        assert.equal(
          rows.length,
          2,
          'the repeat of the first is skipped; the unreadable one keyed by its offset',
        )
        assert.equal(rows[0]?.error, 'cannot apply')
        assert.equal(Number(rows[0]?.attempts), 5)
        assert.equal(Buffer.from(rows[0]?.key as Uint8Array).toString(), 'dead')
        assert.match(String(rows[0]?.headers), /ke-message-id/)
        assert.equal(Number(rows[1]?.offset), 9)
      }),
    )

    it(
      'an async handler is refused at once, a handler returning a promise fails its message, both with KE_INVALID_ARGUMENT',
      withDatabase(driver, async (db, outbox) => {
        const why =
          /the handler must be synchronous, \(message, db, topics\) => void: its transaction is open on the app's one database handle/
        assert.throws(
          () => outbox.consume(events, { groupId: 'g', db, kafka, handler: async () => {} }),
          (error: unknown) =>
            isKEntityError(error, 'KE_INVALID_ARGUMENT') &&
            /an async function/.test((error as Error).message) &&
            why.test((error as Error).message),
        )
        const processor = outbox.processor({
          db,
          handler: ((consumed: ConsumedMessage<Event>, tx: Handle) => {
            insertOrder(tx, (consumed.value as Event).id)
            return Promise.reject(new Error('never seen'))
          }) as never,
        })
        await assert.rejects(
          processor.handle(message('p', 1)),
          (error: unknown) =>
            isKEntityError(error, 'KE_INVALID_ARGUMENT') &&
            /returned a promise/.test((error as Error).message),
        )
        assert.equal(count(db, 'orders'), 0, 'rolled back')
        assert.equal(count(db, 'k_entity_outbox_inbox'), 0)
      }),
    )

    it(
      "a transaction the app left open on the handle makes the message wait without using up an attempt; outbox.transaction()'s are waited for",
      withDatabase(driver, async (db, outbox) => {
        const processor = outbox.processor({
          db,
          handler: (consumed, tx) => insertOrder(tx, (consumed.value as Event).id),
        })
        db.exec('BEGIN')
        let failure: unknown
        await processor.handle(message('w', 1)).catch((error: unknown) => {
          failure = error
        })
        db.exec('ROLLBACK')
        assert.ok(failure instanceof KEntityError && failure.retryable, String(failure))
        assert.equal(processor.countsAsAttempt?.(failure), false)
        // An async outbox.transaction() awaiting: the inbox's transaction runs after it commits.
        const sqlite = outbox as unknown as {
          transaction(db: Handle, fn: (tx: Handle) => Promise<void>): Promise<void>
        }
        let release = () => {}
        const open = sqlite.transaction(db, async (tx) => {
          insertOrder(tx, 'app')
          await new Promise<void>((resolve) => {
            release = resolve
          })
        })
        const handled = processor.handle(message('w', 1))
        await new Promise((resolve) => setTimeout(resolve, 20))
        assert.equal(count(db, 'k_entity_outbox_inbox'), 0, 'still waiting for the app transaction')
        release()
        await open
        assert.equal(await handled, undefined)
        assert.equal(count(db, 'orders'), 2)
      }),
    )

    it(
      'purgeInbox() deletes expired rows in batches until none is left',
      withDatabase(driver, async (db, outbox) => {
        const processor = outbox.processor({ db, handler: () => {} })
        await processor.handleBatch?.(Array.from({ length: 7 }, (_, i) => message(`e${i}`, i)))
        db.exec('UPDATE k_entity_outbox_inbox SET expires_at = expires_at - 8 * 86400000 WHERE "offset" < 5')
        assert.equal(await outbox.purgeInbox(db, { batchSize: 2 }), 5)
        assert.equal(count(db, 'k_entity_outbox_inbox'), 2)
        assert.equal(await outbox.purgeInbox(db), 0)
      }),
    )
  })
}

describe('sqliteInbox.isDuplicate()', () => {
  it("knows the inbox key's violation from both drivers, not another table's", () => {
    const message =
      'UNIQUE constraint failed: k_entity_outbox_inbox.consumer_group, k_entity_outbox_inbox.message_key'
    assert.equal(
      sqliteInbox.isDuplicate(Object.assign(new Error(message), { code: 'SQLITE_CONSTRAINT_PRIMARYKEY' })),
      true,
    )
    assert.equal(sqliteInbox.isDuplicate(Object.assign(new Error(message), { errcode: 1555 })), true)
    assert.equal(
      sqliteInbox.isDuplicate(
        new Error('wrapped', { cause: Object.assign(new Error(message), { errcode: 1555 }) }),
      ),
      true,
    )
    assert.equal(
      sqliteInbox.isDuplicate(
        Object.assign(new Error('UNIQUE constraint failed: orders.id'), { errcode: 1555 }),
      ),
      false,
    )
    assert.equal(sqliteInbox.isDuplicate(Object.assign(new Error(message), { errcode: 19 })), false)
  })
})

// Types only (never run): the SQLite outbox's consume() takes a synchronous handler.
export function typeChecks(outbox: BetterSqliteOutbox<typeof topics>, db: Database.Database): void {
  outbox.consume(events, {
    groupId: 'g',
    db,
    handler: (message, tx, producers) => {
      const id: string | undefined = message.value?.id
      tx.prepare('INSERT INTO orders (id) VALUES (?)').run(id)
      producers.events.produce({ id: `${id}-next` })
    },
  })
  // An expression body returning the driver's result is fine.
  outbox.consume(events, {
    groupId: 'g',
    db,
    handler: (message, tx) => tx.prepare('SELECT ?').run(message.offset),
  })
  outbox.consume(events, {
    groupId: 'g',
    db,
    // @ts-expect-error an async handler does not compile on SQLite
    handler: async (_message, tx) => {
      tx.exec('SELECT 1')
    },
  })
}
