import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { RELAY_PLANNER_SETTINGS } from '../src/dialects/postgres/relay-store.ts'
import { type ClaimBudget, claimSql } from '../src/dialects/postgres/sql.ts'
import { bufferSerializer, defineTopic } from '../src/index.ts'
import { DATABASE_URL, dropSchema, uniqueName, withClient } from './support/env.ts'

/**
 * The claim statement itself, on rows set up by hand: which rows it may take when messages are
 * waiting for a retry. Both claim forms (single and concurrent) share the retry check.
 */
describe('PostgreSQL claim statement', () => {
  const schema = uniqueName('ke_claim')
  after(() => dropSchema(schema))

  const table = { schema, table: 'outbox' }
  const insert = `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash, attempts, available_at)
VALUES ($1, $2, 'v', $3, $4, now() + make_interval(secs => $5)) RETURNING id`

  async function claimed(concurrent: boolean): Promise<string[]> {
    return withClient(async (client) => {
      await client.query('BEGIN')
      try {
        const result = await client.query(claimSql(table, 100, concurrent))
        return result.rows.map((row: { topic: string }) => row.topic)
      } finally {
        await client.query('ROLLBACK')
      }
    })
  }

  it('skips the younger messages of a key whose older message waits for a retry, and only those', async () => {
    const outbox = createPgOutbox({
      topics: { t: defineTopic({ name: 'claim-test', serializer: bufferSerializer }) },
      schema,
    })
    await outbox.migrate(DATABASE_URL)
    await withClient(async (client) => {
      // [label, key, ordering hash, attempts, seconds until available]
      const rows: [string, string | null, number | null, number, number][] = [
        ['a1-waiting', 'a', 1, 1, 3600],
        ['b1-retry-due', 'b', 2, 2, -1],
        ['a2-behind-a1', 'a', 1, 0, -1],
        ['b2', 'b', 2, 0, -1],
        ['keyless', null, null, 0, -1],
        ['c1', 'c', 3, 0, -1],
      ]
      for (const [label, key, hash, attempts, seconds] of rows) {
        await client.query(insert, [label, key, hash, attempts, seconds])
      }
    })
    const expected = ['b1-retry-due', 'b2', 'keyless', 'c1']
    assert.deepEqual(await claimed(false), expected)
    assert.deepEqual(await claimed(true), expected)

    // Once nothing waits any more, the key's messages come back, oldest first.
    await withClient((client) =>
      client.query(
        `UPDATE "${schema}".outbox SET available_at = now() - interval '1 second' WHERE topic = 'a1-waiting'`,
      ),
    )
    const all = ['a1-waiting', 'b1-retry-due', 'a2-behind-a1', 'b2', 'keyless', 'c1']
    assert.deepEqual(await claimed(false), all)
    assert.deepEqual(await claimed(true), all)
  })

  it('a key waiting for a retry with more rows behind it than a claim looks at holds up no other key', async () => {
    await withClient(async (client) => {
      await client.query(`DELETE FROM "${schema}".outbox`)
      await client.query(insert, ['x1-waiting', 'x', 9, 1, 3600])
      // The concurrent claim of 100 looks at a window of 400 rows: these fill it five times over.
      await client.query(
        `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash) SELECT 'x-behind', 'x', 'v', 9 FROM generate_series(1, 2000)`,
      )
      await client.query(insert, ['y1', 'y', 10, 0, -1])
      await client.query(insert, ['keyless', null, null, 0, -1])
    })
    assert.deepEqual(await claimed(false), ['y1', 'keyless'])
    assert.deepEqual(await claimed(true), ['y1', 'keyless'])
  })
})

/**
 * The byte budget (`maxBytesPerPoll`) in the claim statement: a prefix of what the claim would
 * take without it, always at least one row, the bytes summed before any row is locked.
 */
describe('PostgreSQL claim statement with a byte budget', () => {
  const schema = uniqueName('ke_claim_bytes')
  after(() => dropSchema(schema))
  const table = { schema, table: 'outbox' }
  const KB = 1024

  async function setUp(sizes: readonly number[]): Promise<string[]> {
    const outbox = createPgOutbox({
      topics: { t: defineTopic({ name: 'claim-bytes', serializer: bufferSerializer }) },
      schema,
    })
    await outbox.migrate(DATABASE_URL)
    await outbox.close()
    return withClient(async (client) => {
      await client.query(`TRUNCATE "${schema}".outbox`)
      const ids: string[] = []
      for (const [i, size] of sizes.entries()) {
        // A key of 2 bytes ('k' and a digit) of its own per row, so a concurrent claim wins every
        // key it tries; a value of `size` bytes; no headers.
        const result = await client.query(
          `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash) VALUES ('t', $1, $2, $3) RETURNING id`,
          [Buffer.from(`k${i % 10}`), Buffer.alloc(size, i), i],
        )
        ids.push(String(result.rows[0].id))
      }
      return ids
    })
  }

  async function claim(concurrent: boolean, budget: ClaimBudget, limit = 100): Promise<string[]> {
    return withClient(async (client) => {
      await client.query('BEGIN')
      try {
        const result = await client.query(claimSql(table, limit, concurrent, undefined, budget))
        return result.rows.map((row: { id: string }) => String(row.id))
      } finally {
        await client.query('ROLLBACK')
      }
    })
  }

  for (const concurrent of [false, true]) {
    const mode = concurrent ? 'concurrent' : 'single/exclusive'
    it(`${mode}: takes rows in id order until the next would pass the budget; a row above it goes alone`, async () => {
      // 2-byte keys: 300 KB values are 300 KB + 2 bytes each, so 3 fit in 1000 KB and a 4th does not.
      const ids = await setUp([300 * KB, 300 * KB, 300 * KB, 300 * KB, 10, 10])
      assert.deepEqual(await claim(concurrent, { maxBytes: 1000 * KB }), ids.slice(0, 3))
      // Exactly the bytes of the first two rows: both fit.
      assert.deepEqual(await claim(concurrent, { maxBytes: 2 * (300 * KB + 2) }), ids.slice(0, 2))
      assert.deepEqual(await claim(concurrent, { maxBytes: 2 * (300 * KB + 2) - 1 }), ids.slice(0, 1))
      // Smaller than the first row: the first row alone, never nothing.
      assert.deepEqual(await claim(concurrent, { maxBytes: 1 }), ids.slice(0, 1))
      // The row limit still applies; a large budget changes nothing.
      assert.deepEqual(await claim(concurrent, { maxBytes: 1 << 30 }, 5), ids.slice(0, 5))
      assert.deepEqual(await claim(concurrent, { maxBytes: 1 << 30 }), ids)
    })

    it(`${mode}: the rows of the relay's other session are left out before the bytes are summed`, async () => {
      const ids = await setUp([300 * KB, 300 * KB, 300 * KB, 300 * KB, 300 * KB])
      // The other session holds the first two: this claim's budget goes to the next ones.
      await withClient(async (other) => {
        await other.query('BEGIN')
        await other.query(`SELECT id FROM "${schema}".outbox WHERE id = ANY($1::bigint[]) FOR UPDATE`, [
          ids.slice(0, 2),
        ])
        try {
          assert.deepEqual(
            await claim(concurrent, { maxBytes: 700 * KB, held: ids.slice(0, 2) }),
            ids.slice(2, 4),
          )
          // Without saying what it holds, its bytes count and its rows are skipped: a smaller batch, never a larger one.
          const blind = await claim(concurrent, { maxBytes: 700 * KB })
          assert.ok(blind.length <= 2, `${blind.length} rows`)
          for (const id of blind) assert.ok(!ids.slice(0, 2).includes(id))
        } finally {
          await other.query('ROLLBACK')
        }
      })
    })
  }

  it('leaves the claimed rows locked and no other row: the claim ahead finds the rest', async () => {
    const ids = await setUp([300 * KB, 300 * KB, 300 * KB, 300 * KB, 300 * KB])
    await withClient(async (client) => {
      await client.query('BEGIN')
      const first = await client.query(claimSql(table, 100, false, undefined, { maxBytes: 700 * KB }))
      assert.deepEqual(
        first.rows.map((r: { id: string }) => String(r.id)),
        ids.slice(0, 2),
      )
      // What this transaction holds, seen from another session: exactly the two rows it returned.
      const free = await withClient(async (other) => {
        const result = await other.query(
          `SELECT id FROM "${schema}".outbox ORDER BY id FOR UPDATE SKIP LOCKED`,
        )
        return result.rows.map((r: { id: string }) => String(r.id))
      })
      await client.query('ROLLBACK')
      assert.deepEqual(free, ids.slice(2))
    })
  })

  it('costs a 500-row claim of small messages about what the claim without a budget costs', async () => {
    const outbox = createPgOutbox({
      topics: { t: defineTopic({ name: 'claim-bytes', serializer: bufferSerializer }) },
      schema,
    })
    await outbox.migrate(DATABASE_URL)
    await outbox.close()
    const timings = await withClient(async (client) => {
      await client.query(`TRUNCATE "${schema}".outbox`)
      await client.query(
        `INSERT INTO "${schema}".outbox (topic, key, value, headers, ordering_hash)
SELECT 't', convert_to('key-' || (i % 50), 'UTF8'), convert_to(repeat('x', 256), 'UTF8'), '[["h","dg=="]]'::jsonb, i % 50 FROM generate_series(1, 20000) AS i`,
      )
      await client.query(`ANALYZE "${schema}".outbox`)
      await client.query(RELAY_PLANNER_SETTINGS)
      const statements = {
        'no budget': claimSql(table, 500, false, undefined),
        'budget 16 MiB': claimSql(table, 500, false, undefined, { maxBytes: 16 * 1024 * KB }),
        'budget 16 MiB, 500 held': claimSql(table, 500, false, undefined, {
          maxBytes: 16 * 1024 * KB,
          held: Array.from({ length: 500 }, (_, i) => String(1_000_000 + i)),
        }),
        'concurrent, no budget': claimSql(table, 500, true, undefined),
        'concurrent, budget 16 MiB': claimSql(table, 500, true, undefined, { maxBytes: 16 * 1024 * KB }),
      }
      const median: Record<string, number> = {}
      for (const [name, sql] of Object.entries(statements)) {
        const runs: number[] = []
        for (let i = 0; i < 25; i++) {
          await client.query('BEGIN')
          const result = await client.query(`EXPLAIN (ANALYZE, FORMAT JSON) ${sql}`)
          await client.query('ROLLBACK')
          const plan = result.rows[0]['QUERY PLAN'][0] as {
            'Execution Time': number
            Plan: { 'Actual Rows': number }
          }
          assert.equal(plan.Plan['Actual Rows'], 500, name)
          runs.push(plan['Execution Time'])
        }
        runs.sort((a, b) => a - b)
        median[name] = runs[Math.floor(runs.length / 2)] as number
      }
      return median
    })
    // The numbers for the record (the machine is shared: only a gross slowdown fails the test).
    console.log(
      `claim of 500 rows of 256 B, median server time of 25 runs (EXPLAIN ANALYZE), ms: ${JSON.stringify(timings)}`,
    )
    assert.ok(
      (timings['budget 16 MiB'] as number) < 3 * (timings['no budget'] as number) + 2,
      'the budget does not make a claim of small messages several times slower',
    )
    assert.ok(
      (timings['concurrent, budget 16 MiB'] as number) < 3 * (timings['concurrent, no budget'] as number) + 2,
      'nor a concurrent claim',
    )
  })
})
