// What parking a key's rows would cost, measured before building it (PostgreSQL):
//   1. the write path (one message per transaction, and 100 per transaction) on an outbox
//      with and without an index on (ordering_hash, id) over all rows, side by side;
//   2. moving 100,000 rows of one key from the outbox to a parked table and back, one statement
//      each way, with the key's rows found by a walk of the primary key from the failed row on
//      (no new index) or through the (ordering_hash, id) index.
//
//   scripts/node-env.sh node bench/park-costs.ts [--reps 3] [--transactions 2000] [--backlog 200000]
import pg from 'pg'
import { insertOneStatement, insertStatement } from '../src/dialects/postgres/sql.ts'
import type { OutboxRecord } from '../src/index.ts'
import { DATABASE_URL, dropSchema, uniqueName } from './lib/env.ts'
import { median, percentile } from './lib/stats.ts'

const argv = process.argv.slice(2)
const arg = (name: string, fallback: number) => {
  const at = argv.indexOf(`--${name}`)
  return at === -1 ? fallback : Number(argv[at + 1])
}
const REPS = arg('reps', 3)
const TRANSACTIONS = arg('transactions', 2000)
const BACKLOG = arg('backlog', 200_000)
const STUCK = 100_000
const BLOCK = 100

const client = new pg.Client({ connectionString: DATABASE_URL, application_name: 'k-entity-bench-park' })
await client.connect()

const columns =
  'topic, key, value, headers, ordering_hash, attempts, available_at, created_at, last_error, errors'
const f2 = (n: number) => n.toFixed(2)
const spread = (values: number[]) => `${f2(Math.min(...values))}-${f2(Math.max(...values))}`

async function outbox(
  indexed: boolean,
): Promise<{ schema: string; table: { schema: string; table: string } }> {
  const schema = uniqueName('ke_parkcost')
  const { createPgOutbox } = await import('../src/adapters/pg/index.ts')
  const { defineTopic } = await import('../src/index.ts')
  await createPgOutbox({
    topics: { t: defineTopic<{ k: string }>({ name: 'park-cost', key: (m) => m.k }) },
    schema,
    kafka: { brokers: ['127.0.0.1:1'] },
  }).migrate(DATABASE_URL)
  await client.query(`CREATE TABLE IF NOT EXISTS "${schema}".outbox_parked (
  id bigint NOT NULL, topic text NOT NULL, key bytea, value bytea, headers jsonb, ordering_hash integer NOT NULL,
  attempts integer NOT NULL, available_at timestamptz NOT NULL, created_at timestamptz NOT NULL, last_error text,
  errors jsonb NOT NULL, PRIMARY KEY (ordering_hash, id))`)
  if (indexed) await client.query(`CREATE INDEX ON "${schema}".outbox (ordering_hash, id)`)
  return { schema, table: { schema, table: 'outbox' } }
}

function record(i: number): OutboxRecord {
  const key = `k${i % 1000}`
  return {
    topic: 'park-cost',
    key: Buffer.from(key),
    value: Buffer.alloc(256, 118),
    headers: [],
    orderingHash: (i * 2654435761) % 1000,
  } as unknown as OutboxRecord
}

async function writePath(): Promise<string[]> {
  const plain = await outbox(false)
  const indexed = await outbox(true)
  const lines = [
    `| write path (backlog ${BACKLOG.toLocaleString('en')} rows of 1,000 keys, ${TRANSACTIONS} tx per variant per rep) | per tx median ms | p90 ms | vs no index |`,
    '| --- | ---: | ---: | ---: |',
  ]
  try {
    for (const o of [plain, indexed]) {
      await client.query(
        `INSERT INTO "${o.schema}".outbox (topic, key, value, ordering_hash) SELECT 'park-cost', convert_to('k' || (i % 1000), 'UTF8'), convert_to(repeat('v', 256), 'UTF8'), ((i::bigint * 2654435761) % 1000)::int FROM generate_series(1, ${BACKLOG}) AS i`,
      )
      await client.query(`VACUUM ANALYZE "${o.schema}".outbox`)
    }
    for (const size of [1, 100]) {
      const times = new Map<string, number[]>([
        ['plain', []],
        ['indexed', []],
      ])
      const medians = new Map<string, number[]>([
        ['plain', []],
        ['indexed', []],
      ])
      for (let rep = 0; rep < REPS; rep++) {
        const rep_times = new Map<string, number[]>([
          ['plain', []],
          ['indexed', []],
        ])
        for (let block = 0; block < TRANSACTIONS / BLOCK; block++) {
          for (const [name, o] of [
            ['plain', plain],
            ['indexed', indexed],
          ] as const) {
            for (let i = 0; i < BLOCK; i++) {
              const n = block * BLOCK + i
              const statement =
                size === 1
                  ? insertOneStatement(o.table, record(n), false)
                  : insertStatement(
                      o.table,
                      Array.from({ length: size }, (_, j) => record(n * size + j)),
                      false,
                    )
              const started = performance.now()
              await client.query('BEGIN')
              await client.query(statement.text, statement.values)
              await client.query('COMMIT')
              rep_times.get(name)?.push(performance.now() - started)
            }
          }
        }
        for (const name of ['plain', 'indexed']) {
          const list = rep_times.get(name) ?? []
          times.get(name)?.push(...list)
          medians.get(name)?.push(median(list))
        }
      }
      const base = median(medians.get('plain') ?? [])
      for (const name of ['plain', 'indexed']) {
        const m = medians.get(name) ?? []
        lines.push(
          `| ${size} msg/tx, ${name === 'plain' ? 'no new index' : 'with (ordering_hash, id) index'} | ${f2(median(m))} (reps ${spread(m)}) | ${f2(
            percentile(
              [...(times.get(name) ?? [])].sort((a, b) => a - b),
              90,
            ),
          )} | ${f2(median(m) / base)}x |`,
        )
      }
    }
  } finally {
    await dropSchema(plain.schema)
    await dropSchema(indexed.schema)
  }
  return lines
}

async function moves(): Promise<string[]> {
  const lines = [
    `| move of ${STUCK.toLocaleString('en')} rows of one key (front of a ${(STUCK + BACKLOG).toLocaleString('en')}-row outbox) | park ms (median, min-max) | unpark ms (median, min-max) |`,
    '| --- | ---: | ---: |',
  ]
  const results = new Map<string, { park: number[]; unpark: number[] }>()
  const made = [await outbox(false), await outbox(true)]
  try {
    for (const o of made) {
      await client.query(
        `INSERT INTO "${o.schema}".outbox (topic, key, value, ordering_hash) SELECT 'park-cost', convert_to('stuck', 'UTF8'), convert_to(repeat('v', 256), 'UTF8'), -1 FROM generate_series(0, ${STUCK})`,
      )
      await client.query(
        `INSERT INTO "${o.schema}".outbox (topic, key, value, ordering_hash) SELECT 'park-cost', convert_to('k' || (i % 64), 'UTF8'), convert_to(repeat('v', 256), 'UTF8'), (i % 64)::int FROM generate_series(1, ${BACKLOG}) AS i`,
      )
      await client.query(`VACUUM ANALYZE "${o.schema}".outbox`)
    }
    for (let rep = 0; rep < REPS; rep++) {
      for (const [n, o] of made.entries()) {
        const name =
          n === 0 ? 'walk of the primary key from the failed row' : 'through the (ordering_hash, id) index'
        const outboxName = `"${o.schema}".outbox`
        const parked = `"${o.schema}".outbox_parked`
        const first = await client.query(`SELECT min(id) AS id FROM ${outboxName} WHERE ordering_hash = -1`)
        const from = String(first.rows[0].id)
        await client.query('SET enable_seqscan = off')
        let started = performance.now()
        await client.query('BEGIN')
        const park = await client.query(
          `WITH moved AS (DELETE FROM ${outboxName} WHERE ordering_hash = -1 AND id > ${from} RETURNING id, ${columns})
INSERT INTO ${parked} (id, ${columns}) SELECT id, ${columns} FROM moved`,
        )
        await client.query('COMMIT')
        const parkMs = performance.now() - started
        started = performance.now()
        await client.query('BEGIN')
        const unpark = await client.query(
          `WITH moved AS (DELETE FROM ${parked} WHERE ordering_hash = -1 RETURNING id, ${columns})
INSERT INTO ${outboxName} (id, ${columns}) OVERRIDING SYSTEM VALUE SELECT id, ${columns} FROM moved ORDER BY id`,
        )
        await client.query('COMMIT')
        const unparkMs = performance.now() - started
        if (park.rowCount !== STUCK || unpark.rowCount !== STUCK)
          throw new Error(`moved ${park.rowCount} and ${unpark.rowCount} rows, expected ${STUCK}`)
        const entry = results.get(name) ?? { park: [], unpark: [] }
        entry.park.push(parkMs)
        entry.unpark.push(unparkMs)
        results.set(name, entry)
        console.error(`move rep ${rep + 1} ${name}: park ${f2(parkMs)} ms, unpark ${f2(unparkMs)} ms`)
        await client.query(`VACUUM ${outboxName}`)
        await client.query(`VACUUM ${parked}`)
      }
    }
  } finally {
    for (const o of made) await dropSchema(o.schema)
  }
  for (const [name, r] of results) {
    lines.push(
      `| ${name} | ${f2(median(r.park))} (${spread(r.park)}) | ${f2(median(r.unpark))} (${spread(r.unpark)}) |`,
    )
  }
  return lines
}

const load = (await import('node:os')).loadavg().map((n) => n.toFixed(2))
console.log(`park-costs ${new Date().toISOString()} reps ${REPS} load ${load.join(' ')}`)
if (!argv.includes('--write-only')) console.log((await moves()).join('\n'))
const written = await writePath()
console.log(written.join('\n'))
console.log(
  `load at end ${(await import('node:os'))
    .loadavg()
    .map((n) => n.toFixed(2))
    .join(' ')}`,
)
await client.end()
