// WAL per relayed message (issue 19): what the relay's statements write to PostgreSQL's WAL for
// each message, against a bare DELETE of the same rows from a copy of the same table.
//
// Usage: node bench/wal.ts [--rows=20000] [--reps=3]   (`npm run bench:full` runs it)
// Env: DATABASE_URL (a superuser: the "after a CHECKPOINT" case issues CHECKPOINT).
//
// WAL is read per statement with EXPLAIN (ANALYZE, WAL), so other sessions on a shared server do
// not count. Per batch of 500 each relay variant runs, in one transaction, its claim (single mode,
// default byte budget) and its DELETE; the bare side runs only the DELETE of the same ids. The
// three sides work on copies of one table (same columns, indexes and rows), batch by batch in
// turn, the order rotating per batch:
// - locked: the claim with `FOR UPDATE SKIP LOCKED` (concurrent mode's way, and single/exclusive
//   mode's before), one heap LOCK record per row;
// - unlocked: the single/exclusive claim as the relay runs it, without row locks, leaving out by
//   id the rows its other session holds (here a batch of 500 ids, as in the pipelined steady state);
// - bare: the DELETE alone.
// Commit records are left out of all sides alike. Two states per payload size:
// - steady: the rows were written after the last checkpoint, as when the relay keeps up;
// - after a CHECKPOINT: the first change to each page writes the whole page (full-page writes),
//   as for a backlog that outlived a checkpoint.
// Each case runs `--reps` times on fresh tables; the table shows the median and the spread, and
// the claims' server-side execution time (EXPLAIN ANALYZE, so the rows are not sent) side by side.
// Last column: the totals with the VACUUM after the drain, read back with pg_walinspect (see
// `vacuumWal`; "not measured" without it). A claim that walks past the pages the last batch
// emptied prunes them (a Heap2 PRUNE record per page), work the bare side leaves to VACUUM.
import { randomBytes } from 'node:crypto'
import { loadavg } from 'node:os'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { claimSql, deleteSql } from '../src/dialects/postgres/sql.ts'
import { bufferSerializer, defineTopic, RELAY_DEFAULTS } from '../src/index.ts'
import { DATABASE_URL, machineInfo, uniqueName } from './lib/env.ts'
import { midpointMedian as median } from './lib/stats.ts'

const KEYS = 64
const BATCH = RELAY_DEFAULTS.maxMessagesPerPoll

interface Wal {
  records: number
  fpi: number
  bytes: number
  /** Server-side execution time of each claim, ms (EXPLAIN ANALYZE, so without sending rows). */
  claimMs: number[]
  /** WAL of the VACUUM after the drain, bytes (undefined: not measured, see `vacuumWal`). */
  vacuumBytes?: number
}

const { values } = parseArgs({
  options: { rows: { type: 'string', default: '20000' }, reps: { type: 'string', default: '3' } },
})
const ROWS = Number(values.rows)
if (!Number.isInteger(ROWS) || ROWS < BATCH) throw new Error(`--rows must be an integer >= ${BATCH}`)
const REPS = Number(values.reps)
if (!Number.isInteger(REPS) || REPS < 1) throw new Error('--reps must be an integer >= 1')
const SIDES = ['locked', 'unlocked', 'bare'] as const
type Side = (typeof SIDES)[number]

const client = new pg.Client({ connectionString: DATABASE_URL, application_name: 'k-entity-bench-wal' })
await client.connect()
const machine = await machineInfo()
process.stderr.write(
  `wal: PostgreSQL ${machine.postgres}, ${ROWS} rows per case, batches of ${BATCH}, ${REPS} reps\n`,
)
const rows: string[] = []
try {
  for (const payload of [256, 1024]) {
    for (const checkpoint of [false, true]) {
      const runs: Record<Side, Wal>[] = []
      for (let rep = 0; rep < REPS; rep++) {
        const result = await runCase(payload, checkpoint)
        runs.push(result)
        process.stderr.write(
          `${payload} B ${checkpoint ? 'checkpoint' : 'steady'} rep ${rep + 1}: ${SIDES.map((side) => `${side} ${(result[side].bytes / ROWS).toFixed(1)} B/msg`).join(', ')}\n`,
        )
      }
      const row = `| ${payload} B | ${checkpoint ? 'after a CHECKPOINT' : 'steady'} | ${perMessage(runs, 'locked')} | ${perMessage(runs, 'unlocked')} | ${perMessage(runs, 'bare')} | ${ratio(runs, 'locked')} | **${ratio(runs, 'unlocked')}** | ${fpi(runs)} | ${claimTime(runs)} | ${withVacuum(runs)} |`
      rows.push(row)
      process.stderr.write(`${row}\n`)
    }
  }
} finally {
  await client.end()
}
console.log(
  `load average at the end: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
)
console.log(
  '| payload | state | locked claim + delete, WAL B/msg | unlocked claim + delete, WAL B/msg | bare DELETE, WAL B/msg | locked / bare | unlocked / bare | full-page images per msg, locked / unlocked / bare | claim server ms, median of all batches, locked / unlocked | with the VACUUM after: WAL B/msg locked / unlocked / bare; locked / bare, unlocked / bare |',
)
console.log('|---|---|---|---|---|---|---|---|---|---|')
for (const row of rows) console.log(row)

/** Median over the repetitions, and the spread (min-max) when the repetitions differ. */
function spread(values: number[], digits: number): string {
  const low = Math.min(...values)
  const high = Math.max(...values)
  const mid = median(values).toFixed(digits)
  return low.toFixed(digits) === high.toFixed(digits)
    ? mid
    : `${mid} (${low.toFixed(digits)}-${high.toFixed(digits)})`
}

function perMessage(runs: Record<Side, Wal>[], side: Side): string {
  const bytes = spread(
    runs.map((run) => run[side].bytes / ROWS),
    0,
  )
  return `${bytes} (${spread(
    runs.map((run) => run[side].records / ROWS),
    2,
  )} records)`
}

function ratio(runs: Record<Side, Wal>[], side: Side): string {
  return `${spread(
    runs.map((run) => run[side].bytes / run.bare.bytes),
    2,
  )}x`
}

function withVacuum(runs: Record<Side, Wal>[]): string {
  if (runs.some((run) => SIDES.some((side) => run[side].vacuumBytes === undefined))) return 'not measured'
  const total = (run: Record<Side, Wal>, side: Side) => run[side].bytes + (run[side].vacuumBytes ?? 0)
  const perMessage = SIDES.map((side) =>
    spread(
      runs.map((run) => total(run, side) / ROWS),
      0,
    ),
  ).join(' / ')
  const against = (side: Side) =>
    spread(
      runs.map((run) => total(run, side) / total(run, 'bare')),
      2,
    )
  return `${perMessage}; ${against('locked')}x, ${against('unlocked')}x`
}

/** Claims of every repetition together: side by side, batch by batch, so load hits both alike. */
function claimTime(runs: Record<Side, Wal>[]): string {
  const side = (name: Side) => median(runs.flatMap((run) => run[name].claimMs)).toFixed(2)
  return `${side('locked')} / ${side('unlocked')}`
}

function fpi(runs: Record<Side, Wal>[]): string {
  return SIDES.map((side) =>
    spread(
      runs.map((run) => run[side].fpi / ROWS),
      3,
    ),
  ).join(' / ')
}

async function runCase(payload: number, checkpoint: boolean): Promise<Record<Side, Wal>> {
  const schema = uniqueName('bench_wal')
  const tables: Record<Side, { schema: string; table: string }> = {
    locked: { schema, table: 'outbox' },
    unlocked: { schema, table: 'unlocked' },
    bare: { schema, table: 'bare' },
  }
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
    for (const copy of ['unlocked', 'bare']) {
      await client.query(`CREATE TABLE "${schema}".${copy} (LIKE "${schema}".outbox INCLUDING ALL)`)
      await client.query(
        `INSERT INTO "${schema}".${copy} OVERRIDING SYSTEM VALUE SELECT * FROM "${schema}".outbox`,
      )
    }
    await client.query(`VACUUM ANALYZE "${schema}".outbox, "${schema}".unlocked, "${schema}".bare`)
    if (checkpoint) await client.query('CHECKPOINT')
    const wal: Record<Side, Wal> = {
      locked: { records: 0, fpi: 0, bytes: 0, claimMs: [] },
      unlocked: { records: 0, fpi: 0, bytes: 0, claimMs: [] },
      bare: { records: 0, fpi: 0, bytes: 0, claimMs: [] },
    }
    const budget = { maxBytes: RELAY_DEFAULTS.maxBytesPerPoll }
    // The pipelined relay's steady state: the other session holds the previous batch, whose ids
    // the unlocked claim leaves out (already deleted here, so the claim finds the same rows).
    let held: string[] = []
    // Every id, read once before the drain: a query per batch would visit the pages the last
    // batch emptied and prune them (a WAL record per page) outside the measured statements.
    const all = (await client.query(`SELECT id::text AS id FROM "${schema}".outbox ORDER BY id`)).rows.map(
      (r) => r.id as string,
    )
    for (let batch = 0; ; batch++) {
      // The ids the claims are about to take: the oldest BATCH rows (nothing else is locked).
      const ids = all.slice(batch * BATCH, (batch + 1) * BATCH)
      if (ids.length === 0) break
      for (let turn = 0; turn < SIDES.length; turn++) {
        const side = SIDES[(batch + turn) % SIDES.length] as Side
        await client.query('BEGIN')
        if (side !== 'bare') {
          const claim = claimSql(
            tables[side],
            BATCH,
            false,
            undefined,
            budget,
            side === 'unlocked' ? { held } : undefined,
          )
          const claimed = await explainWal(claim)
          // Both claims must take the batch the DELETE then removes, or the sides compare different work.
          if (claimed.rows !== ids.length)
            throw new Error(`${side} claim took ${claimed.rows} rows, expected ${ids.length}`)
          add(wal[side], claimed)
          wal[side].claimMs.push(claimed.ms)
        }
        add(wal[side], await explainWal(deleteSql(tables[side], ids)))
        await client.query('COMMIT')
      }
      held = ids
    }
    await vacuumWal(schema, tables, wal)
    return wal
  } finally {
    await client.query('ROLLBACK').catch(() => {})
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {})
    await outbox.close()
  }
}

/**
 * The VACUUM that removes what the drain left (dead tuples, their index entries), which the
 * DELETE's own WAL does not include: a claim that reads past the pages a batch emptied prunes
 * them on the way (a Heap2 PRUNE record per page) and VACUUM then has less to do, so the sides
 * compare fairly only with it. EXPLAIN cannot measure VACUUM: its records are read back with
 * pg_walinspect (PostgreSQL 15+, superuser), by the relation files of each side. Tables are
 * vacuumed one after the other, so they see about the same oldest snapshot on a shared server.
 */
async function vacuumWal(schema: string, tables: Record<Side, { table: string }>, wal: Record<Side, Wal>) {
  try {
    await vacuumWalOf(schema, tables, wal)
  } catch (error) {
    for (const side of SIDES) wal[side].vacuumBytes = undefined
    process.stderr.write(`wal: VACUUM not measured (${(error as Error).message})\n`)
  }
}

async function vacuumWalOf(schema: string, tables: Record<Side, { table: string }>, wal: Record<Side, Wal>) {
  // Where the extension lives: this schema, unless it was installed elsewhere before.
  await client.query(`CREATE EXTENSION IF NOT EXISTS pg_walinspect SCHEMA "${schema}"`)
  const walinspect = (
    await client.query(
      "SELECT extnamespace::regnamespace::text AS name FROM pg_extension WHERE extname = 'pg_walinspect'",
    )
  ).rows[0]?.name as string
  await client.query(`CREATE TABLE "${schema}".flush (n int)`)
  const files: Record<Side, string[]> = { locked: [], unlocked: [], bare: [] }
  for (const side of SIDES) {
    const relation = `'"${schema}".${tables[side].table}'::regclass`
    const result = await client.query(
      `SELECT pg_relation_filenode(oid)::text AS file FROM pg_class WHERE oid = ${relation}
         OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = ${relation})
         OR oid = (SELECT reltoastrelid FROM pg_class WHERE oid = ${relation})
         OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = (SELECT reltoastrelid FROM pg_class WHERE oid = ${relation}))`,
    )
    files[side] = result.rows.map((r) => r.file as string)
  }
  const lsn = async () =>
    (await client.query('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0].l as string
  const start = await lsn()
  for (const side of SIDES) await client.query(`VACUUM "${schema}".${tables[side].table}`)
  const end = await lsn()
  // A commit flushes the WAL up to it, so the records are readable.
  await client.query(`INSERT INTO "${schema}".flush VALUES (1)`)
  const records = await client.query(
    `SELECT record_length AS length, block_ref FROM ${walinspect}.pg_get_wal_records_info_till_end_of_wal('${start}')
     WHERE start_lsn < '${end}' AND block_ref IS NOT NULL`,
  )
  for (const side of SIDES) {
    // "rel <tablespace>/<database>/<file>": the file is the last of the three numbers.
    const mine = files[side].map((file) => new RegExp(`/${file}(?![\\d/])`))
    wal[side].vacuumBytes = records.rows
      .filter((r) => mine.some((pattern) => pattern.test(r.block_ref as string)))
      .reduce((sum, r) => sum + Number(r.length), 0)
  }
}

function add(total: Wal, wal: Omit<Wal, 'claimMs'>): void {
  total.records += wal.records
  total.fpi += wal.fpi
  total.bytes += wal.bytes
}

async function explainWal(sql: string): Promise<Omit<Wal, 'claimMs'> & { rows: number; ms: number }> {
  const result = await client.query(`EXPLAIN (ANALYZE, WAL, TIMING OFF, FORMAT JSON) ${sql}`)
  const row = result.rows[0] as {
    'QUERY PLAN': [{ Plan: Record<string, number>; 'Execution Time': number }]
  }
  const plan = row['QUERY PLAN'][0].Plan
  return {
    records: plan['WAL Records'] ?? 0,
    fpi: plan['WAL FPI'] ?? 0,
    bytes: plan['WAL Bytes'] ?? 0,
    rows: plan['Actual Rows'] ?? 0,
    ms: row['QUERY PLAN'][0]['Execution Time'],
  }
}
