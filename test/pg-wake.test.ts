// The PostgreSQL relay session's wake-up (LISTEN): how long `waitForWork` waits, after a batch
// that found messages or not, with and without commit notifications. PostgreSQL only, no Kafka.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { connectSession } from '../src/adapters/pg/session.ts'
import { wakeChannel } from '../src/dialects/postgres/names.ts'
import { PostgresRelayStore } from '../src/dialects/postgres/relay-store.ts'
import { defineTopic } from '../src/index.ts'
import { DATABASE_URL, dropSchema, uniqueName, withClient } from './support/env.ts'

/** How long `waitForWork(ms, signal, found)` took, in ms. */
async function waited(store: PostgresRelayStore, ms: number, found: number): Promise<number> {
  const started = performance.now()
  await store.waitForWork(ms, new AbortController().signal, found)
  return performance.now() - started
}

describe('PostgreSQL relay wake-up (LISTEN)', () => {
  const schema = uniqueName('ke_wake')
  const table = { schema, table: 'outbox' }
  const relayStore = (eagerClaims: boolean) =>
    new PostgresRelayStore({
      table,
      connect: () => connectSession({ connectionString: DATABASE_URL }),
      claimTimeout: 60_000,
      sessionIdleTimeout: 0,
      concurrent: false,
      listen: true,
      eagerClaims,
      exclusive: true,
    })
  const store = relayStore(true)
  const outbox = createPgOutbox({
    topics: { t: defineTopic({ name: 'wake' }) },
    schema,
    kafka: { brokers: ['127.0.0.1:9'] },
  })

  before(async () => {
    await outbox.migrate(DATABASE_URL)
    await store.connect()
    assert.equal(await store.tryAcquireLeadership(), true)
  })
  after(async () => {
    await store.close()
    await dropSchema(schema)
  })

  it('without notifications, a batch that found messages still waits for the polling interval', async () => {
    // The first claim after connecting covers what was committed before the LISTEN.
    assert.deepEqual(await store.claim(1), [])
    assert.ok((await waited(store, 300, 5)) >= 250, 'no commit notified: the interval holds')
  })

  it("listen: 'eager', while commits are notified: a batch that found messages is followed by a claim at once; an empty one waits the short poll", async () => {
    await withClient((client) => client.query(`SELECT pg_notify($1, '')`, [wakeChannel(table)]))
    // Let the notification arrive, then claim (it clears the flag a notification sets, as a poll does).
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.deepEqual(await store.claim(1), [])
    const eager = await waited(store, 300, 5)
    assert.ok(eager < 3, `found messages while notified: claimed again after ${eager.toFixed(1)} ms`)
    assert.deepEqual(await store.claim(1), [])
    const empty = await waited(store, 300, 0)
    assert.ok(
      empty >= 4 && empty < 100,
      `an empty claim while notified waits the short poll: ${empty.toFixed(1)} ms`,
    )
    // Once the window after the last notification has passed, the interval holds again.
    await new Promise((resolve) => setTimeout(resolve, 150))
    assert.deepEqual(await store.claim(1), [])
    assert.ok((await waited(store, 300, 5)) >= 250, 'the notified window is over')
  })

  it('listen: true, while commits are notified: a batch that found messages still waits the short poll', async () => {
    // Its own session (the eager one above is the leader): a standby would not shorten its waits.
    await store.close()
    const plain = relayStore(false)
    try {
      await plain.connect()
      assert.equal(await plain.tryAcquireLeadership(), true)
      assert.deepEqual(await plain.claim(1), [])
      await withClient((client) => client.query(`SELECT pg_notify($1, '')`, [wakeChannel(table)]))
      await new Promise((resolve) => setTimeout(resolve, 50))
      assert.deepEqual(await plain.claim(1), [])
      const spaced = await waited(plain, 300, 5)
      assert.ok(spaced >= 4 && spaced < 100, `the short poll: ${spaced.toFixed(1)} ms`)
    } finally {
      await plain.close()
    }
  })

  it("the relay option listen takes true, false or 'eager', and refuses anything else", () => {
    for (const listen of [true, false, 'eager'] as const) {
      const relay = outbox.relay({ connection: DATABASE_URL, listen })
      void relay.stop({ timeout: 0 }).catch(() => {})
    }
    for (const listen of ['yes', 1, 'EAGER']) {
      assert.throws(() => outbox.relay({ connection: DATABASE_URL, listen: listen as never }), {
        code: 'KE_INVALID_ARGUMENT',
        message: /listen.*true, false or 'eager'/,
      })
    }
  })
})
