// status() against count(*) with many pending rows on PostgreSQL (issue 20: a status read must
// stay cheap with ten million rows waiting). Usage:
//   scripts/node-env.sh node bench/admin-status.ts --rows 1000000 [--runs 7]
// Fills its own schema with generate_series (4 topics, 100-byte values), then times status()
// (default cap 100,000) and a plain count(*), each the median of --runs after a warm-up run.
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createAdmin } from '../src/admin/index.ts'

const { values } = parseArgs({
  options: { rows: { type: 'string', default: '1000000' }, runs: { type: 'string', default: '7' } },
})
const rows = Number(values.rows)
const runs = Number(values.runs)
const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const schema = `ke_adm_bench_${process.pid}`
const client = new pg.Client({ connectionString: url })
await client.connect()

async function median(fn: () => Promise<unknown>): Promise<number> {
  await fn()
  const times: number[] = []
  for (let i = 0; i < runs; i++) {
    const start = performance.now()
    await fn()
    times.push(performance.now() - start)
  }
  times.sort((a, b) => a - b)
  return times[Math.floor(times.length / 2)] as number
}

const admin = createAdmin({ url, schema })
try {
  await admin.migrate()
  let start = performance.now()
  await client.query(
    `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash, created_at)
SELECT 'bench-' || (g % 4), int4send(g), convert_to(repeat('x', 100), 'UTF8'), g, now() - make_interval(secs => (${rows} - g) / 1000.0)
FROM generate_series(1, ${rows}) AS g`,
  )
  console.log(`inserted ${rows} rows in ${((performance.now() - start) / 1000).toFixed(1)} s`)
  const count = async () => client.query(`SELECT count(*) FROM "${schema}".outbox`)
  const report = async (label: string) => {
    const status = await admin.status()
    const statusMs = await median(() => admin.status())
    const countMs = await median(count)
    console.log(
      `${label}: status() ${statusMs.toFixed(1)} ms (pending ${status.pending}, exact ${status.exact}, topics ${status.topics.length}), count(*) ${countMs.toFixed(1)} ms`,
    )
  }
  await report('before ANALYZE')
  start = performance.now()
  await client.query(`ANALYZE "${schema}".outbox`)
  await report(`after ANALYZE (${((performance.now() - start) / 1000).toFixed(1)} s)`)
} finally {
  await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
  await client.end()
  await admin.close()
}
