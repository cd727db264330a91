// WAL per relayed message (issue 19): what the relay's statements write to PostgreSQL's WAL for
// each message, against a bare DELETE of the same rows from a copy of the same table.
//
// Usage: node bench/wal.ts [--rows=20000]   (`npm run bench:full` runs it)
// Env: DATABASE_URL (a superuser: the "after a CHECKPOINT" case issues CHECKPOINT).
//
// WAL is read per statement with EXPLAIN (ANALYZE, WAL), so other sessions on a shared server do
// not count. Per batch of 500 the relay runs, in one transaction, its claim (the single-mode claim
// with the default byte budget, which locks the rows: one heap LOCK record each) and its DELETE;
// the bare side runs only the DELETE of the same ids on a copy (same columns, indexes and rows).
// Commit records are left out of both sides alike. Two states per payload size:
// - steady: the rows were written after the last checkpoint, as when the relay keeps up;
// - after a CHECKPOINT: the first change to each page writes the whole page (full-page writes),
//   as for a backlog that outlived a checkpoint.
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { claimSql, deleteSql } from '../src/dialects/postgres/sql.ts'
import { bufferSerializer, defineTopic, RELAY_DEFAULTS } from '../src/index.ts'
import { DATABASE_URL, machineInfo, uniqueName } from './lib/env.ts'

const KEYS = 64
const BATCH = RELAY_DEFAULTS.maxMessagesPerPoll

interface Wal {
  records: number
  fpi: number
  bytes: number
}

const { values } = parseArgs({ options: { rows: { type: 'string', default: '20000' } } })
const ROWS = Number(values.rows)
if (!Number.isInteger(ROWS) || ROWS < BATCH) throw new Error(`--rows must be an integer >= ${BATCH}`)

const client = new pg.Client({ connectionString: DATABASE_URL, application_name: 'k-entity-bench-wal' })
await client.connect()
const machine = await machineInfo()
process.stderr.write(`wal: PostgreSQL ${machine.postgres}, ${ROWS} rows per case, batches of ${BATCH}\n`)
const rows: string[] = []
try {
  for (const payload of [256, 1024]) {
    for (const checkpoint of [false, true]) {
      const result = await runCase(payload, checkpoint)
      const row = `| ${payload} B | ${checkpoint ? 'after a CHECKPOINT' : 'steady'} | ${perMessage(result.relay)} | ${perMessage(result.bare)} | ${(result.relay.bytes / result.bare.bytes).toFixed(2)}x | ${(result.relay.fpi / ROWS).toFixed(3)} / ${(result.bare.fpi / ROWS).toFixed(3)} |`
      rows.push(row)
      process.stderr.write(`${row}\n`)
    }
  }
} finally {
  await client.end()
}
console.log(
  '| payload | state | relay WAL B/msg (claim + delete) | bare DELETE WAL B/msg | relay / bare | full-page images per msg, relay / bare |',
)
console.log('|---|---|---|---|---|---|')
for (const row of rows) console.log(row)

function perMessage(wal: Wal): string {
  return `${(wal.bytes / ROWS).toFixed(0)} (${(wal.records / ROWS).toFixed(2)} records)`
}

async function runCase(payload: number, checkpoint: boolean): Promise<{ relay: Wal; bare: Wal }> {
  const schema = uniqueName('bench_wal')
  const table = { schema, table: 'outbox' }
  const outbox = createPgOutbox({
    topics: { t: defineTopic<Uint8Array>({ name: 'bench-wal', serializer: bufferSerializer }) },
    schema,
  })
  try {
    await outbox.migrate(DATABASE_URL)
    // A checkpoint before filling, so that in the steady case every page the measurement touches
    // was already written since the last checkpoint (no full-page images on either side).
    await client.query('CHECKPOINT')
    for (let from = 0; from < ROWS; from += 1000) {
      await client.query('BEGIN')
      const producers = outbox.in(client)
      const values = []
      for (let i = from; i < Math.min(ROWS, from + 1000); i++)
        values.push({ value: randomBytes(payload), key: `key-${i % KEYS}`, headers: { 'ke-seq': String(i) } })
      for (const v of values) await producers.t.produce(v.value, { key: v.key, headers: v.headers })
      await client.query('COMMIT')
    }
    await client.query(`CREATE TABLE "${schema}".bare (LIKE "${schema}".outbox INCLUDING ALL)`)
    await client.query(
      `INSERT INTO "${schema}".bare OVERRIDING SYSTEM VALUE SELECT * FROM "${schema}".outbox`,
    )
    await client.query(`VACUUM ANALYZE "${schema}".outbox, "${schema}".bare`)
    if (checkpoint) await client.query('CHECKPOINT')
    const relay: Wal = { records: 0, fpi: 0, bytes: 0 }
    const bare: Wal = { records: 0, fpi: 0, bytes: 0 }
    const claim = claimSql(table, BATCH, false, undefined, { maxBytes: RELAY_DEFAULTS.maxBytesPerPoll })
    for (;;) {
      await client.query('BEGIN')
      // The ids the claim is about to lock: the oldest BATCH rows (one session, nothing locked).
      const ids = (
        await client.query(`SELECT id::text AS id FROM "${schema}".outbox ORDER BY id LIMIT ${BATCH}`)
      ).rows.map((r) => r.id as string)
      if (ids.length === 0) {
        await client.query('COMMIT')
        break
      }
      add(relay, await explainWal(claim))
      add(relay, await explainWal(deleteSql(table, ids)))
      await client.query('COMMIT')
      await client.query('BEGIN')
      add(bare, await explainWal(deleteSql({ schema, table: 'bare' }, ids)))
      await client.query('COMMIT')
    }
    return { relay, bare }
  } finally {
    await client.query('ROLLBACK').catch(() => {})
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {})
    await outbox.close()
  }
}

function add(total: Wal, wal: Wal): void {
  total.records += wal.records
  total.fpi += wal.fpi
  total.bytes += wal.bytes
}

async function explainWal(sql: string): Promise<Wal> {
  const result = await client.query(`EXPLAIN (ANALYZE, WAL, TIMING OFF, FORMAT JSON) ${sql}`)
  const row = result.rows[0] as { 'QUERY PLAN': [{ Plan: Record<string, number> }] }
  const plan = row['QUERY PLAN'][0].Plan
  return { records: plan['WAL Records'] ?? 0, fpi: plan['WAL FPI'] ?? 0, bytes: plan['WAL Bytes'] ?? 0 }
}
