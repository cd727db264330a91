import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { defineTopic, ErrorCodes } from '../src/index.ts'
import { countRows, DATABASE_URL, dropSchema, uniqueName } from './support/env.ts'

const orderCreated = defineTopic<{ id: string; amount?: unknown; self?: unknown }>({
  name: 'orders',
  key: (m) => m.id,
})
const audit = defineTopic<string>({ name: 'audit', outbox: false })
const schema = uniqueName('ke_bad')
const outbox = createPgOutbox({ topics: { orderCreated, audit }, schema })
const client = new pg.Client({ connectionString: DATABASE_URL })
const code = (expected: string) => (error: unknown) => {
  assert.equal((error as { code?: string }).code, expected, String(error))
  return true
}

describe('bad input leaves the outbox untouched', () => {
  before(async () => {
    await client.connect()
    await outbox.migrate(DATABASE_URL)
  })
  after(async () => {
    await client.end()
    await dropSchema(schema)
  })

  it('refuses to produce outside a transaction', async () => {
    await assert.rejects(outbox.in(client).orderCreated.produce({ id: 'a' }), code(ErrorCodes.NO_TRANSACTION))
    assert.equal(await countRows(schema), 0)
  })

  it('refuses to produce in a failed transaction: at produce() when writing at once, else at COMMIT', async () => {
    const eager = createPgOutbox({ topics: { orderCreated, audit }, schema, writeWithCommit: false })
    await client.query('BEGIN')
    await client.query('SELECT 1/0').catch(() => {})
    await assert.rejects(
      eager.in(client).orderCreated.produce({ id: 'a' }),
      code(ErrorCodes.TRANSACTION_ABORTED),
    )
    await client.query('ROLLBACK')
    // node-postgres rejects the failed query before it reads the server's new transaction state,
    // so produce() may still see the transaction open: the held write then fails the COMMIT.
    for (let i = 0; i < 5; i++) {
      await client.query('BEGIN')
      await client.query('SELECT 1/0').catch(() => {})
      const held = await outbox
        .in(client)
        .orderCreated.produce({ id: 'a' })
        .then(
          () => true,
          (error: unknown) => code(ErrorCodes.TRANSACTION_ABORTED)(error) && false,
        )
      if (held) await assert.rejects(client.query('COMMIT'), code(ErrorCodes.TRANSACTION_ABORTED))
      else await client.query('ROLLBACK')
      assert.equal(client.getTransactionStatus(), 'I')
    }
    assert.equal(await countRows(schema), 0)
  })

  it('rejects unserializable payloads before writing anything, even mid-batch', async () => {
    const circular: { id: string; self?: unknown } = { id: 'c' }
    circular.self = circular
    await client.query('BEGIN')
    await assert.rejects(
      outbox.in(client).orderCreated.produce({ id: 'a', amount: 1n }),
      code(ErrorCodes.SERIALIZATION_FAILED),
    )
    await assert.rejects(
      outbox.in(client).orderCreated.produceMany([{ id: 'ok' }, circular]),
      code(ErrorCodes.SERIALIZATION_FAILED),
    )
    await client.query('COMMIT')
    assert.equal(await countRows(schema), 0)
  })

  it('rejects a pool, a non-client and a non-array batch with a hint', async () => {
    const pool = new pg.Pool({ connectionString: DATABASE_URL })
    assert.throws(() => outbox.in(pool as never), /check out a client/i)
    await pool.end()
    assert.throws(() => outbox.in({} as never), /expected a node-postgres Client/)
    await client.query('BEGIN')
    await assert.rejects(outbox.in(client).orderCreated.produceMany('x' as never), /needs an array/)
    await client.query('ROLLBACK')
  })

  it('says so when a direct topic has no Kafka configured', async () => {
    await assert.rejects(outbox.in(client).audit.produce('hello'), code(ErrorCodes.NO_TRANSPORT))
  })

  it('validates relay and Kafka options', () => {
    assert.throws(() => outbox.relay(), /the relay needs Kafka/)
    assert.throws(() => outbox.relay({ kafka: { brokers: [] } }), /non-empty array/)
    assert.throws(() => outbox.relay({ kafka: { brokers: ['localhost'] } }), /is not 'host:port'/)
    assert.throws(
      () => outbox.relay({ kafka: { brokers: ['127.0.0.1:9092'] }, claimTimeout: 5 }),
      /claimTimeout/,
    )
    assert.throws(
      () => createPgOutbox({ topics: { orderCreated }, kafka: { brokers: 'x' as never } }),
      /kafka\.brokers/,
    )
  })

  it('explains a missing schema instead of failing obscurely', async (t) => {
    const missing = createPgOutbox({ topics: { orderCreated }, schema: uniqueName('ke_missing') })
    const relay = missing.relay({
      connection: DATABASE_URL,
      kafka: { send: async () => {}, close: async () => {} },
    })
    t.after(() => relay.stop())
    await assert.rejects(relay.runOnce(), (error: Error) => {
      code(ErrorCodes.NOT_MIGRATED)(error)
      return /run outbox\.migrate\(\)/.test(error.message)
    })
    await relay.stop()
  })

  it('prints the migration as SQL', () => {
    const sql = outbox.migrationSql()
    assert.match(sql, new RegExp(`CREATE TABLE "${schema}"\\."outbox"`))
    assert.match(sql, /^BEGIN;/)
    assert.match(sql, /COMMIT;\n$/)
  })
})

describe('hostile strings are data, never SQL', () => {
  const injection = `x'); DROP TABLE "k_entity"."outbox"; --`
  const hostileSchema = uniqueName('ke_hostile')
  const topic = defineTopic<{ id: string }>({ name: 'hostile', key: (m) => m.id })
  const hostile = createPgOutbox({ topics: { topic }, schema: hostileSchema })
  const hostileClient = new pg.Client({ connectionString: DATABASE_URL })

  before(async () => {
    await hostileClient.connect()
    await hostile.migrate(DATABASE_URL)
  })
  after(async () => {
    await hostileClient.end()
    await dropSchema(hostileSchema)
  })

  it('stores injection strings in keys, header names, header values and payloads verbatim', async () => {
    await hostileClient.query('BEGIN')
    await hostile.in(hostileClient).topic.produce({ id: injection }, { headers: { [injection]: injection } })
    await hostileClient.query('COMMIT')
    const { rows } = await hostileClient.query(`SELECT key, value, headers FROM "${hostileSchema}".outbox`)
    assert.equal(rows.length, 1)
    assert.equal(rows[0].key.toString(), injection)
    assert.equal(JSON.parse(rows[0].value.toString()).id, injection)
    assert.equal(rows[0].headers[0][0], injection)
    assert.equal(Buffer.from(rows[0].headers[0][1], 'base64').toString(), injection)
  })

  it('rejects injection strings as topic, schema and table names before touching the database', () => {
    assert.throws(() => defineTopic({ name: injection }), code(ErrorCodes.INVALID_TOPIC))
    assert.throws(
      () => createPgOutbox({ topics: { topic }, schema: injection }),
      code(ErrorCodes.INVALID_IDENTIFIER),
    )
    assert.throws(
      () => createPgOutbox({ topics: { topic }, table: injection }),
      code(ErrorCodes.INVALID_IDENTIFIER),
    )
  })

  it('rejects a dead-letter id filter carrying SQL', async () => {
    await assert.rejects(
      hostile.deadLetters(DATABASE_URL).purge({ ids: [`1) OR (1=1`] }),
      /array of id strings/,
    )
  })
})

describe('wrong broker address and calls after stop()', () => {
  it('a relay pointed at a port where no broker listens keeps the messages and reports transport errors', async (t) => {
    const schema = uniqueName('ke_nobroker')
    const outbox = createPgOutbox({
      topics: { orderCreated },
      schema,
      kafka: { brokers: ['127.0.0.1:1'], requestTimeout: 1000, retries: 2 },
    })
    await outbox.migrate(DATABASE_URL)
    const c = new pg.Client({ connectionString: DATABASE_URL })
    t.after(() => c.end().catch(() => {}))
    await c.connect()
    await c.query('BEGIN')
    await outbox.in(c).orderCreated.produce({ id: 'kept' })
    await c.query('COMMIT')
    await c.end()
    const relay = outbox.relay({ connection: DATABASE_URL })
    t.after(() => relay.stop())
    await assert.rejects(relay.runOnce(), /Kafka did not acknowledge a batch of 1/)
    await relay.stop()
    assert.equal(await countRows(schema), 1, 'the message stays in the outbox')
    await assert.rejects(relay.runOnce(), code(ErrorCodes.RELAY_STOPPED))
    await assert.rejects(relay.start(), code(ErrorCodes.RELAY_STOPPED))
    await dropSchema(schema)
  })
})
