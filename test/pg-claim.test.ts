import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { claimSql } from '../src/dialects/postgres/sql.ts'
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
})
