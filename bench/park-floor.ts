// What the claim floor held at a waiting message costs once its key's rows are parked: a 500-row
// claim (single mode, byte budget, relay planner settings) over 100,000 parked rows and 45,000
// sent healthy rows, with the floor at the waiting message (where the relay's floor stays) against
// the floor at the first live healthy row (where it would be without the waiting message),
// alternating, 22 timed claims each.
//
//   scripts/node-env.sh node bench/park-floor.ts
import { loadavg } from 'node:os'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { parkSql } from '../src/dialects/postgres/parking.ts'
import { RELAY_PLANNER_SETTINGS } from '../src/dialects/postgres/relay-store.ts'
import { claimSql } from '../src/dialects/postgres/sql.ts'
import { defineTopic } from '../src/index.ts'
import { DATABASE_URL, dropSchema, uniqueName, withClient } from './lib/env.ts'

const schema = uniqueName('ke_parkfloor')
const table = { schema, table: 'outbox' }
await createPgOutbox({
  topics: { t: defineTopic<{ k: string }>({ name: 't', key: (m) => m.k }) },
  schema,
  kafka: { brokers: ['127.0.0.1:1'] },
}).migrate(DATABASE_URL)
const outbox = `"${schema}".outbox`
try {
  await withClient(async (c) => {
    await c.query(
      `INSERT INTO ${outbox} (topic, key, value, ordering_hash) SELECT 't', 'stuck', convert_to(repeat('v', 256), 'UTF8'), -1 FROM generate_series(0, 99999)`,
    )
    await c.query(
      `INSERT INTO ${outbox} (topic, key, value, ordering_hash) SELECT 't', convert_to('k' || (i % 64), 'UTF8'), convert_to(repeat('v', 256), 'UTF8'), (i % 64)::int FROM generate_series(0, 99999) i`,
    )
    await c.query(`UPDATE ${outbox} SET attempts = 1, available_at = now() + interval '1 hour' WHERE id = 1`)
    await c.query(`VACUUM ANALYZE ${outbox}`)
    await c.query('BEGIN')
    await c.query(parkSql(table, ''))
    await c.query('COMMIT')
    await c.query(
      `DELETE FROM ${outbox} WHERE id IN (SELECT id FROM ${outbox} WHERE ordering_hash >= 0 ORDER BY id LIMIT 45000)`,
    )
    const firstLive = (await c.query(`SELECT min(id)::text AS id FROM ${outbox} WHERE id > 1`)).rows[0]
      .id as string
    await c.query(RELAY_PLANNER_SETTINGS)
    const variants: [string, string][] = [
      ['floor at the waiting message (id 1)', '1'],
      [`floor at the first live healthy row (${firstLive})`, firstLive],
    ]
    const times = new Map<string, number[]>()
    for (let i = 0; i < 25; i++) {
      for (const [label, floor] of variants) {
        await c.query('BEGIN')
        const started = performance.now()
        await c.query(claimSql(table, 500, false, floor, { maxBytes: 4_000_000 }, true))
        const ms = performance.now() - started
        await c.query('ROLLBACK')
        if (i >= 3) times.set(label, [...(times.get(label) ?? []), ms])
      }
    }
    for (const [label, list] of times) {
      list.sort((a, b) => a - b)
      const at = (q: number) => (list[Math.floor(q * (list.length - 1))] as number).toFixed(2)
      console.log(`${label}: median ${at(0.5)} ms, p10 ${at(0.1)}, p90 ${at(0.9)}`)
    }
    console.log(
      `load average ${loadavg()
        .map((n) => n.toFixed(1))
        .join(' ')}`,
    )
  })
} finally {
  await dropSchema(schema)
}
