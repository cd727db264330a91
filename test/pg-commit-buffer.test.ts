// node-postgres `transaction()` and `in(client)` write their messages with the app's next query or
// the COMMIT. Delivery through this path is covered by the adapter contract (harness-pg.ts); this
// file checks what is particular to it: the bound values, the round trips saved, savepoints,
// failures, and the app's own COMMIT and ROLLBACK on `in(client)`.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { defineTopic, ErrorCodes } from '../src/index.ts'
import { DATABASE_URL, dropSchema, recordQueries, uniqueName, withClient } from './support/env.ts'
import { orderTopic } from './support/workload.ts'

/** An orders table beside the outbox of `schema` (both created before the suite), and what they hold. */
function ordersFixture(schema: string, outbox: { migrate(url: string): Promise<unknown> }) {
  before(async () => {
    await outbox.migrate(DATABASE_URL)
    await withClient((client) => client.query(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY)`))
  })
  return {
    insertOrder: (client: pg.ClientBase, id: string) =>
      client.query(`INSERT INTO "${schema}".orders (id) VALUES ($1)`, [id]),
    storedOrders: () =>
      withClient(async (client) =>
        (await client.query(`SELECT id FROM "${schema}".orders ORDER BY id`)).rows.map((r) => r.id),
      ),
    storedMessages: () =>
      withClient(async (client) =>
        (await client.query(`SELECT value FROM "${schema}".outbox ORDER BY id`)).rows.map(
          (r) => JSON.parse(r.value.toString('utf8')).orderId as string,
        ),
      ),
    reset: () => withClient((client) => client.query(`TRUNCATE "${schema}".outbox, "${schema}".orders`)),
  }
}

describe('pg transaction(): messages ride on the next query or the COMMIT', () => {
  const schema = uniqueName('ke_commit_buffer')
  const topics = { orders: orderTopic('unused-commit-buffer') }
  const outbox = createPgOutbox({ topics, schema })
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
  const event = (orderId: string) => ({ orderId, customer: 'alice', seq: 1 })
  const { insertOrder, storedOrders, storedMessages, reset } = ordersFixture(schema, outbox)

  after(async () => {
    await pool.end()
    await dropSchema(schema)
  })

  it('a message produced last adds no round trip: BEGIN, the order, then INSERT + COMMIT in one query', async () => {
    await reset()
    const queries = recordQueries()
    const sent = queries.texts
    try {
      await outbox.transaction(pool, async (client, topics) => {
        await insertOrder(client, 'o-1')
        await topics.orders.produce(event('o-1'))
      })
    } finally {
      queries.stop()
    }
    assert.equal(sent.length, 3, `round trips: ${JSON.stringify(sent)}`)
    assert.equal(sent[0], 'BEGIN')
    // The INSERT's Bind/Execute and the COMMIT, behind one Sync.
    assert.equal(sent[2], '<HeldWritesQuery>')
    assert.deepEqual(await storedOrders(), ['o-1'])
    assert.deepEqual(await storedMessages(), ['o-1'])
  })

  it('a query after produce() sends the held message first, so savepoints keep or drop it as usual', async () => {
    await reset()
    await outbox.transaction(pool, async (client, topics) => {
      await topics.orders.produce(event('m-1 kept'))
      await client.query('SAVEPOINT s')
      await topics.orders.produce(event('m-2 rolled back'))
      await client.query('ROLLBACK TO SAVEPOINT s')
      await topics.orders.produceMany([event('m-3 kept'), event('m-4 kept')])
      await client.query('SAVEPOINT t')
      await topics.orders.produce(event('m-5 kept'))
      await client.query('RELEASE SAVEPOINT t')
      await insertOrder(client, 'o-2')
    })
    assert.deepEqual(await storedMessages(), ['m-1 kept', 'm-3 kept', 'm-4 kept', 'm-5 kept'])
    assert.deepEqual(await storedOrders(), ['o-2'])
  })

  it('a write that fails at COMMIT rolls back the business row too and rejects with the database error', async () => {
    await reset()
    await withClient((client) => client.query(`ALTER TABLE "${schema}".outbox RENAME TO outbox_away`))
    try {
      await assert.rejects(
        outbox.transaction(pool, async (client, topics) => {
          await insertOrder(client, 'o-3')
          await topics.orders.produce(event('lost?'))
        }),
        // The database's error, or the outbox's explanation of it.
        (error: { code?: string }) => error.code === '42P01' || error.code === 'KE_NOT_MIGRATED',
      )
      // The flush before a later query fails the same way, and its error is the one reported.
      await assert.rejects(
        outbox.transaction(pool, async (client, topics) => {
          await topics.orders.produce(event('lost?'))
          await insertOrder(client, 'o-4').catch(() => {})
        }),
        (error: { code?: string }) => error.code === '42P01' || error.code === 'KE_NOT_MIGRATED',
      )
    } finally {
      await withClient((client) => client.query(`ALTER TABLE "${schema}".outbox_away RENAME TO outbox`))
    }
    assert.deepEqual(await storedOrders(), [])
    assert.deepEqual(await storedMessages(), [])
  })

  it('the topics of an ended transaction() are refused, even while its client runs another transaction', async () => {
    await reset()
    let leaked: Parameters<Parameters<typeof outbox.transaction>[1]>[1] | undefined
    await outbox.transaction(pool, async (_client, topics) => {
      leaked = topics
    })
    const client = await pool.connect()
    try {
      await client.query('BEGIN')
      await assert.rejects(
        (leaked as NonNullable<typeof leaked>).orders.produce(event('late')),
        (error: { code?: string }) => error.code === ErrorCodes.NO_TRANSACTION,
      )
      await client.query('COMMIT')
    } finally {
      client.release()
    }
    assert.deepEqual(await storedMessages(), [])
  })

  it('a rollback leaves nothing, not even a prepared statement counted but never sent', async () => {
    await reset()
    // A fresh outbox and connection: the first write on it is the one rolled back.
    const fresh = createPgOutbox({ topics, schema })
    const freshPool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
    let seen: pg.PoolClient | undefined
    try {
      await assert.rejects(
        fresh.transaction(freshPool, async (client, topics) => {
          seen = client
          await insertOrder(client, 'o-5')
          await topics.orders.produce(event('never'))
          throw new Error('on purpose')
        }),
        /on purpose/,
      )
      await fresh.transaction(freshPool, async (client, topics) => {
        assert.equal(client, seen, 'the same connection')
        await topics.orders.produce(event('after the rollback'))
      })
    } finally {
      await freshPool.end()
    }
    assert.deepEqual(await storedOrders(), [])
    assert.deepEqual(await storedMessages(), ['after the rollback'])
  })

  it('a connection that lost its prepared statement fails that transaction cleanly (KE_STORE_FAILED, retryable); the next one works', async () => {
    await reset()
    // Without NOTIFY every write has the same statement text, so the second write reuses the first's.
    const outbox = createPgOutbox({ topics, schema, notify: false })
    // Its own connection: the other tests' statements on the shared one would be lost too.
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
    try {
      await outbox.transaction(pool, async (client, topics) => {
        await insertOrder(client, 'o-6')
        await topics.orders.produce(event('p-1'))
      })
      // What a transaction-mode pooler or DISCARD ALL does to the session behind the client.
      await outbox.transaction(pool, async (client) => {
        await client.query('DEALLOCATE ALL')
      })
      await assert.rejects(
        outbox.transaction(pool, async (client, topics) => {
          await insertOrder(client, 'o-7')
          await topics.orders.produce(event('p-2 rolled back'))
        }),
        (error: { code?: string; retryable?: boolean; message: string }) =>
          error.code === ErrorCodes.STORE_FAILED &&
          error.retryable === true &&
          /writeWithCommit: false/.test(error.message),
      )
      await outbox.transaction(pool, async (client, topics) => {
        await insertOrder(client, 'o-8')
        await topics.orders.produce(event('p-3'))
      })
    } finally {
      await pool.end()
    }
    assert.deepEqual(await storedOrders(), ['o-6', 'o-8'])
    assert.deepEqual(await storedMessages(), ['p-1', 'p-3'])
  })

  it('writeWithCommit: false writes at produce(), one round trip each, and never prepares', async () => {
    await reset()
    const eager = createPgOutbox({ topics, schema, writeWithCommit: false })
    const eagerPool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
    try {
      await eager.transaction(eagerPool, async (client, topics) => {
        await insertOrder(client, 'o-9')
        await topics.orders.produce(event('e-1'))
        const statements = await client.query(
          'SELECT count(*)::int AS n FROM pg_prepared_statements WHERE NOT from_sql',
        )
        assert.equal(statements.rows[0].n, 1, 'only the driver-level statement of the INSERT')
        assert.deepEqual(await storedMessages(), [], 'not visible before COMMIT')
      })
    } finally {
      await eagerPool.end()
    }
    assert.deepEqual(await storedMessages(), ['e-1'])
    assert.throws(
      () => createPgOutbox({ topics, schema, writeWithCommit: 'yes' as never }),
      /writeWithCommit/,
    )
  })

  it('stores the same bytes as a parameterised INSERT would: tricky keys, values and headers, one and many', async () => {
    const tricky = ["it's", "back\\slash \\x41 E'\\'", '$1 $$ $tag$ -- /* ; {"a",b} NULL', 'ключ-🔑-ü', '']
    const bytes = [
      Buffer.from([0, 1, 0x27, 0x5c, 0x22, 0x7b, 0xff, 0x80]),
      Buffer.alloc(0),
      Buffer.from("'; DROP TABLE x; --"),
    ]
    interface Raw {
      key: string | Buffer | null
      value: Buffer
      headers: Record<string, string | Buffer | null>
    }
    const raw = defineTopic<Raw>({
      name: 'unused-commit-buffer-raw',
      key: (message) => message.key,
      headers: (message) => message.headers,
      serializer: { name: 'raw', serialize: (message) => message.value },
    })
    const messages: Raw[] = [
      ...tricky.map((text, i) => ({
        key: text,
        value: bytes[i % bytes.length] as Buffer,
        headers: { [text || 'empty']: text, bin: bytes[i % bytes.length] as Buffer, none: null },
      })),
      { key: null, value: Buffer.from('no key'), headers: {} },
      { key: bytes[0] as Buffer, value: Buffer.alloc(300, 0x5c), headers: { q: '"\\' } },
    ]
    const rawOutbox = createPgOutbox({ topics: { raw }, schema })
    const eagerOutbox = createPgOutbox({ topics: { raw }, schema, writeWithCommit: false })
    const rows = async () =>
      withClient(async (client) => {
        const result = await client.query(
          `SELECT topic, key, value, headers, ordering_hash FROM "${schema}".outbox ORDER BY id`,
        )
        await client.query(`TRUNCATE "${schema}".outbox`)
        return result.rows
      })
    await reset()
    const produceAll = async (through: typeof rawOutbox) => {
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        for (const message of messages) await through.in(client).raw.produce(message)
        await through.in(client).raw.produceMany(messages)
        await client.query('COMMIT')
      } finally {
        client.release()
      }
      return rows()
    }
    // The reference: eager writes bind the same statements as ordinary node-postgres parameters.
    const expected = await produceAll(eagerOutbox)
    await rawOutbox.transaction(pool, async (_client, topics) => {
      for (const message of messages) await topics.raw.produce(message)
      await topics.raw.produceMany(messages)
    })
    const held = await rows()
    assert.equal(held.length, messages.length * 2)
    assert.deepEqual(held, expected)
    assert.deepEqual(await produceAll(rawOutbox), expected, 'in(client) with held writes')
  })

  it('a client in node-postgres pipeline mode writes at produce() and commits as usual', async () => {
    await reset()
    const pipelinePool = new pg.Pool({
      connectionString: DATABASE_URL,
      max: 1,
      pipeline: true,
    } as pg.PoolConfig)
    try {
      await outbox.transaction(pipelinePool, async (client, topics) => {
        await insertOrder(client, 'o-10')
        await topics.orders.produce(event('pl-1'))
      })
      await assert.rejects(
        outbox.transaction(pipelinePool, async (client, topics) => {
          await insertOrder(client, 'o-11')
          await topics.orders.produce(event('pl-2 rolled back'))
          throw new Error('on purpose')
        }),
        /on purpose/,
      )
    } finally {
      await pipelinePool.end()
    }
    assert.deepEqual(await storedOrders(), ['o-10'])
    assert.deepEqual(await storedMessages(), ['pl-1'])
  })

  for (const writeWithCommit of [true, false]) {
    it(`a connection lost before the COMMIT rejects the transaction instead of crashing or hanging, and stores nothing (writeWithCommit: ${writeWithCommit})`, async () => {
      await reset()
      const lossy = createPgOutbox({ topics, schema, writeWithCommit })
      const doomedPool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
      // A lost connection is also reported on the idle client; the pool discards it.
      doomedPool.on('error', () => {})
      try {
        await assert.rejects(
          lossy.transaction(doomedPool, async (client, topics) => {
            const { rows } = await client.query('SELECT pg_backend_pid() AS pid')
            await insertOrder(client, 'o-12')
            // With writeWithCommit, held until the COMMIT, which goes to a connection the server closed.
            await topics.orders.produce(event('never committed'))
            await withClient((admin) => admin.query('SELECT pg_terminate_backend($1)', [rows[0].pid]))
          }),
        )
        // The pool still works: the broken client was not handed out again.
        await lossy.transaction(doomedPool, async (client, topics) => {
          await insertOrder(client, 'o-13')
          await topics.orders.produce(event('after the loss'))
        })
      } finally {
        await doomedPool.end()
      }
      assert.deepEqual(await storedOrders(), ['o-13'])
      assert.deepEqual(await storedMessages(), ['after the loss'])
    })
  }
})

describe("pg in(client, { holdWrites: true }): messages ride on the app's next query or its own COMMIT", () => {
  const schema = uniqueName('ke_commit_in')
  const topics = { orders: orderTopic('unused-commit-in') }
  // Without NOTIFY every write has the same statement text (the lost-statement test needs that).
  const outbox = createPgOutbox({ topics, schema, notify: false })
  const clients: pg.Client[] = []
  const connect = async () => {
    const client = new pg.Client({ connectionString: DATABASE_URL })
    await client.connect()
    clients.push(client)
    return client
  }
  const event = (orderId: string) => ({ orderId, customer: 'bob', seq: 1 })
  const held = (client: pg.Client) => outbox.in(client, { holdWrites: true })
  const { insertOrder, storedOrders, storedMessages, reset } = ordersFixture(schema, outbox)
  const withCallback = (client: pg.Client, text: string) =>
    new Promise<pg.QueryResult>((resolve, reject) =>
      client.query(text, (error: Error | null, result: pg.QueryResult) =>
        error ? reject(error) : resolve(result),
      ),
    )

  after(async () => {
    for (const client of clients) await client.end().catch(() => {})
    await dropSchema(schema)
  })

  it('a message produced last adds no round trip: BEGIN, the order, then INSERT + COMMIT in one query; COMMIT answers as usual', async () => {
    await reset()
    const queries = recordQueries()
    const sent = queries.texts
    let committed: pg.QueryResult
    const client = await connect()
    try {
      await client.query('BEGIN')
      await insertOrder(client, 'o-1')
      await held(client).orders.produce(event('o-1'))
      committed = await client.query('COMMIT')
    } finally {
      queries.stop()
    }
    assert.deepEqual(sent.slice(0, 1), ['BEGIN'])
    assert.equal(sent.length, 3, `round trips: ${JSON.stringify(sent)}`)
    assert.equal(sent[2], '<HeldWritesQuery>')
    assert.equal(committed.command, 'COMMIT')
    assert.equal(client.getTransactionStatus(), 'I')
    assert.deepEqual(await storedOrders(), ['o-1'])
    assert.deepEqual(await storedMessages(), ['o-1'])
  })

  it('callback-style COMMIT and ROLLBACK, END, and COMMIT with empty values work as before', async () => {
    await reset()
    const client = await connect()
    await client.query('BEGIN')
    await held(client).orders.produce(event('c-1'))
    assert.equal((await withCallback(client, 'COMMIT')).command, 'COMMIT')
    await client.query('BEGIN')
    await held(client).orders.produce(event('c-2 rolled back'))
    await withCallback(client, 'ROLLBACK')
    await client.query('BEGIN')
    await held(client).orders.produce(event('c-3'))
    await client.query('end;')
    // As query wrappers send it, with an empty values array.
    await client.query('BEGIN')
    await held(client).orders.produce(event('c-4'))
    assert.equal((await client.query('commit', [])).command, 'COMMIT')
    assert.equal(client.getTransactionStatus(), 'I')
    assert.deepEqual(await storedMessages(), ['c-1', 'c-3', 'c-4'])
  })

  it('savepoints keep or drop a held message as usual; ROLLBACK drops what is still held', async () => {
    await reset()
    const client = await connect()
    await client.query('BEGIN')
    await held(client).orders.produce(event('m-1 kept'))
    await client.query('SAVEPOINT s')
    await held(client).orders.produce(event('m-2 rolled back'))
    await client.query('ROLLBACK TO SAVEPOINT s')
    await held(client).orders.produce(event('m-3 kept'))
    await client.query('COMMIT')
    await client.query('BEGIN')
    await insertOrder(client, 'o-2 rolled back')
    await held(client).orders.produce(event('m-4 rolled back'))
    await client.query('ROLLBACK')
    // Nothing of the rolled-back transaction may ride on the next one.
    await client.query('BEGIN')
    await insertOrder(client, 'o-3')
    await client.query('COMMIT')
    assert.deepEqual(await storedMessages(), ['m-1 kept', 'm-3 kept'])
    assert.deepEqual(await storedOrders(), ['o-3'])
  })

  it('a write that fails rejects the COMMIT (or the next query) with its own error and rolls back; the client goes on', async () => {
    await reset()
    const client = await connect()
    await withClient((admin) => admin.query(`ALTER TABLE "${schema}".outbox RENAME TO outbox_away`))
    try {
      await client.query('BEGIN')
      await insertOrder(client, 'o-4')
      await held(client).orders.produce(event('lost?'))
      // The database's error, or the outbox's explanation of it.
      const missingTable = (error: { code?: string }) =>
        error.code === '42P01' || error.code === 'KE_NOT_MIGRATED'
      await assert.rejects(client.query('COMMIT'), missingTable)
      assert.equal(client.getTransactionStatus(), 'I', 'a failed COMMIT leaves no transaction open')
      await client.query('BEGIN')
      await held(client).orders.produce(event('lost?'))
      await assert.rejects(insertOrder(client, 'o-5'), missingTable)
      await client.query('ROLLBACK')
    } finally {
      await withClient((admin) => admin.query(`ALTER TABLE "${schema}".outbox_away RENAME TO outbox`))
    }
    await client.query('BEGIN')
    await insertOrder(client, 'o-6')
    await held(client).orders.produce(event('after'))
    await client.query('COMMIT')
    assert.deepEqual(await storedOrders(), ['o-6'])
    assert.deepEqual(await storedMessages(), ['after'])
  })

  it('a lost prepared statement rejects the COMMIT (KE_STORE_FAILED, retryable); the next transaction prepares it again', async () => {
    await reset()
    const client = await connect()
    const commitOne = async (order: string, message: string) => {
      await client.query('BEGIN')
      await insertOrder(client, order)
      await held(client).orders.produce(event(message))
      await client.query('COMMIT')
    }
    await commitOne('o-7', 'p-1')
    const { rows } = await client.query(
      "SELECT name FROM pg_prepared_statements WHERE name LIKE 'ke_commit_%'",
    )
    assert.equal(rows.length, 1)
    await client.query('DEALLOCATE ALL')
    await assert.rejects(
      commitOne('o-8', 'p-2 rolled back'),
      (error: { code?: string; retryable?: boolean }) =>
        error.code === ErrorCodes.STORE_FAILED && error.retryable === true,
    )
    assert.equal(client.getTransactionStatus(), 'I')
    // Whether the failed send left the statement is unknown to the outbox: it closes the name
    // before preparing it again, even when other code took that name meanwhile.
    await client.query(`PREPARE ${rows[0].name} AS SELECT 1`)
    await commitOne('o-9', 'p-3')
    await commitOne('o-10', 'p-4')
    assert.deepEqual(await storedOrders(), ['o-10', 'o-7', 'o-9'])
    assert.deepEqual(await storedMessages(), ['p-1', 'p-3', 'p-4'])
  })

  it("a COMMIT that bypasses the client's query (a reference taken before in()) is refused: the transaction is rolled back, nothing of it committed", async () => {
    await reset()
    const client = await connect()
    const bypass = pg.Client.prototype.query.bind(client) as (text: string) => Promise<pg.QueryResult>
    await client.query('BEGIN')
    await insertOrder(client, 'o-12')
    await held(client).orders.produce(event('held, never sent'))
    await assert.rejects(bypass('COMMIT'), (error: { code?: string; message: string }) => {
      assert.equal(error.code, 'KE001')
      assert.match(error.message, /bypassed the client query method/)
      return true
    })
    // node-postgres rejects on the error, before it reads the server's transaction state.
    await client.query('SELECT 1')
    assert.equal(client.getTransactionStatus(), 'I', 'no transaction left open')
    await client.query('BEGIN')
    await insertOrder(client, 'o-13')
    await client.query('COMMIT')
    assert.deepEqual(await storedOrders(), ['o-13'])
    assert.deepEqual(await storedMessages(), [], 'nothing sent into the later transaction either')
  })

  it('inside transaction(), in(client) shares the held writes of the helper, in order', async () => {
    await reset()
    const other = createPgOutbox({ topics, schema })
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
    try {
      await outbox.transaction(pool, async (client, helperTopics) => {
        await helperTopics.orders.produce(event('t-1'))
        await other.in(client).orders.produce(event('t-2'))
        await helperTopics.orders.produce(event('t-3'))
        await insertOrder(client, 'o-11')
        await other.in(client).orders.produce(event('t-4'))
      })
    } finally {
      await pool.end()
    }
    assert.deepEqual(await storedMessages(), ['t-1', 't-2', 't-3', 't-4'])
    assert.deepEqual(await storedOrders(), ['o-11'])
  })
})
