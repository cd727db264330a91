// The claim floor: claims start their index scan at an id below which every row is gone for good,
// instead of walking the dead index entries of everything deleted since the last VACUUM. It
// must never pass a row that is still to commit (a transaction that took an id and is open).
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { ClaimFloor } from '../src/dialects/postgres/claim-floor.ts'
import { RELAY_PLANNER_SETTINGS } from '../src/dialects/postgres/relay-store.ts'
import { claimSql } from '../src/dialects/postgres/sql.ts'
import { defineTopic, type RelayEvent } from '../src/index.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  trackingHeaders,
} from '../src/testing/index.ts'
import {
  countRows,
  createTopic,
  DATABASE_URL,
  dropSchema,
  kafkaBrokers,
  testKafka,
  uniqueName,
  waitFor,
  withClient,
} from './support/env.ts'

const schemas: string[] = []

async function claimIn(client: pg.Client, claim: string): Promise<{ id: string }[]> {
  await client.query('BEGIN')
  try {
    return (await client.query(claim)).rows
  } finally {
    await client.query('ROLLBACK')
  }
}

async function freshOutbox(prefix: string) {
  const schema = uniqueName(prefix)
  schemas.push(schema)
  const topic = uniqueName(prefix.replace(/^ke_/, '')).replaceAll('_', '-')
  const outbox = createPgOutbox({
    topics: {
      t: defineTopic<{ id: string; key: string; seq: number }>({
        name: topic,
        key: (m) => m.key,
        headers: (m) => trackingHeaders(m.id, m.seq),
        serializer: { name: 'id', serialize: (m) => Buffer.from(m.id) },
      }),
    },
    schema,
    kafka: testKafka(),
  })
  await outbox.migrate(DATABASE_URL)
  return { schema, topic, outbox, table: { schema, table: 'outbox' } }
}

describe('claim floor (PostgreSQL)', () => {
  after(async () => {
    for (const schema of schemas.splice(0)) await dropSchema(schema)
  })

  it('rises to the lowest live id, but never past an id whose transaction is still open', async () => {
    const { schema, table, outbox } = await freshOutbox('ke_floor')
    const insert = (client: pg.Client, n: number) =>
      client.query(
        `INSERT INTO "${schema}".outbox (topic, value) SELECT 't', 'v' FROM generate_series(1, $1) RETURNING id`,
        [n],
      )
    const open = new pg.Client({ connectionString: DATABASE_URL })
    await open.connect()
    const session = new pg.Client({ connectionString: DATABASE_URL })
    await session.connect()
    try {
      await withClient((c) => insert(c, 10)) // ids 1..10
      await open.query('BEGIN')
      const straggler = Number((await insert(open, 1)).rows[0].id) // 11, not committed
      await withClient((c) => insert(c, 9)) // 12..20
      await withClient((c) =>
        c.query(`DELETE FROM "${schema}".outbox WHERE id <= 10 OR id BETWEEN 12 AND 15`),
      )

      const floor = new ClaimFloor(table)
      const run = (text: string) => session.query(text)
      assert.equal(floor.due(), true, 'a floor that was never taken is due')
      await floor.step(run)
      assert.equal(floor.value, undefined, 'the first step only notes the sequence and who runs')
      await floor.step(run)
      assert.equal(floor.value, undefined, 'the open transaction holds the floor back')

      await open.query('COMMIT')
      await floor.step(run) // the transactions noted by the previous step included the open one
      await floor.step(run)
      assert.equal(floor.value, String(straggler), 'the floor stops at the committed straggler')
      assert.equal(
        (await claimIn(session, claimSql(table, 100, false, floor.value)))[0]?.id,
        String(straggler),
      )

      await withClient((c) => c.query(`DELETE FROM "${schema}".outbox`))
      floor.noteDeleted(20)
      await floor.step(run)
      assert.equal(floor.value, '21', 'with nothing left, the floor passes the last id taken')
      await withClient((c) => insert(c, 1)) // 21
      assert.equal(
        (await claimIn(session, claimSql(table, 100, true, floor.value))).length,
        1,
        'the concurrent claim starts at the floor too',
      )

      // A sequence that starts again (TRUNCATE ... RESTART IDENTITY) takes the floor with it.
      await withClient((c) => c.query(`TRUNCATE "${schema}".outbox RESTART IDENTITY`))
      await withClient((c) => insert(c, 1)) // 1 again
      assert.equal(
        floor.due(performance.now() + 1000),
        true,
        'an idle relay checks the sequence every second',
      )
      await floor.step(run)
      assert.equal(floor.value, undefined, 'no floor once the sequence went back')
      assert.equal((await claimIn(session, claimSql(table, 100, false, floor.value)))[0]?.id, '1')
    } finally {
      await open.end().catch(() => {})
      await session.end()
    }
    await outbox.close()
  })

  it('starts claims past the rows a retry holds back, for as long as the retry waits', async () => {
    const { schema, table, outbox } = await freshOutbox('ke_floor_blocked')
    const session = new pg.Client({ connectionString: DATABASE_URL })
    await session.connect()
    const filtered = async (claim: string) => {
      await session.query('BEGIN')
      try {
        const plan = await session.query(`EXPLAIN (ANALYZE, FORMAT TEXT) ${claim}`)
        const text = plan.rows.map((r) => r['QUERY PLAN']).join('\n')
        return [...text.matchAll(/Rows Removed by Filter: (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0)
      } finally {
        await session.query('ROLLBACK')
      }
    }
    try {
      await withClient(async (c) => {
        // ids 1..501: key 7, the first waiting an hour for its retry; 502..511: other keys.
        await c.query(
          `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash) SELECT 't', 'k7'::bytea, 'v', 7 FROM generate_series(1, 501)`,
        )
        await c.query(
          `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash) SELECT 't', convert_to('h' || i, 'UTF8'), 'v', i + 100 FROM generate_series(1, 10) AS i`,
        )
        await c.query(
          `UPDATE "${schema}".outbox SET attempts = 1, available_at = now() + interval '1 hour' WHERE id = 1`,
        )
      })
      const floor = new ClaimFloor(table)
      const run = (text: string) => session.query(text)
      await floor.step(run)
      await floor.step(run)
      assert.deepEqual(floor.start, { floor: '1', blocked: { past: '502', waiting: ['1'], hashes: [7] } })
      const first = async (start = floor.start, concurrent = false) =>
        (await claimIn(session, claimSql(table, 5, concurrent, start)))[0]?.id
      assert.equal(await first(), '502', 'the healthy rows come first')
      assert.equal(await first(floor.start, true), '502', 'in the concurrent claim too')
      // (The plan's other filters, the same in both, read the small table in full.)
      const walked =
        (await filtered(claimSql(table, 5, false, floor.value))) -
        (await filtered(claimSql(table, 5, false, floor.start)))
      assert.ok(
        walked >= 500,
        `from the floor, a claim walks the waiting key's rows; past them, none (${walked})`,
      )

      // While the run holds, a row of the waiting key produced since the walk (512) stays behind
      // it, and a retry past the run (503, key h2) holds back its key's younger row (513), in
      // every claim.
      const claimed = async (concurrent: boolean, budget?: { maxBytes: number }) =>
        (await claimIn(session, claimSql(table, 100, concurrent, floor.start, budget))).map((r) => r.id)
      const healthy = ['502', '503', '504', '505', '506', '507', '508', '509', '510', '511']
      await withClient((c) =>
        c.query(
          `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash) VALUES ('t', 'k7'::bytea, 'v', 7)`,
        ),
      )
      for (const concurrent of [false, true]) {
        assert.deepEqual(await claimed(concurrent), healthy)
        assert.deepEqual(await claimed(concurrent, { maxBytes: 1_000_000 }), healthy)
      }
      await withClient(async (c) => {
        await c.query(
          `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash) VALUES ('t', convert_to('h2', 'UTF8'), 'v', 102)`,
        )
        await c.query(
          `UPDATE "${schema}".outbox SET attempts = 1, available_at = now() + interval '1 hour' WHERE id = 503`,
        )
      })
      for (const concurrent of [false, true]) {
        const expected = healthy.filter((id) => id !== '503')
        assert.deepEqual(await claimed(concurrent), expected)
        assert.deepEqual(await claimed(concurrent, { maxBytes: 1_000_000 }), expected)
      }
      await withClient((c) => c.query(`DELETE FROM "${schema}".outbox WHERE id IN (503, 512, 513)`))

      // A later step keeps the run, and walks on from its end.
      await withClient((c) => c.query(`DELETE FROM "${schema}".outbox WHERE id BETWEEN 502 AND 506`))
      floor.noteDeleted(5)
      await floor.step(run)
      await floor.step(run)
      assert.deepEqual(floor.start, { floor: '1', blocked: { past: '507', waiting: ['1'], hashes: [7] } })

      // Once the retry is due, claims start at the floor again: the key's rows go first, in order.
      await withClient((c) => c.query(`UPDATE "${schema}".outbox SET available_at = now() WHERE id = 1`))
      assert.equal(await first(), '1')
      // Or once it is gone (delivered, or a dead letter): its key's next row goes first.
      await withClient((c) => c.query(`DELETE FROM "${schema}".outbox WHERE id = 1`))
      assert.equal(await first(), '2')
      assert.equal(await first(floor.start, true), '2')
      floor.noteDeleted(1)
      await floor.step(run)
      await floor.step(run)
      assert.equal(floor.start, '2', 'nothing waits: no run')
    } finally {
      await session.end()
    }
    await outbox.close()
  })

  it('a relay delivers the healthy keys while one key waits, then that key in order', async (t) => {
    const { schema, topic, outbox } = await freshOutbox('ke_floor_wait')
    await createTopic(topic, 4)
    const stuck = Array.from({ length: 300 }, (_, i) => ({ id: `s${i}`, key: 'stuck', seq: i }))
    const healthy = Array.from({ length: 600 }, (_, i) => ({ id: `h${i}`, key: `k${i % 8}`, seq: i >> 3 }))
    await withClient(async (c) => {
      await c.query('BEGIN')
      await outbox.in(c).t.produceMany(stuck)
      await c.query('COMMIT')
      await c.query('BEGIN')
      await outbox.in(c).t.produceMany(healthy)
      await c.query('COMMIT')
      await c.query(
        `UPDATE "${schema}".outbox SET attempts = 1, available_at = now() + interval '3 s' WHERE id = (SELECT min(id) FROM "${schema}".outbox)`,
      )
    })
    let delivered = 0
    const relay = outbox.relay({
      connection: DATABASE_URL,
      maxMessagesPerPoll: 20,
      pollingInterval: 20,
      onEvent: (e: RelayEvent) => {
        if (e.type === 'delivered') delivered += e.count
      },
    })
    t.after(() => relay.stop())
    await relay.start()
    await waitFor(async () => delivered >= healthy.length, { what: 'healthy keys relayed', timeout: 20_000 })
    assert.equal(await countRows(schema), stuck.length, 'the waiting key stays behind its retry')
    await waitFor(async () => (await countRows(schema)) === 0, {
      what: 'waiting key relayed',
      timeout: 20_000,
    })
    await relay.stop()
    const all = [...stuck, ...healthy]
    const consumed = await readTopic({ brokers: kafkaBrokers(), topic, expectedCount: all.length })
    const report = checkDelivery({ expected: all, observed: observedFromConsumed(consumed) })
    assert.ok(report.ok, formatReport(report))
  })

  it('is off for a sequence with a cache, where ids are not handed out in order', async () => {
    const { schema, table, outbox } = await freshOutbox('ke_floor_cache')
    await withClient((c) => c.query(`ALTER TABLE "${schema}".outbox ALTER COLUMN id SET CACHE 20`))
    const floor = new ClaimFloor(table)
    await withClient(async (c) => {
      await floor.step((text) => c.query(text))
      await floor.step((text) => c.query(text))
    })
    assert.equal(floor.value, undefined)
    assert.equal(floor.due(), false)
    await outbox.close()
  })

  it('is off for a relay role that may not read the sequence, and its claims still work', async () => {
    const { schema, table, outbox } = await freshOutbox('ke_floor_role')
    const role = uniqueName('ke_floor_role')
    await withClient(async (c) => {
      await c.query(`CREATE ROLE ${role} LOGIN`)
      await c.query(`GRANT USAGE ON SCHEMA "${schema}" TO ${role}`)
      await c.query(`GRANT SELECT, UPDATE, DELETE ON "${schema}".outbox TO ${role}`)
      await c.query(`INSERT INTO "${schema}".outbox (topic, value) VALUES ('t', 'v')`)
    })
    const url = new URL(DATABASE_URL)
    url.username = role
    const limited = new pg.Client({ connectionString: url.toString() })
    await limited.connect()
    try {
      const floor = new ClaimFloor(table)
      await floor.step((text) => limited.query(text))
      assert.equal(floor.value, undefined)
      assert.equal(floor.due(), false, 'no more steps')
      assert.equal((await claimIn(limited, claimSql(table, 10, false, floor.value))).length, 1)
    } finally {
      await limited.end()
      await withClient(async (c) => {
        await c.query(`DROP OWNED BY ${role}`)
        await c.query(`DROP ROLE ${role}`)
      })
    }
    await outbox.close()
  })

  it('a relay draining a backlog still delivers a message whose transaction committed late', async (t) => {
    const { schema, topic, outbox } = await freshOutbox('ke_floor_relay')
    await createTopic(topic, 4)
    const expected: { id: string; key: string; seq: number }[] = []
    const late = { id: 'late', key: 'late-key', seq: 0 }
    const open = new pg.Client({ connectionString: DATABASE_URL })
    await open.connect()
    t.after(() => open.end().catch(() => {}))
    // The straggler takes its id first and commits last.
    await open.query('BEGIN')
    await outbox.in(open).t.produce(late)
    const writer = new pg.Client({ connectionString: DATABASE_URL })
    await writer.connect()
    try {
      for (let batch = 0; batch < 30; batch++) {
        const messages = Array.from({ length: 100 }, (_, i) => {
          const n = batch * 100 + i
          return { id: `m${n}`, key: `k${n % 16}`, seq: Math.floor(n / 16) }
        })
        await writer.query('BEGIN')
        await outbox.in(writer).t.produceMany(messages)
        await writer.query('COMMIT')
        expected.push(...messages)
      }
    } finally {
      await writer.end()
    }
    let delivered = 0
    const relay = outbox.relay({
      connection: DATABASE_URL,
      maxMessagesPerPoll: 50,
      pollingInterval: 50,
      onEvent: (e: RelayEvent) => {
        if (e.type === 'delivered') delivered += e.count
      },
    })
    t.after(() => relay.stop())
    await relay.start()
    await waitFor(async () => delivered >= expected.length, { what: 'backlog relayed', timeout: 60_000 })
    // Long enough for several floor steps while the straggler's transaction is open (an idle
    // relay takes one a second).
    await new Promise((resolve) => setTimeout(resolve, 2500))
    await open.query('COMMIT')
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'straggler relayed', timeout: 10_000 })
    await relay.stop()
    const consumed = await readTopic({ brokers: kafkaBrokers(), topic, expectedCount: expected.length + 1 })
    const report = checkDelivery({
      expected: [...expected, late].map((m) => ({ id: m.id, key: m.key, seq: m.seq })),
      observed: observedFromConsumed(consumed),
    })
    assert.ok(report.ok, formatReport(report))
  })
})

describe('relay session planner settings (PostgreSQL)', () => {
  after(async () => {
    for (const schema of schemas.splice(0)) await dropSchema(schema)
  })

  it('the claim reads the primary key even when the costs favour a sequential scan', async () => {
    const { schema, table, outbox } = await freshOutbox('ke_plan')
    await withClient(async (c) => {
      await c.query(
        `INSERT INTO "${schema}".outbox (topic, value) SELECT 't', 'v' FROM generate_series(1, 600)`,
      )
      await c.query(`ANALYZE "${schema}".outbox`)
    })
    // Index reads priced as if every page came from a slow disk: the planner's choice when the
    // table is large and nearly empty, provoked on a small one.
    const client = new pg.Client({ connectionString: DATABASE_URL, options: '-c random_page_cost=100000' })
    await client.connect()
    // Without and with a byte budget (the relay always claims with one: `maxBytesPerPoll`).
    const plan = async (budget?: { maxBytes: number }) => {
      const result = await client.query(`EXPLAIN ${claimSql(table, 500, false, '1', budget)}`)
      return result.rows.map((row: Record<string, string>) => row['QUERY PLAN']).join('\n')
    }
    try {
      assert.match(await plan(), /Seq Scan on outbox o/, 'the test provokes the sequential scan')
      await client.query(RELAY_PLANNER_SETTINGS)
      const relayPlan = await plan()
      assert.match(relayPlan, /Index Scan using outbox_pkey on outbox o/)
      assert.doesNotMatch(relayPlan, /Seq Scan on outbox o/)
      // With a budget, the sizes are summed on the primary key in order, and the claim reads the
      // primary key between the floor and the last id within the budget (at these provoked costs
      // as a bitmap scan: the range holds one batch at most).
      const budgetPlan = await plan({ maxBytes: 16 * 1024 * 1024 })
      assert.match(budgetPlan, /Index Scan using outbox_pkey on outbox o_1/)
      assert.match(budgetPlan, /Index Cond: \(\(id >= 1\) AND \(id <= \$\d+\)\)/)
      assert.doesNotMatch(budgetPlan, /Seq Scan on outbox/)
    } finally {
      await client.end()
    }
    await outbox.close()
  })

  it('no JIT on relay sessions: compiling cost more than the statements it would speed up', async () => {
    const { schema, table, outbox } = await freshOutbox('ke_jit')
    const client = new pg.Client({ connectionString: DATABASE_URL })
    await client.connect()
    // The claim floor's read of the sequence: a scan PostgreSQL cannot avoid, so with
    // enable_seqscan off its estimate passes every JIT threshold.
    const explain = async () => {
      const result = await client.query(`EXPLAIN (ANALYZE) SELECT last_value FROM "${schema}".outbox_id_seq`)
      return result.rows.map((row: Record<string, string>) => row['QUERY PLAN']).join('\n')
    }
    try {
      const available = (await client.query('SELECT pg_jit_available() AS on')).rows[0].on === true
      await client.query('SET enable_seqscan = off')
      if (available) assert.match(await explain(), /JIT:/, 'the test provokes a JIT compilation')
      await client.query(RELAY_PLANNER_SETTINGS)
      assert.doesNotMatch(await explain(), /JIT:/)
      assert.equal((await claimIn(client, claimSql(table, 10, false))).length, 0)
    } finally {
      await client.end()
    }
    await outbox.close()
  })
})
