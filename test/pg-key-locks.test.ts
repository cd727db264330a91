// Issue 19: producers' key locks are bounded per transaction (slots of the key's hash), so a
// transaction with tens of thousands of distinct keys stays within PostgreSQL's shared lock table.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { KEY_LOCK_SLOTS } from '../src/dialects/postgres/names.ts'
import { defineTopic } from '../src/index.ts'
import { DATABASE_URL, dropSchema, uniqueName } from './support/env.ts'

const schema = uniqueName('ke_key_locks')
const outbox = createPgOutbox({
  topics: { events: defineTopic<string>({ name: 'ke-key-locks', key: (v) => v }) },
  schema,
})
const client = new pg.Client({ connectionString: DATABASE_URL })

describe('PostgreSQL key locks', () => {
  before(async () => {
    await client.connect()
    await outbox.migrate(DATABASE_URL)
  })
  after(async () => {
    await client.end()
    await dropSchema(schema)
  })

  it('produceMany with 20,000 distinct keys takes at most one lock per slot and commits', async () => {
    const keys = Array.from({ length: 20_000 }, (_, i) => `customer-${i}`)
    await client.query('BEGIN')
    await outbox.in(client).events.produceMany(keys)
    const locks = await client.query(
      `SELECT count(*)::int AS n FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'`,
    )
    await client.query('COMMIT')
    const held = locks.rows[0].n as number
    assert.ok(held > 0 && held <= KEY_LOCK_SLOTS, `${held} advisory locks, at most ${KEY_LOCK_SLOTS}`)
    const stored = await client.query(`SELECT count(*)::int AS n FROM "${schema}".outbox`)
    assert.equal(stored.rows[0].n, keys.length)
  })

  it('two transactions producing the same key are still serialised', async () => {
    const other = new pg.Client({ connectionString: DATABASE_URL })
    await other.connect()
    try {
      await client.query('BEGIN')
      await outbox.in(client).events.produce('same-key')
      await other.query('BEGIN')
      await other.query(`SET LOCAL lock_timeout = '300ms'`)
      await assert.rejects(outbox.in(other).events.produce('same-key'), (error: { code?: string }) => {
        assert.equal(error.code, '55P03')
        return true
      })
      await other.query('ROLLBACK')
      await client.query('COMMIT')
    } finally {
      await other.end()
    }
  })
})
