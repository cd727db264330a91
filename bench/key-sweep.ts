// Claims against the number of distinct keys, and relays against each other, with a stub
// transport (no Kafka: what is measured is the database side of the relay).
//
//   scripts/node-env.sh node bench/key-sweep.ts [--only sweep|scaling|shapes|hol] [--keys 64,10000,1000000]
//     [--rows 1000000] [--drain 40000] [--reps 3] [--claims 30] [--relays 1,2,4] [--before <checkout>]
//     [--layouts none,front,mixed]
//
// sweep:   per key count, one outbox of max(`--rows`, keys) rows (one INSERT ... SELECT
//          generate_series), all filled first; the claim's cost in single and concurrent mode (N
//          claims, each in a rolled-back transaction, client-side ms, taking turns across outboxes
//          and modes), then `--reps` rounds of drains of `--drain` rows by one relay process, each
//          round over every outbox and mode.
// shapes:  the same claim cost for the concurrent claim's SQL of another checkout (`--before`,
//          its root directory) side by side with this one's.
// --before <checkout> also adds that checkout's concurrent claim and relay to the sweep.
// --slots N (default 64): the sweep's concurrent variant, and the scaling's relays once more, with
//          relay option claimSlots N (per-slot try-locks instead of per-key ones); 0 leaves them out.
// scaling: 1, 2, 4 relay processes in concurrent mode draining one outbox of 10,000 keys; the
//          CPU of the relay processes and of their PostgreSQL backends is read from /proc.
// hol:     one key waiting for a retry with 100,000 rows behind it: claim cost and the healthy
//          keys' drain rate against an outbox without it (a drain that stalls ends after 30 s).
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { ClaimFloor } from '../src/dialects/postgres/claim-floor.ts'
import { claimSql } from '../src/dialects/postgres/sql.ts'
import { defineTopic, type MessageTransport, type OutboxRecord } from '../src/index.ts'
import { DATABASE_URL, dropSchema, uniqueName, withClient } from './lib/env.ts'
import { percentile, sleep } from './lib/stats.ts'

const TOPIC = 'key-sweep'
const PAYLOAD = 256

interface Library {
  createPgOutbox: typeof createPgOutbox
  defineTopic: typeof defineTopic
}

function stubOutbox(schema: string, library: Library = { createPgOutbox, defineTopic }) {
  return library.createPgOutbox({
    topics: { bench: library.defineTopic<{ key: string }>({ name: TOPIC, key: (m) => m.key }) },
    schema,
    kafka: { brokers: ['127.0.0.1:1'] },
  })
}

/** Counts what it is given and acknowledges it at once: the relay's database work alone. */
class StubTransport implements MessageTransport {
  sent = 0
  async send(records: readonly OutboxRecord[]): Promise<void> {
    this.sent += records.length
  }
  async close(): Promise<void> {}
}

// ---------------------------------------------------------------- worker (child process)

/** A relay in its own process: "ready", waits for "go", reports its count, stops on "stop". */
async function worker(schema: string, mode: 'single' | 'concurrent', checkout?: string): Promise<void> {
  const stub = new StubTransport()
  // Another checkout's relay (`--before`), driven the same way.
  const library: Library =
    checkout === undefined
      ? { createPgOutbox, defineTopic }
      : {
          ...((await import(`${checkout}/src/adapters/pg/index.ts`)) as Pick<Library, 'createPgOutbox'>),
          ...((await import(`${checkout}/src/index.ts`)) as Pick<Library, 'defineTopic'>),
        }
  // KEY_SWEEP_EVENTS=1: the relay's events on stderr, to see what a slow drain was doing.
  const onEvent =
    process.env.KEY_SWEEP_EVENTS === '1'
      ? (event: unknown) => console.error(`${mode} ${performance.now().toFixed(0)} ${JSON.stringify(event)}`)
      : undefined
  // KEY_SWEEP_SLOTS: relay option claimSlots, set by `drain` for the slot variant.
  const slots = Number(process.env.KEY_SWEEP_SLOTS ?? 0)
  const relay = stubOutbox(schema, library).relay({
    connection: DATABASE_URL,
    kafka: stub,
    mode,
    ...(slots > 0 ? { claimSlots: slots } : {}),
    ...(onEvent === undefined ? {} : { onEvent }),
  })
  const lines = createInterface({ input: process.stdin })
  const report = setInterval(() => process.stdout.write(`sent ${stub.sent}\n`), 10)
  process.stdout.write('ready\n')
  // CPU from "go" to "stop": the process's start (loading modules) is not the relay's work.
  let before = process.cpuUsage()
  for await (const line of lines) {
    if (line === 'go') {
      before = process.cpuUsage()
      await relay.start()
    }
    if (line === 'stop') break
  }
  const cpu = process.cpuUsage(before)
  await relay.stop()
  clearInterval(report)
  process.stdout.write(`done ${stub.sent} ${(cpu.user + cpu.system) / 1000}\n`)
  lines.close()
}

interface DrainResult {
  msgPerS: number
  /**
   * The rate after the first fifth of the rows: without what the relay does once, at its start
   * (its first claims before its claim floor and blocked runs are known).
   */
  laterMsgPerS: number
  relayCpuMs: number
  pgCpuMs: number
  wallMs: number
  shares: number[]
}

/** Clock ticks of a process (utime + stime), or 0 if it cannot be read. */
function ticks(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
    return Number(fields[11]) + Number(fields[12])
  } catch {
    return 0
  }
}

async function backendPids(client: pg.Client, schema: string): Promise<number[]> {
  const rows = await client.query(
    `SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE $1`,
    [`%"${schema}"%`],
  )
  return rows.rows.map((row) => Number(row.pid))
}

/** `relays` processes drain `rows` messages of the outbox together; timed from "go". */
async function drain(
  schema: string,
  mode: 'single' | 'concurrent',
  relays: number,
  rows: number,
  checkout?: string,
  timeoutMs = 120_000,
  slots?: number,
): Promise<DrainResult> {
  const children = Array.from({ length: relays }, () =>
    spawn(
      process.execPath,
      [import.meta.filename, 'worker', schema, mode, ...(checkout === undefined ? [] : [checkout])],
      {
        stdio: ['pipe', 'pipe', 'inherit'],
        env: { ...process.env, KEY_SWEEP_SLOTS: String(slots ?? 0) },
      },
    ),
  )
  const sent = children.map(() => 0)
  const done = children.map(() => ({ sent: 0, cpuMs: 0, finished: false }))
  const ready = children.map(
    (child, i) =>
      new Promise<void>((resolve, reject) => {
        child.on('exit', (code) => reject(new Error(`relay process exited with ${code}`)))
        createInterface({ input: child.stdout }).on('line', (line) => {
          const [word, a, b] = line.split(' ')
          if (word === 'ready') resolve()
          if (word === 'sent') sent[i] = Number(a)
          if (word === 'done') done[i] = { sent: Number(a), cpuMs: Number(b), finished: true }
        })
      }),
  )
  await Promise.all(ready)
  const client = new pg.Client({ connectionString: DATABASE_URL, application_name: 'k-entity-key-sweep' })
  await client.connect()
  try {
    const started = performance.now()
    for (const child of children) child.stdin.write('go\n')
    // Each relay has two sessions (the pipelined claim): looked for until all are seen.
    const pgTicks = new Map<number, number>()
    let polls = 0
    // A drain that cannot make progress (head-of-line, below) ends at `timeoutMs`: its rate is then what it got.
    let fifth: { at: number; sent: number } | undefined
    while (sent.reduce((a, b) => a + b, 0) < rows && performance.now() - started < timeoutMs) {
      await sleep(20)
      const sofar = sent.reduce((a, b) => a + b, 0)
      if (fifth === undefined && sofar >= rows / 5) fifth = { at: performance.now(), sent: sofar }
      if (pgTicks.size < 2 * relays && polls++ % 5 === 0) {
        for (const pid of await backendPids(client, schema))
          if (!pgTicks.has(pid)) pgTicks.set(pid, ticks(pid))
      }
    }
    const wallMs = performance.now() - started
    const total = sent.reduce((a, b) => a + b, 0)
    let pgCpuMs = 0
    for (const [pid, before] of pgTicks) pgCpuMs += ((ticks(pid) - before) * 1000) / 100
    for (const child of children) child.stdin.write('stop\n')
    while (!done.every((d) => d.finished)) await sleep(20)
    return {
      msgPerS: (total / wallMs) * 1000,
      laterMsgPerS: fifth === undefined ? 0 : ((total - fifth.sent) / (started + wallMs - fifth.at)) * 1000,
      relayCpuMs: done.reduce((a, d) => a + d.cpuMs, 0),
      pgCpuMs,
      wallMs,
      shares: sent,
    }
  } finally {
    await client.end()
  }
}

// ---------------------------------------------------------------- outbox fill and claim cost

async function filledOutbox(rows: number, keys: number): Promise<string> {
  const schema = uniqueName('ke_keys')
  await stubOutbox(schema).migrate(DATABASE_URL)
  await withClient(async (client) => {
    await client.query(`INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash)
SELECT '${TOPIC}', convert_to('k' || (i % ${keys}), 'UTF8'), v.b, (i % ${keys})::int
FROM generate_series(0, ${rows - 1}) AS i, (SELECT convert_to(repeat('v', ${PAYLOAD}), 'UTF8') AS b) AS v`)
    await client.query(`VACUUM ANALYZE "${schema}".outbox`)
  })
  return schema
}

type ClaimSql = typeof claimSql

interface ClaimCost {
  median: number
  p90: number
  rows: number
}

/**
 * `count` claims of 500 per shape, each in a transaction rolled back (so each finds the same
 * outbox); the shapes take turns, so that the machine's load falls on all of them alike.
 */
function claimCosts(
  schema: string,
  shapes: readonly { sql: ClaimSql; concurrent: boolean }[],
  count: number,
): Promise<ClaimCost[]> {
  return claimCostsAcross(
    shapes.map((shape) => ({ schema, ...shape })),
    count,
  )
}

async function claimCostsAcross(
  shapes: readonly { schema: string; sql: ClaimSql; concurrent: boolean }[],
  count: number,
): Promise<ClaimCost[]> {
  const texts = shapes.map((shape) =>
    shape.sql({ schema: shape.schema, table: 'outbox' }, 500, shape.concurrent),
  )
  const times: number[][] = shapes.map(() => [])
  const rows = shapes.map(() => 0)
  await withClient(async (client) => {
    for (let i = 0; i < count + 3; i++) {
      for (const [n, text] of texts.entries()) {
        await client.query('BEGIN')
        const started = performance.now()
        const result = await client.query(text)
        const ms = performance.now() - started
        await client.query('ROLLBACK')
        if (i >= 3) times[n]?.push(ms)
        rows[n] = result.rowCount ?? 0
      }
    }
  })
  return times.map((list, n) => {
    list.sort((a, b) => a - b)
    return { median: percentile(list, 50), p90: percentile(list, 90), rows: rows[n] ?? 0 }
  })
}

// ---------------------------------------------------------------- reports

const f1 = (n: number) => n.toFixed(1)
const f2 = (n: number) => n.toFixed(2)
const int = (n: number) => Math.round(n).toLocaleString('en-US')
const spread = (values: number[]) => `${int(Math.min(...values))}-${int(Math.max(...values))}`
const mid = (values: number[]) =>
  percentile(
    [...values].sort((a, b) => a - b),
    50,
  )

interface Variant {
  label: string
  mode: 'single' | 'concurrent'
  claim: ClaimSql
  checkout?: string
  /** Relay option claimSlots. */
  slots?: number
}

/** `--before <checkout>`: that checkout's concurrent claim and relay as one more variant. */
async function variants(options: Options): Promise<Variant[]> {
  const list: Variant[] = [
    { label: 'single', mode: 'single', claim: claimSql },
    { label: 'concurrent', mode: 'concurrent', claim: claimSql },
  ]
  const slots = options.slots
  if (slots > 0) {
    const slotted: ClaimSql = (table, limit, concurrent, floor, budget, unlocked) =>
      claimSql(table, limit, concurrent, floor, budget, unlocked, slots)
    list.push({ label: `concurrent, claimSlots ${slots}`, mode: 'concurrent', claim: slotted, slots })
  }
  if (options.before !== undefined) {
    const sql = `${options.before}/src/dialects/postgres/sql.ts`
    const before = ((await import(sql)) as { claimSql: ClaimSql }).claimSql
    list.push({ label: 'concurrent, before', mode: 'concurrent', claim: before, checkout: options.before })
  }
  return list
}

/**
 * Every key count's outbox is filled first; then the claims take turns across outboxes and
 * variants, and each rep drains every outbox once per variant, so that the machine's load (it
 * changes by the minute on a shared machine) falls on all key counts alike.
 */
async function sweep(options: Options): Promise<void> {
  const lines = [
    '| keys | rows | mode | claim median ms | claim p90 ms | rows/claim | claim vs 64 keys | drain msg/s (median, min-max) | drain vs 64 keys | verdict (claim <= 1.2x, drain >= 0.83x) |',
    '| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ]
  const list = await variants(options)
  const outboxes: { keys: number; rows: number; schema: string }[] = []
  try {
    for (const keys of options.keys) {
      const rows = Math.max(options.rows, keys)
      outboxes.push({ keys, rows, schema: await filledOutbox(rows, keys) })
    }
    const claims = new Map<string, ClaimCost>()
    const label = (keys: number, variant: Variant) => `${keys} ${variant.label}`
    // One client per outbox would not take turns: the shapes of all outboxes go in one list.
    const costs = await claimCostsAcross(
      outboxes.flatMap(({ schema }) =>
        list.map((variant) => ({ schema, sql: variant.claim, concurrent: variant.mode === 'concurrent' })),
      ),
      options.claims,
    )
    let n = 0
    for (const { keys } of outboxes)
      for (const variant of list) claims.set(label(keys, variant), costs[n++] as ClaimCost)
    const drains = new Map<string, number[]>()
    for (let rep = 0; rep < options.reps; rep++) {
      for (const { keys, schema } of outboxes) {
        for (const variant of list) {
          const result = await drain(
            schema,
            variant.mode,
            1,
            options.drain,
            variant.checkout,
            undefined,
            variant.slots,
          )
          drains.set(label(keys, variant), [...(drains.get(label(keys, variant)) ?? []), result.msgPerS])
          console.error(`keys ${keys} ${variant.label} rep ${rep + 1}: ${int(result.msgPerS)} msg/s`)
        }
      }
    }
    const first = outboxes[0]?.keys ?? 0
    for (const { keys, rows } of outboxes) {
      for (const variant of list) {
        const claim = claims.get(label(keys, variant)) as ClaimCost
        const ref = claims.get(label(first, variant)) as ClaimCost
        const rates = drains.get(label(keys, variant)) ?? []
        const refRate = mid(drains.get(label(first, variant)) ?? [])
        const claimRatio = claim.median / ref.median
        const drainRatio = mid(rates) / refRate
        const verdict =
          keys === first ? 'baseline' : claimRatio <= 1.2 && drainRatio >= 1 / 1.2 ? 'met' : 'NOT met'
        lines.push(
          `| ${int(keys)} | ${int(rows)} | ${variant.label} | ${f2(claim.median)} | ${f2(claim.p90)} | ${claim.rows} | ${f2(claimRatio)}x | ${int(mid(rates))} (${spread(rates)}) | ${f2(drainRatio)}x | ${verdict} |`,
        )
      }
    }
  } finally {
    for (const { schema } of outboxes) await dropSchema(schema)
  }
  console.log(lines.join('\n'))
}

async function shapes(options: Options): Promise<void> {
  if (options.before === undefined) throw new Error('--only shapes needs --before <checkout>')
  const before = ((await import(`${options.before}/src/dialects/postgres/sql.ts`)) as { claimSql: ClaimSql })
    .claimSql
  // The old shape with the key looked up by a LATERAL ... LIMIT 1 instead of a join: a third shape.
  const lateral: ClaimSql = (table, limit, concurrent) =>
    before(table, limit, concurrent).replace(
      'JOIN keys AS k ON k.rank = t.rank + 1',
      'CROSS JOIN LATERAL (SELECT * FROM keys AS k0 WHERE k0.rank = t.rank + 1 LIMIT 1) AS k',
    )
  const lines = [
    '| keys | shape | claim median ms | claim p90 ms | rows/claim |',
    '| ---: | --- | ---: | ---: | ---: |',
  ]
  for (const keys of options.keys) {
    const schema = await filledOutbox(Math.max(options.rows, keys), keys)
    try {
      const shapes = [
        ['join on rank (before)', before],
        ['LATERAL LIMIT 1', lateral],
        ['arrays indexed by rank (after)', claimSql],
      ] as const
      for (let rep = 0; rep < options.reps; rep++) {
        const costs = await claimCosts(
          schema,
          shapes.map(([, sql]) => ({ sql, concurrent: true })),
          options.claims,
        )
        for (const [n, [name]] of shapes.entries()) {
          const cost = costs[n] as ClaimCost
          lines.push(
            `| ${int(keys)} | ${name} (rep ${rep + 1}) | ${f2(cost.median)} | ${f2(cost.p90)} | ${cost.rows} |`,
          )
        }
      }
    } finally {
      await dropSchema(schema)
    }
  }
  console.log(lines.join('\n'))
}

/**
 * One key with a message waiting for a retry (attempts 1, due in an hour) and `stuck` younger
 * messages of it behind, against an outbox of the healthy messages alone. `front`: the stuck key's
 * rows come first (a burst of it); `mixed`: they are spread evenly among the healthy ones (one
 * in every 4.1 rows with `--drain 50000 --reps 3`), so every drain meets the same mix.
 */
async function headOfLine(options: Options): Promise<void> {
  const stuck = 100_000
  const healthy = 2 * options.drain * options.reps + 10_000
  const lines = [
    `| layout (${int(stuck)} rows behind the retry, ${int(healthy)} healthy rows, 64 keys) | mode | claim from id 1: median ms | p90 ms | claim from the relay's start: median ms | p90 ms | rows/claim | healthy drain msg/s (median, min-max) | vs no retry | after its first fifth: msg/s | vs no retry | verdict (after the first fifth >= 0.9x) |`,
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ]
  for (const layout of (['none', 'front', 'mixed'] as const).filter((l) => options.layouts.includes(l))) {
    const schema = uniqueName('ke_hol')
    await stubOutbox(schema).migrate(DATABASE_URL)
    const healthyRows = (from: string) =>
      `SELECT '${TOPIC}', convert_to('k' || (i % 64), 'UTF8'), v.b, (i % 64)::int, ${from}
FROM generate_series(0, ${healthy - 1}) AS i, (SELECT convert_to(repeat('v', ${PAYLOAD}), 'UTF8') AS b) AS v`
    const stuckRows = (from: string) =>
      `SELECT '${TOPIC}', convert_to('stuck', 'UTF8'), v.b, -1, ${from}
FROM generate_series(0, ${stuck - 1}) AS i, (SELECT convert_to(repeat('v', ${PAYLOAD}), 'UTF8') AS b) AS v`
    await withClient(async (client) => {
      const insert = `INSERT INTO "${schema}".outbox (topic, key, value, ordering_hash, created_at)`
      // created_at only orders the rows of the union; ids follow it.
      if (layout === 'none') await client.query(`${insert} ${healthyRows('now()')}`)
      if (layout === 'front')
        await client.query(
          `${insert} SELECT * FROM (${stuckRows('now()')}) AS s UNION ALL (${healthyRows("now() + interval '1 s'")})`,
        )
      if (layout === 'mixed')
        await client.query(
          `${insert} SELECT topic, key, b, h, t FROM ((${stuckRows(`now() + i * interval '${(2 * healthy) / stuck} us'`)}) UNION ALL (${healthyRows("now() + i * interval '2 us' + interval '1 us'")})) AS m(topic, key, b, h, t) ORDER BY t`,
        )
      if (layout !== 'none')
        await client.query(
          `UPDATE "${schema}".outbox SET attempts = 1, available_at = now() + interval '1 hour' WHERE id = (SELECT min(id) FROM "${schema}".outbox WHERE ordering_hash = -1)`,
        )
      await client.query(`VACUUM ANALYZE "${schema}".outbox`)
    })
    try {
      // Where a running relay's claims start: its floor, and past the rows the retry holds back.
      const floor = new ClaimFloor({ schema, table: 'outbox' })
      await withClient(async (client) => {
        // Two steps find the floor; more walk on until the blocked run ends where a relay's would.
        let past: string | undefined
        for (let step = 0; step < 12; step++) {
          await floor.step((text) => client.query(text))
          const start = floor.start
          const now = typeof start === 'object' ? start.blocked?.past : undefined
          if (step >= 1 && now === past) break
          past = now
        }
      })
      const start = floor.start
      const fromStart: ClaimSql = (table, limit, concurrent) => claimSql(table, limit, concurrent, start)
      const costs = await claimCosts(
        schema,
        [
          { sql: claimSql, concurrent: false },
          { sql: claimSql, concurrent: true },
          { sql: fromStart, concurrent: false },
          { sql: fromStart, concurrent: true },
        ],
        options.claims,
      )
      const rates: Record<'single' | 'concurrent', number[]> = { single: [], concurrent: [] }
      const later: Record<'single' | 'concurrent', number[]> = { single: [], concurrent: [] }
      for (let rep = 0; rep < options.reps; rep++) {
        for (const mode of ['single', 'concurrent'] as const) {
          const result = await drain(schema, mode, 1, options.drain, undefined, 30_000)
          rates[mode].push(result.msgPerS)
          later[mode].push(result.laterMsgPerS)
          console.error(
            `head-of-line ${layout} ${mode} rep ${rep + 1}: ${int(result.msgPerS)} msg/s, after the first fifth ${int(result.laterMsgPerS)}`,
          )
        }
      }
      for (const [n, mode] of (['single', 'concurrent'] as const).entries()) {
        const cost = costs[n] as ClaimCost
        const started = costs[n + 2] as ClaimCost
        const rate = mid(rates[mode])
        const laterRate = mid(later[mode])
        if (layout === 'none') holBase.set(mode, { whole: rate, later: laterRate })
        const base = holBase.get(mode) ?? { whole: rate, later: laterRate }
        const ratio = rate / base.whole
        const laterRatio = laterRate / base.later
        lines.push(
          `| ${layout === 'none' ? 'no retry (baseline)' : layout} | ${mode} | ${f2(cost.median)} | ${f2(cost.p90)} | ${f2(started.median)} | ${f2(started.p90)} | ${cost.rows} | ${int(rate)} (${spread(rates[mode])}) | ${f2(ratio)}x | ${int(laterRate)} (${spread(later[mode])}) | ${f2(laterRatio)}x | ${layout === 'none' ? 'baseline' : laterRatio >= 0.9 ? 'met' : 'NOT met'} |`,
        )
      }
    } finally {
      await dropSchema(schema)
    }
    console.error(lines.join('\n'))
  }
  console.log(lines.join('\n'))
}

const holBase = new Map<string, { whole: number; later: number }>()

async function scaling(options: Options): Promise<void> {
  const keys = 10_000
  // Per-key try-locks, and with --slots the same relays with claimSlots, drained in turn.
  const kinds = options.slots > 0 ? [undefined, options.slots] : [undefined]
  const total = options.relays.length * options.reps * options.drain * kinds.length
  const schema = await filledOutbox(Math.ceil(total * 1.1), keys)
  const lines = [
    `| relays (concurrent, ${int(keys)} keys) | try-locks | msg/s (median, min-max) | vs 1 relay | relay CPU % of wall | PostgreSQL backends CPU % of wall | shares |`,
    '| ---: | --- | ---: | ---: | ---: | ---: | --- |',
  ]
  const kindLabel = (slots: number | undefined) => (slots === undefined ? 'per key' : `claimSlots ${slots}`)
  try {
    const results = new Map<string, DrainResult[]>()
    const at = (relays: number, slots: number | undefined) => `${relays} ${kindLabel(slots)}`
    for (let rep = 0; rep < options.reps; rep++) {
      for (const relays of options.relays) {
        for (const slots of kinds) {
          const result = await drain(schema, 'concurrent', relays, options.drain, undefined, undefined, slots)
          console.error(`${relays} relays, ${kindLabel(slots)}, rep ${rep + 1}: ${int(result.msgPerS)} msg/s`)
          results.set(at(relays, slots), [...(results.get(at(relays, slots)) ?? []), result])
        }
      }
    }
    for (const slots of kinds) {
      const one = mid((results.get(at(options.relays[0] ?? 1, slots)) ?? []).map((r) => r.msgPerS))
      for (const relays of options.relays) {
        const list = results.get(at(relays, slots)) ?? []
        const rates = list.map((r) => r.msgPerS)
        const relayCpu = mid(list.map((r) => (r.relayCpuMs / r.wallMs) * 100))
        const pgCpu = mid(list.map((r) => (r.pgCpuMs / r.wallMs) * 100))
        lines.push(
          `| ${relays} | ${kindLabel(slots)} | ${int(mid(rates))} (${spread(rates)}) | ${f2(mid(rates) / one)}x | ${f1(relayCpu)} | ${f1(pgCpu)} | ${list.map((r) => r.shares.join('/')).join(', ')} |`,
        )
      }
    }
  } finally {
    await dropSchema(schema)
  }
  console.log(lines.join('\n'))
}

// ---------------------------------------------------------------- arguments

interface Options {
  only: string[]
  keys: number[]
  rows: number
  drain: number
  reps: number
  claims: number
  relays: number[]
  /** hol: the layouts to drain (none, front, mixed). */
  layouts: string[]
  before?: string
  /** The sweep's claimSlots variant; 0: none. */
  slots: number
}

function options(argv: string[]): Options {
  const value = (name: string) => {
    const at = argv.indexOf(`--${name}`)
    return at === -1 ? undefined : argv[at + 1]
  }
  const numbers = (name: string, fallback: string) =>
    (value(name) ?? fallback).split(',').map((n) => {
      const parsed = Number(n)
      if (!Number.isSafeInteger(parsed) || parsed < 1)
        throw new Error(`--${name}: ${n} is not a positive integer`)
      return parsed
    })
  const before = value('before')
  return {
    only: (value('only') ?? 'sweep,scaling').split(','),
    keys: numbers('keys', '64,10000,1000000'),
    rows: numbers('rows', '1000000')[0] as number,
    drain: numbers('drain', '40000')[0] as number,
    reps: numbers('reps', '3')[0] as number,
    claims: numbers('claims', '30')[0] as number,
    relays: numbers('relays', '1,2,4'),
    layouts: (value('layouts') ?? 'none,front,mixed').split(','),
    slots: value('slots') === '0' ? 0 : (numbers('slots', '64')[0] as number),
    ...(before === undefined ? {} : { before }),
  }
}

if (process.argv[2] === 'worker') {
  await worker(process.argv[3] as string, process.argv[4] as 'single' | 'concurrent', process.argv[5])
} else {
  const opts = options(process.argv.slice(2))
  console.log(
    `key-sweep ${new Date().toISOString()} rows ${opts.rows} drain ${opts.drain} reps ${opts.reps} claims ${opts.claims}`,
  )
  if (opts.only.includes('shapes')) await shapes(opts)
  if (opts.only.includes('sweep')) await sweep(opts)
  if (opts.only.includes('scaling')) await scaling(opts)
  if (opts.only.includes('hol')) await headOfLine(opts)
}
