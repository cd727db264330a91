// The inbox's batch transaction on MariaDB/MySQL without Kafka: `--workers` connections (one per
// partition) each run `--batches` transactions of `--rows` inbox rows, variants alternating
// per repetition, to tell the round trips, the INSERT's form and the COMMIT's flush apart.
// Usage: node bench/mysql-inbox-insert.ts [--rows=200] [--batches=40] [--workers=4] [--reps=3]
//   [--only='variant;variant']
// MYSQL_URL (default mysql://root@127.0.0.1:3306/test).
import { parseArgs } from 'node:util'
import mysql from 'mysql2/promise'
import { mysqlInbox } from '../src/dialects/mysql/inbox.ts'
import { uniqueName } from '../test/consumer/kafka.ts'
import { insertManyValues } from './lib/mysql-inbox-values.ts'

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '200' },
    batches: { type: 'string', default: '40' },
    workers: { type: 'string', default: '4' },
    reps: { type: 'string', default: '3' },
    only: { type: 'string' },
  },
})
const rows = Number(values.rows)
const batches = Number(values.batches)
const workers = Number(values.workers)
const reps = Number(values.reps)
const url = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
const schema = uniqueName('ke_bench_inbox').replaceAll('-', '_')
const table = { schema, table: 'outbox' }
const group = 'bench-group'
const topic = 'ke-bench-topic-0123456789'

type Conn = mysql.PoolConnection

/** The batch's rows as one JSON parameter of a statement whose text does not depend on their number. */
function jsonTable(t: { schema: string; table: string }, list: ReturnType<typeof entries>) {
  const strict = 'ERROR ON EMPTY ERROR ON ERROR'
  return {
    text: `INSERT INTO \`${t.schema}\`.\`${t.table}_inbox\` (consumer_group, message_key, topic, \`partition\`, \`offset\`, expires_at)
SELECT ?, r.message_key, r.topic, r.p, r.o, UTC_TIMESTAMP(6) + INTERVAL (? * 1000) MICROSECOND
FROM JSON_TABLE(?, '$[*]' COLUMNS (
  message_key VARCHAR(255) PATH '$[0]' ${strict},
  topic VARCHAR(249) PATH '$[1]' ${strict},
  p INT PATH '$[2]' ${strict},
  o BIGINT PATH '$[3]' ${strict}
)) AS r`,
    values: [
      list[0]?.group,
      list[0]?.retentionMs,
      JSON.stringify(list.map((e) => [e.key, e.topic, e.partition, String(e.offset)])),
    ],
  }
}
/** Per variant and phase: ms summed over the current run. */
let phases = new Map<string, number>()
async function t<R>(phase: string, work: Promise<R>): Promise<R> {
  const start = performance.now()
  try {
    return await work
  } finally {
    phases.set(phase, (phases.get(phase) ?? 0) + performance.now() - start)
  }
}
let seq = 0
const entries = (partition: number) =>
  Array.from({ length: rows }, () => {
    const offset = BigInt(seq++)
    return {
      group,
      key: `at:${topic}/${partition}/${offset}`,
      topic,
      partition,
      offset,
      retentionMs: 7 * 86_400_000,
    }
  })

const inbox = `\`${schema}\`.outbox_inbox`
const VARIANTS: Record<string, (c: Conn, partition: number) => Promise<void>> = {
  'begin+commit only': async (c) => {
    await t('begin', c.beginTransaction())
    await t('commit', c.commit())
  },
  'values (before)': async (c, partition) => {
    const s = insertManyValues(table, entries(partition))
    await t('begin', c.beginTransaction())
    await t('insert', c.query(s.text, s.values))
    await t('commit', c.commit())
  },
  'text, format only': async (c, partition) => {
    const s = insertManyValues(table, entries(partition))
    c.format(s.text, s.values)
  },
  'prepared (execute)': async (c, partition) => {
    const s = insertManyValues(table, entries(partition))
    await t('begin', c.beginTransaction())
    await t('insert', c.execute(s.text, s.values as never))
    await t('commit', c.commit())
  },
  'text, ignore': async (c, partition) => {
    const s = insertManyValues(table, entries(partition))
    await t('begin', c.beginTransaction())
    await t('insert', c.query(s.text.replace('INSERT INTO', 'INSERT IGNORE INTO'), s.values))
    await t('commit', c.commit())
  },
  json_table: async (c, partition) => {
    const s = jsonTable(table, entries(partition))
    await t('begin', c.beginTransaction())
    await t('insert', c.query(s.text, s.values))
    await t('commit', c.commit())
  },
  'json_table prepared': async (c, partition) => {
    const s = jsonTable(table, entries(partition))
    await t('begin', c.beginTransaction())
    await t('insert', c.execute(s.text, s.values as never))
    await t('commit', c.commit())
  },
  'json_table, format only': async (c, partition) => {
    const s = jsonTable(table, entries(partition))
    c.format(s.text, s.values)
  },
  'text, literal expires': async (c, partition) => {
    const list = entries(partition)
    const values: unknown[] = []
    for (const e of list) values.push(e.group, e.key, e.topic, e.partition, String(e.offset))
    await t('begin', c.beginTransaction())
    await t(
      'insert',
      c.query(
        `INSERT INTO ${inbox} (consumer_group, message_key, topic, \`partition\`, \`offset\`, expires_at) VALUES ${list.map(() => "(?, ?, ?, ?, ?, '2030-01-01 00:00:00.000000')").join(',')}`,
        values,
      ),
    )
    await t('commit', c.commit())
  },
  'text, no expires index': async (c, partition) => {
    const s = insertManyValues(table, entries(partition))
    await t('begin', c.beginTransaction())
    await t('insert', c.query(s.text.replace('outbox_inbox', 'noidx_inbox'), s.values))
    await t('commit', c.commit())
  },
  'text, ascii key': async (c, partition) => {
    const s = insertManyValues(table, entries(partition))
    await t('begin', c.beginTransaction())
    await t('insert', c.query(s.text.replace('outbox_inbox', 'ascii_inbox'), s.values))
    await t('commit', c.commit())
  },
  'text, autocommit': async (c, partition) => {
    const s = insertManyValues(table, entries(partition))
    await t('insert', c.query(s.text, s.values))
  },
}
const names = values.only === undefined ? Object.keys(VARIANTS) : values.only.split(';')

const pool = mysql.createPool({ uri: url, connectionLimit: workers + 1 })
try {
  await pool.query(`CREATE DATABASE \`${schema}\``)
  const session = await mysql.createConnection(url)
  await mysqlInbox.migrate(table, async () => ({
    query: async (text: string) => {
      await session.query(text)
      return { rows: [], affectedRows: 0 }
    },
    end: async () => {},
    destroy: () => {},
    onError: () => {},
  }))
  await session.query(`CREATE TABLE \`${schema}\`.noidx_inbox LIKE ${inbox}`)
  await session.query(`ALTER TABLE \`${schema}\`.noidx_inbox DROP INDEX outbox_inbox_expires_idx`)
  await session.query(`CREATE TABLE \`${schema}\`.ascii_inbox LIKE ${inbox}`)
  await session.query(
    `ALTER TABLE \`${schema}\`.ascii_inbox MODIFY message_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL`,
  )
  await session.end()
  const results = new Map<string, number[]>(names.map((n) => [n, []]))
  const phaseSums = new Map<string, Map<string, number>>(names.map((n) => [n, new Map()]))
  for (let rep = 0; rep < reps; rep++) {
    const order = rep % 2 === 0 ? names : [...names].reverse()
    for (const name of order) {
      const variant = VARIANTS[name]
      if (variant === undefined) throw new Error(`no variant ${name}`)
      await pool.query(`TRUNCATE TABLE ${inbox}`)
      await pool.query(`TRUNCATE TABLE \`${schema}\`.noidx_inbox`)
      await pool.query(`TRUNCATE TABLE \`${schema}\`.ascii_inbox`)
      phases = new Map()
      const start = performance.now()
      await Promise.all(
        Array.from({ length: workers }, async (_, partition) => {
          const c = await pool.getConnection()
          try {
            for (let b = 0; b < batches; b++) await variant(c, partition)
          } finally {
            c.release()
          }
        }),
      )
      const ms = (performance.now() - start) / (batches * workers)
      results.get(name)?.push(ms)
      const sums = phaseSums.get(name) as Map<string, number>
      for (const [phase, sum] of phases)
        sums.set(phase, (sums.get(phase) ?? 0) + sum / (batches * workers * reps))
    }
  }
  const load = (await import('node:os')).loadavg().map((x) => x.toFixed(1))
  console.log(
    `${rows} rows a transaction, ${workers} connections at once, ${batches} transactions each, load ${load}`,
  )
  for (const name of names) {
    const xs = (results.get(name) as number[]).sort((a, b) => a - b)
    const median = xs[Math.floor(xs.length / 2)] as number
    console.log(
      `  ${name.padEnd(20)} ${median.toFixed(2).padStart(7)} ms a transaction per connection (${xs.map((x) => x.toFixed(2)).join(', ')}), ${Math.round((rows * 1000) / median)} rows/s; ${[...(phaseSums.get(name) as Map<string, number>)].map(([p, v]) => `${p} ${v.toFixed(2)}`).join(', ')} ms mean`,
    )
  }
} finally {
  await pool.query(`DROP DATABASE IF EXISTS \`${schema}\``).catch(() => {})
  await pool.end()
}
