import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { after, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { defineTopic } from '../src/index.ts'
import { readTopic } from '../src/testing/index.ts'
import {
  countRows,
  createTopic,
  DATABASE_URL,
  dropSchema,
  kafkaBrokers,
  uniqueName,
  waitFor,
  withClient,
} from './support/env.ts'

const brokers = kafkaBrokers()
const schema = uniqueName('ke_sig')
const topicName = uniqueName('signal').replaceAll('_', '-')

describe('graceful shutdown', () => {
  after(() => dropSchema(schema))

  it('on SIGTERM the relay finishes its batch, closes its session and the process exits 0', async () => {
    await createTopic(topicName, 1)
    const outbox = createPgOutbox({ topics: { events: defineTopic<number>({ name: topicName }) }, schema })
    await outbox.migrate(DATABASE_URL)
    const child = fork(fileURLToPath(new URL('./fixtures/signal-relay.ts', import.meta.url)), {
      env: {
        ...process.env,
        SCHEMA: schema,
        TOPIC: topicName,
        DATABASE_URL,
        KAFKA_BROKERS: brokers.join(','),
      },
    })
    let delivered = 0
    child.on('message', (event: { type: string; count?: number }) => {
      if (event.type === 'delivered') delivered += event.count ?? 0
    })
    await waitFor(() => child.connected, { what: 'relay process' })
    const pool = new pg.Pool({ connectionString: DATABASE_URL })
    await outbox.transaction(pool, (_c, t) => t.events.produceMany(Array.from({ length: 100 }, (_, i) => i)))
    await pool.end()
    await waitFor(() => delivered === 100, { what: 'delivery' })
    child.kill('SIGTERM')
    const [code] = await once(child, 'exit')
    assert.equal(code, 0)
    assert.equal(await countRows(schema), 0)
    const sessions = await withClient(async (c) => {
      const r = await c.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [
        `ke-sig-${schema}`,
      ])
      return r.rows[0].n as number
    })
    assert.equal(sessions, 0, 'the relay closed its database session before exiting')
    assert.equal((await readTopic({ brokers, topic: topicName, expectedCount: 100 })).length, 100)
  })
})
