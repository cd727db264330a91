// The PostgreSQL side of settling a send early (issue 18): a row held for as long as Kafka could
// still write it is claimed by no one and keeps later rows of its key back; its late
// acknowledgement deletes it on its own (`completeHeld`) or with the next claim's delete.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { countedAttempts, HELD_ATTEMPTS } from '../src/core/seams.ts'
import { PostgresRelayStore } from '../src/dialects/postgres/index.ts'
import { defineTopic, ErrorCodes, isKEntityError } from '../src/index.ts'
import { DATABASE_URL, dropSchema, relaySessionOpener, uniqueName, withClient } from './support/env.ts'

const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
const schemas: string[] = []

const openSession = relaySessionOpener('k-entity-settle-test')

async function outboxWith(keys: string[]) {
  const schema = uniqueName('ke_settle')
  schemas.push(schema)
  const events = defineTopic<{ key: string; n: number }>({ name: 'settle-events', key: (e) => e.key })
  const outbox = createPgOutbox({ topics: { events }, schema })
  await outbox.migrate(DATABASE_URL)
  await outbox.transaction(pool, (_client, topics) =>
    topics.events.produceMany(keys.map((key, n) => ({ key, n }))),
  )
  const store = new PostgresRelayStore({
    table: { schema, table: 'outbox' },
    connect: openSession,
    claimTimeout: 30_000,
    sessionIdleTimeout: 0,
    concurrent: false,
    listen: false,
    exclusive: false,
  })
  await store.connect()
  return { schema, store }
}

async function rows(schema: string): Promise<Array<{ id: string; attempts: number; held_for_ms: number }>> {
  return withClient(async (client) => {
    const result = await client.query(
      `SELECT id::text, attempts, extract(epoch FROM available_at - now()) * 1000 AS held_for_ms FROM ${schema}.outbox ORDER BY id`,
    )
    return result.rows.map((r) => ({
      id: r.id,
      attempts: Number(r.attempts),
      held_for_ms: Number(r.held_for_ms),
    }))
  })
}

after(async () => {
  for (const schema of schemas) await dropSchema(schema)
  await pool.end()
})

describe('PostgreSQL: rows held by a send settled early', () => {
  it('held rows and the rest of their keys are claimed by no one; a late acknowledgement deletes them', async () => {
    // Keys a, b, a, c: the first row of key a is held; the second row of a waits behind it.
    const { schema, store } = await outboxWith(['a', 'b', 'a', 'c'])
    try {
      const claimed = await store.claim(10)
      assert.equal(claimed.length, 4)
      const [a1, b1, a2, c1] = claimed.map((m) => m.id) as [string, string, string, string]
      await store.complete(
        [b1, c1],
        [{ ids: [a1], error: 'not acknowledged yet', retryInMs: 60_000, countAttempt: false }],
      )
      const held = (await rows(schema)).find((r) => r.id === a1)
      assert.ok(held !== undefined && held.attempts >= HELD_ATTEMPTS, 'held, marked without an attempt')
      assert.equal(countedAttempts(held.attempts), 0)
      assert.ok(
        held.held_for_ms > 55_000,
        `held on the database's clock for the whole hold: ${held.held_for_ms} ms`,
      )
      assert.deepEqual(await store.claim(10), [], 'neither the held row nor the rest of its key is claimed')
      // With a claim open, the late delete is refused: it runs between claims or with a claim's delete.
      await outboxWithMore(schema)
      assert.equal((await store.claim(10)).length, 1)
      await assert.rejects(
        store.completeHeld([a1]),
        (error: unknown) => isKEntityError(error) && error.code === ErrorCodes.INTERNAL,
      )
      await store.abandon()
      await store.completeHeld([a1, a2])
      const left = (await rows(schema)).map((r) => r.id)
      assert.ok(
        !left.includes(a1) && !left.includes(a2),
        'the late acknowledgement deleted the held row and the one behind it',
      )
    } finally {
      await store.close()
    }
  })

  it("a late acknowledgement rides along with the next claim's delete", async () => {
    const { schema, store } = await outboxWith(['a', 'b'])
    try {
      const [a1, b1] = (await store.claim(10)).map((m) => m.id) as [string, string]
      await store.complete(
        [b1],
        [{ ids: [a1], error: 'not acknowledged yet', retryInMs: 60_000, countAttempt: false }],
      )
      await outboxWithMore(schema)
      const next = await store.claim(10)
      assert.ok(next.length > 0 && !next.some((m) => m.id === a1))
      await store.complete([...next.map((m) => m.id), a1])
      assert.deepEqual(await rows(schema), [])
    } finally {
      await store.close()
    }
  })
})

describe('PostgreSQL: a held send that failed late', () => {
  it('is held again for a short while, on its own, without an attempt', async () => {
    const { schema, store } = await outboxWith(['a', 'b'])
    try {
      const [a1, b1] = (await store.claim(10)).map((m) => m.id) as [string, string]
      await store.complete(
        [b1],
        [{ ids: [a1], error: 'not acknowledged yet', retryInMs: 60_000, countAttempt: false }],
      )
      await store.completeHeld(
        [],
        [{ ids: [a1], error: 'failed late', retryInMs: 1000, countAttempt: false }],
      )
      const [row] = await rows(schema)
      assert.ok(row !== undefined && row.attempts >= HELD_ATTEMPTS && countedAttempts(row.attempts) === 0)
      assert.ok(row.held_for_ms <= 1000, `held again for at most a second: ${row.held_for_ms} ms`)
      await new Promise((resolve) => setTimeout(resolve, 1100))
      assert.deepEqual(
        (await store.claim(10)).map((m) => m.id),
        [a1],
      )
      await store.complete([a1])
    } finally {
      await store.close()
    }
  })
})

/** One more row, of a key nobody holds. */
async function outboxWithMore(schema: string): Promise<void> {
  await withClient((client) =>
    client.query(
      `INSERT INTO ${schema}.outbox (topic, key, value, headers, ordering_hash) VALUES ('settle-events', 'z', '{}', NULL, 12345)`,
    ),
  )
}
