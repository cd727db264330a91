import assert from 'node:assert/strict'
import { DatabaseSync } from 'node:sqlite'
import { after, describe, it } from 'node:test'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createNodeSqliteOutbox } from '../src/adapters/node-sqlite/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import type { DeadLetterFilter } from '../src/core/dead-letters.ts'
import { defineTopic, ErrorCodes, isKEntityError } from '../src/index.ts'
import { dropDatabase, MYSQL_URL, withMysql } from './contract/mysql-support.ts'
import { DATABASE_URL, dropSchema, uniqueName, withClient } from './support/env.ts'

/**
 * Input that a real deployment can hand the outbox by mistake (or on purpose): a claimTimeout
 * the database cannot take, a reserved schema, a dead-letter filter whose getters answer
 * differently the second time they are read.
 */

const topics = () => ({ t: defineTopic<string>({ name: 'bounds-test' }) })
const kafka = { brokers: ['127.0.0.1:1'] }
const cleanups: (() => Promise<void>)[] = []

/** Answers `first` the first time it is read, `then` every time after. */
function shifty<T>(first: T, then: T): DeadLetterFilter {
  let reads = 0
  const filter = {}
  Object.defineProperty(filter, 'ids', { enumerable: true, get: () => (reads++ === 0 ? first : then) })
  return filter as DeadLetterFilter
}

function shiftyLimit(first: number, then: number): DeadLetterFilter {
  let reads = 0
  const filter = {}
  Object.defineProperty(filter, 'limit', { enumerable: true, get: () => (reads++ === 0 ? first : then) })
  return filter as DeadLetterFilter
}

describe('input bounds', () => {
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  })

  it('claimTimeout above 24 h is refused with the reason, on every dialect', () => {
    const outboxes = [
      createPgOutbox({ topics: topics(), kafka }),
      createMysqlOutbox({ topics: topics(), kafka }),
    ]
    for (const outbox of outboxes) {
      assert.throws(
        () => outbox.relay({ connection: 'postgres://x@127.0.0.1:1/x' as never, claimTimeout: 1e12 }),
        (error: unknown) =>
          isKEntityError(error, ErrorCodes.INVALID_ARGUMENT) &&
          /at most 86400000 ms \(24 h\)/.test(error.message) &&
          /stalled relay/.test(error.message),
      )
      // 24 h itself is fine.
      const relay = outbox.relay({
        connection: 'postgres://x@127.0.0.1:1/x' as never,
        claimTimeout: 86_400_000,
      })
      void relay.stop()
    }
  })

  it('reserved schema names are refused, whatever the dialect', () => {
    const reserved = [
      'information_schema',
      'pg_catalog',
      'pg_toast',
      'pg_anything',
      'mysql',
      'performance_schema',
      'sys',
    ]
    for (const schema of reserved) {
      for (const create of [
        () => createPgOutbox({ topics: topics(), schema }),
        () => createMysqlOutbox({ topics: topics(), schema }),
        () => createNodeSqliteOutbox({ topics: topics(), schema }),
      ]) {
        assert.throws(create, (error: unknown) => {
          return (
            isKEntityError(error, ErrorCodes.INVALID_IDENTIFIER) &&
            error.message.includes('belongs to the database server')
          )
        })
      }
    }
    // Names merely containing those words stay allowed.
    createPgOutbox({ topics: topics(), schema: 'my_sys' })
    createMysqlOutbox({ topics: topics(), schema: 'app_mysql' })
  })

  it('a schema option is read once', () => {
    let reads = 0
    const options = {
      topics: topics(),
      get schema() {
        return reads++ === 0 ? 'fine_schema' : 'pg_catalog'
      },
    }
    const outbox = createPgOutbox(options)
    assert.equal(outbox.outbox.table.schema, 'fine_schema')
  })

  it('SQLite: the dead-letter filter that was checked is the one the SQL uses', async () => {
    const db = new DatabaseSync(':memory:')
    const outbox = createNodeSqliteOutbox({ topics: topics(), schema: 'bounds' })
    await outbox.migrate(db)
    for (const id of [1, 2, 3]) {
      db.exec(
        `INSERT INTO "bounds_outbox_dead_letters" (message_id, topic, attempts, errors, created_at) VALUES (${id}, 't', 1, '[]', 0)`,
      )
    }
    const letters = outbox.deadLetters(db)
    const [first] = await letters.list()
    assert.ok(first)
    // Checked: one id. Read again by the SQL, the getter would inject "everything".
    assert.equal(await letters.purge(shifty([first.id], ['0) OR (1=1'])), 1)
    assert.equal(await letters.count(), 2)
    assert.equal((await letters.list(shiftyLimit(1, 10_000_000))).length, 1)
    db.close()
  })

  it('MariaDB: the dead-letter filter that was checked is the one the SQL uses', async () => {
    const database = uniqueName('ke_bounds')
    cleanups.push(() => dropDatabase(database))
    const outbox = createMysqlOutbox({ topics: topics(), schema: database })
    await outbox.migrate(MYSQL_URL)
    await withMysql((c) =>
      c.query(
        `INSERT INTO \`${database}\`.outbox_dead_letters (message_id, topic, attempts, errors, created_at) VALUES (1, 't', 1, '[]', UTC_TIMESTAMP(6)), (2, 't', 1, '[]', UTC_TIMESTAMP(6)), (3, 't', 1, '[]', UTC_TIMESTAMP(6))`,
      ),
    )
    const letters = outbox.deadLetters(MYSQL_URL)
    const [first] = await letters.list()
    assert.ok(first)
    assert.equal(await letters.purge(shifty([first.id], ['0) OR (1=1'])), 1)
    assert.equal(await letters.count(), 2)
    assert.equal((await letters.list(shiftyLimit(1, 10_000_000))).length, 1)
  })

  it('PostgreSQL: the dead-letter filter that was checked is the one the SQL uses', async () => {
    const schema = uniqueName('ke_bounds')
    cleanups.push(() => dropSchema(schema))
    const outbox = createPgOutbox({ topics: topics(), schema })
    await outbox.migrate(DATABASE_URL)
    await withClient((c) =>
      c.query(
        `INSERT INTO "${schema}".outbox_dead_letters (message_id, topic, attempts, errors, created_at) SELECT g, 't', 1, '[]', now() FROM generate_series(1, 3) AS g`,
      ),
    )
    const letters = outbox.deadLetters(DATABASE_URL)
    const all = await letters.list()
    const [first, second] = all
    assert.ok(first && second)
    assert.equal(await letters.purge(shifty([first.id], [first.id, second.id])), 1)
    assert.equal(await letters.count(), 2)
    assert.equal((await letters.list(shiftyLimit(1, 10_000))).length, 1)
  })
})
