import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { connectSession } from '../src/adapters/pg/session.ts'
import type { StoredMessage } from '../src/core/record.ts'
import type { OutboxTable } from '../src/core/seams.ts'
import { PostgresRelayStore } from '../src/dialects/postgres/relay-store.ts'
import type { PgSession } from '../src/dialects/postgres/session.ts'
import { encodeHeaders } from '../src/dialects/shared/stored-columns.ts'
import { bufferSerializer, defineTopic, ErrorCodes } from '../src/index.ts'
import { DATABASE_URL, dropSchema, uniqueName, withClient } from './support/env.ts'

/**
 * The relay reads claims as binary COPY on node-postgres sessions it opens itself, and as text
 * rows on any other session. Both must hand over the same messages, byte for byte, for every
 * shape a row can take.
 */
describe('PostgreSQL claim read as binary COPY', () => {
  const schema = uniqueName('ke_binclaim')
  after(() => dropSchema(schema))

  const table = { schema, table: 'outbox' }
  const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
  const big = Buffer.alloc(1024 * 1024 + 3, 0xab)
  // [topic, key, value, headers, ordering hash, attempts]
  const rows: [string, Buffer | null, Buffer | null, [string, Buffer | null][], number | null, number][] = [
    ['plain', Buffer.from('k1'), Buffer.from('{"a":1}'), [], 17, 0],
    ['tombstone', Buffer.from('k2'), null, [['trace', Buffer.from('t-1')]], -2147483648, 0],
    ['keyless', null, Buffer.from('v'), [], null, 0],
    ['empty', Buffer.alloc(0), Buffer.alloc(0), [['', Buffer.alloc(0)]], 2147483647, 0],
    [
      'binary',
      allBytes,
      allBytes,
      [
        ['bin', allBytes],
        ['none', null],
        ['bin', Buffer.from('dup')],
      ],
      5,
      3,
    ],
    ['ünïcødé ✓', Buffer.from('ключ'), Buffer.from('значение'), [['ключ', Buffer.from('✓')]], 6, 1],
    ['large', Buffer.from('k3'), big, [], 7, 0],
  ]

  async function claimWith(session: () => Promise<PgSession>): Promise<StoredMessage[]> {
    const store = singleModeStore(table, session)
    await store.connect()
    try {
      const claimed = await store.claim(100)
      await store.abandon()
      return claimed
    } finally {
      await store.close()
    }
  }

  /** A node-postgres session without `copyOut`: the relay falls back to text rows. */
  async function rowsOnly(): Promise<PgSession> {
    const session = await connectSession({ connectionString: DATABASE_URL })
    return {
      query: ((...args: Parameters<PgSession['query']>) =>
        (session.query as (...a: unknown[]) => unknown)(...args)) as PgSession['query'],
      on: ((event: 'error', listener: (error: Error) => void) =>
        session.on(event, listener)) as PgSession['on'],
      end: () => session.end(),
    }
  }

  it('hands over the same messages as text rows, byte for byte, for every shape of row', async () => {
    const outbox = createPgOutbox({
      topics: { t: defineTopic({ name: 'binary-claim', serializer: bufferSerializer }) },
      schema,
    })
    await outbox.migrate(DATABASE_URL)
    await withClient(async (client) => {
      // Ids on both sides of 2^32 and of 2^53 (where a double stops being exact).
      const starts = ['4294967294', '9007199254740991']
      for (const [index, [topic, key, value, headers, hash, attempts]] of rows.entries()) {
        if (index === 2 || index === 4) {
          await client.query(
            `ALTER TABLE "${schema}".outbox ALTER COLUMN id RESTART WITH ${starts[index === 2 ? 0 : 1]}`,
          )
        }
        await client.query(
          `INSERT INTO "${schema}".outbox (topic, key, value, headers, ordering_hash, attempts, available_at)
VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, now() - interval '1 second')`,
          [topic, key, value, encodeHeaders(headers), hash, attempts],
        )
      }
    })

    const binary = await claimWith(() => connectSession({ connectionString: DATABASE_URL }))
    const text = await claimWith(rowsOnly)
    assert.deepEqual(binary, text)
    // A relay connection configured for node-postgres's pipeline mode (which refuses the COPY
    // claim's query object) still claims: k-entity's sessions turn that mode off.
    assert.deepEqual(
      await claimWith(() => connectSession({ connectionString: DATABASE_URL, pipeline: true })),
      binary,
    )
    assert.deepEqual(
      binary.map((message) => message.id),
      ['1', '2', '4294967294', '4294967295', '9007199254740991', '9007199254740992', '9007199254740993'],
    )
    // What was inserted, in insertion order (ids aside), is what the claim hands over.
    assert.deepEqual(
      binary.map(({ id: _, ...record }) => record),
      rows.map(([topic, key, value, headers, orderingHash, attempts]) => ({
        topic,
        key,
        value,
        headers,
        orderingHash,
        attempts,
      })),
    )
  })

  it('reports a missing table as such, and the store connects again afterwards', async () => {
    const store = singleModeStore({ schema: uniqueName('ke_missing'), table: 'outbox' }, () =>
      connectSession({ connectionString: DATABASE_URL }),
    )
    await store.connect()
    try {
      await assert.rejects(store.claim(10), { code: ErrorCodes.NOT_MIGRATED })
      assert.equal(store.healthy, false)
      await store.connect()
      assert.equal(store.healthy, true)
    } finally {
      await store.close()
    }
  })
})

function singleModeStore(table: OutboxTable, connect: () => Promise<PgSession>): PostgresRelayStore {
  return new PostgresRelayStore({
    table,
    connect,
    claimTimeout: 60_000,
    sessionIdleTimeout: 0,
    concurrent: false,
    listen: false,
    exclusive: false,
  })
}
