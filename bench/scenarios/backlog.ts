// Scenario 4: does the claim stay cheap as the outbox grows, and after a mass delete?
//
// One outbox per state, all built first: `backlog` waiting rows plus the rows the relay is timed
// on, and one big outbox deleted in a single statement with autovacuum off for that table (the
// worst moment: before any vacuum ran), then refilled with the rows to relay.
// Claim cost = the relay's own statement (claimSql from the dialect, same batch size) inside
// BEGIN ... ROLLBACK so nothing changes between samples. Samples go round-robin over the states,
// so a slow phase of the shared machine hits every state alike. Two timings per sample:
// - server: "Execution Time" of EXPLAIN (ANALYZE, TIMING OFF, BUFFERS) on the same statement,
//   the cost the target is about (rows are really locked, then rolled back);
// - client: the statement itself timed at the client (one round trip, 500 rows parsed), which
//   adds a constant of transfer and parsing.
// The first server-side sample of each state is reported too (it pays for cold caches and for
// pruning dead index entries). The same claim is also timed from the floor a running relay keeps
// (ClaimFloor: the lowest id its claims need to look at, known after its first two floor steps),
// which is what a relay's claims cost once it has run for a second or so; the claim without it
// is what the first claims of a relay cost. Then a relay in a child process relays the oldest
// rows, timed.
import pg from 'pg'
import { ClaimFloor } from '../../src/dialects/postgres/claim-floor.ts'
import { claimSql } from '../../src/dialects/postgres/sql.ts'
import { RELAY_DEFAULTS } from '../../src/index.ts'
import type { BenchContext, Scenario } from '../lib/context.ts'
import { Resources } from '../lib/env.ts'
import { metrics, type RelayMetrics } from '../lib/relay-metrics.ts'
import { fmt, fmtInt, fmtRatio, NOT_IMPLEMENTED, type ScenarioResult, type Table } from '../lib/report.ts'
import { median, percentile, round } from '../lib/stats.ts'
import { runWorker } from '../lib/workers.ts'
import { benchOutbox, prefill } from '../lib/workload.ts'

const BATCH = RELAY_DEFAULTS.maxMessagesPerPoll

interface State {
  label: string
  schema: string
  topic: string
  rowsInTable: number
  deadTuples?: number
  server: number[]
  /** The same claim, from the floor a running relay keeps. */
  floored: number[]
  floor?: string
  buffers: number[]
  client: number[]
  concurrentServer: number[]
  relay?: RelayMetrics
}

interface ExplainNode {
  'Shared Hit Blocks'?: number
  'Shared Read Blocks'?: number
}

async function explainClaim(client: pg.Client, sql: string): Promise<{ ms: number; buffers: number }> {
  await client.query('BEGIN')
  try {
    const result = await client.query(`EXPLAIN (ANALYZE, TIMING OFF, BUFFERS, FORMAT JSON) ${sql}`)
    const explained = result.rows[0]?.['QUERY PLAN'] as
      | [{ 'Execution Time': number; Plan: ExplainNode }]
      | undefined
    const plan = explained?.[0]
    if (plan === undefined) throw new Error('EXPLAIN returned no plan')
    return {
      ms: plan['Execution Time'],
      buffers: (plan.Plan['Shared Hit Blocks'] ?? 0) + (plan.Plan['Shared Read Blocks'] ?? 0),
    }
  } finally {
    await client.query('ROLLBACK')
  }
}

async function timedClaim(client: pg.Client, sql: string): Promise<number> {
  await client.query('BEGIN')
  try {
    const started = performance.now()
    const result = await client.query(sql)
    const elapsed = performance.now() - started
    if (result.rowCount !== BATCH)
      throw new Error(`claim returned ${result.rowCount} rows, expected ${BATCH}`)
    return elapsed
  } finally {
    await client.query('ROLLBACK')
  }
}

export const backlog: Scenario = {
  id: 'backlog',
  number: 4,
  title: 'Backlog scaling: claim cost and relay throughput',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const levels = ctx.full ? [0, 100_000, 1_000_000] : [0, 50_000]
    const deleted = ctx.full ? 1_000_000 : 50_000
    const relayed = ctx.full ? 50_000 : 10_000
    const samples = ctx.full ? 300 : 100
    const res = new Resources(ctx.brokers)
    const client = new pg.Client({
      connectionString: ctx.databaseUrl,
      application_name: 'k-entity-bench-claim',
    })
    await client.connect()
    const states: State[] = []
    let afterVacuum: { p50: number; ratio: number } | undefined
    try {
      for (const level of levels) {
        const schema = res.schema('backlog')
        const topic = await res.topic('backlog')
        const outbox = benchOutbox(schema, topic, ctx.brokers)
        await outbox.migrate(ctx.databaseUrl)
        const fillMs = await prefill(outbox, 'b', 0, level + relayed, 2)
        await client.query(`VACUUM ANALYZE "${schema}".outbox`)
        ctx.log(`  pre-filled ${fmtInt(level + relayed)} rows in ${fmt(fillMs / 1000)} s`)
        states.push({
          label: `${fmtInt(level)} waiting behind`,
          schema,
          topic,
          rowsInTable: level + relayed,
          server: [],
          floored: [],
          buffers: [],
          client: [],
          concurrentServer: [],
        })
      }
      const schema = res.schema('dead')
      const topic = await res.topic('dead')
      const outbox = benchOutbox(schema, topic, ctx.brokers)
      await outbox.migrate(ctx.databaseUrl)
      await client.query(`ALTER TABLE "${schema}".outbox SET (autovacuum_enabled = false)`)
      const fillMs = await prefill(outbox, 'x', 0, deleted, 2)
      const deleteStarted = performance.now()
      await client.query(`DELETE FROM "${schema}".outbox`)
      ctx.log(
        `  pre-filled ${fmtInt(deleted)} rows in ${fmt(fillMs / 1000)} s, deleted them in ${fmt((performance.now() - deleteStarted) / 1000)} s`,
      )
      await prefill(outbox, 'b', 0, relayed, 2)
      // Statistics only: ANALYZE does not remove dead tuples.
      await client.query(`ANALYZE "${schema}".outbox`)
      states.push({
        label: `after deleting ${fmtInt(deleted)} (no vacuum)`,
        schema,
        topic,
        rowsInTable: relayed,
        server: [],
        floored: [],
        buffers: [],
        client: [],
        concurrentServer: [],
      })

      // The floor a relay would reach: two steps (sequence and running transactions noted, then
      // the lowest live id once those have finished), taken before any sample.
      for (const state of states) {
        const floor = new ClaimFloor({ schema: state.schema, table: 'outbox' })
        await floor.step((text) => client.query(text))
        await floor.step((text) => client.query(text))
        state.floor = floor.value
      }
      // Claim cost, round-robin over the states.
      for (let sample = 0; sample < samples; sample++) {
        for (const state of states) {
          const table = { schema: state.schema, table: 'outbox' }
          const explained = await explainClaim(client, claimSql(table, BATCH))
          state.server.push(explained.ms)
          state.floored.push((await explainClaim(client, claimSql(table, BATCH, false, state.floor))).ms)
          state.buffers.push(explained.buffers)
          state.client.push(await timedClaim(client, claimSql(table, BATCH)))
          if (ctx.features.concurrent) {
            state.concurrentServer.push((await explainClaim(client, claimSql(table, BATCH, true))).ms)
          }
        }
      }
      for (const state of states) {
        const dead = await client.query(
          `SELECT n_dead_tup::int AS n FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'outbox'`,
          [state.schema],
        )
        state.deadTuples = dead.rows[0]?.n as number | undefined
      }
      // Relay throughput, one state after the other.
      for (const state of states) {
        const result = await runWorker({
          kind: 'relay',
          brokers: ctx.brokers,
          databaseUrl: ctx.databaseUrl,
          schema: state.schema,
          topic: state.topic,
          warmupTopic: ctx.warmupTopic,
          relay: { maxMessagesPerPoll: BATCH },
          stopAfter: relayed,
        })
        state.relay = metrics(result)
        ctx.log(
          `  ${state.label}: claim p50 ${fmt(median(state.server), 2)} ms server / ${fmt(median(state.client), 2)} ms client (first ${fmt(state.server[0] ?? Number.NaN, 1)} ms), relay ${fmtInt(state.relay.rate)} msg/s`,
        )
      }
      // Recovery: the deleted-at-once table after a VACUUM (autovacuum would have run by now),
      // sampled round-robin with the empty-backlog table refilled the same way.
      const base = states[0] as State
      const deadState = states[levels.length] as State
      for (const state of [base, deadState]) {
        await prefill(benchOutbox(state.schema, state.topic, ctx.brokers), 'v', 0, BATCH * 2, 1)
        await client.query(`VACUUM ANALYZE "${state.schema}".outbox`)
      }
      const baseAgain: number[] = []
      const vacuumed: number[] = []
      for (let sample = 0; sample < samples; sample++) {
        baseAgain.push(
          (await explainClaim(client, claimSql({ schema: base.schema, table: 'outbox' }, BATCH))).ms,
        )
        vacuumed.push(
          (await explainClaim(client, claimSql({ schema: deadState.schema, table: 'outbox' }, BATCH))).ms,
        )
      }
      afterVacuum = { p50: median(vacuumed), ratio: median(vacuumed) / median(baseAgain) }
      ctx.log(
        `  ${deadState.label}, then VACUUM: claim p50 ${fmt(afterVacuum.p50, 2)} ms server (${fmtRatio(afterVacuum.ratio)} of the empty-backlog table)`,
      )
    } finally {
      await client.end().catch(() => {})
      await res.release()
    }

    const p = (values: number[], at: number) =>
      percentile(
        [...values].sort((a, b) => a - b),
        at,
      )
    const base = states[0] as State
    const largest = states[levels.length - 1] as State
    const deadState = states[levels.length] as State
    const baseServer = median(base.server)
    const baseFloored = median(base.floored)
    const rows = states.map((s) => [
      s.label,
      fmtInt(s.rowsInTable),
      s.deadTuples === undefined ? '-' : fmtInt(s.deadTuples),
      fmt(median(s.server), 2),
      fmt(p(s.server, 90), 2),
      fmtRatio(median(s.server) / baseServer),
      fmt(s.server[0] ?? Number.NaN, 1),
      s.floor === undefined ? 'no floor' : fmt(median(s.floored), 2),
      s.floor === undefined ? '-' : fmtRatio(median(s.floored) / baseFloored),
      fmtInt(median(s.buffers)),
      fmt(median(s.client), 2),
      s.concurrentServer.length > 0 ? fmt(median(s.concurrentServer), 2) : NOT_IMPLEMENTED,
      s.relay ? fmtInt(s.relay.rate) : '-',
      s.relay && base.relay ? fmtRatio(s.relay.rate / base.relay.rate) : '-',
    ])
    if (afterVacuum) {
      rows.push([
        '  ... then VACUUM (paired with the empty-backlog table)',
        fmtInt(BATCH * 2),
        '0',
        fmt(afterVacuum.p50, 2),
        '',
        fmtRatio(afterVacuum.ratio),
        '',
        '',
        '',
        '',
        '',
        '',
        '',
        '',
      ])
    }
    const table: Table = {
      title: `4. Backlog scaling: claim of ${BATCH} rows (${samples} samples per state, round-robin) and relaying ${fmtInt(relayed)} messages`,
      columns: [
        'outbox state',
        'rows in table',
        'dead tuples',
        'claim p50 ms (server)',
        'p90 ms',
        'p50 vs 0 backlog',
        'first claim ms',
        "claim p50 ms from the relay's floor",
        'vs 0 backlog',
        'buffers/claim',
        'claim p50 ms (client)',
        'concurrent-mode claim p50 ms',
        'relay msg/s',
        'relay vs 0 backlog',
      ],
      rows,
      notes: [
        "Claim = claimSql() from src/dialects/postgres/sql.ts (the relay's statement) inside BEGIN/ROLLBACK. Server = EXPLAIN (ANALYZE, TIMING OFF) execution time; client = round trip with 500 rows returned and parsed.",
        '"dead tuples" is n_dead_tup from pg_stat_user_tables; "buffers/claim" = shared buffers hit + read by one claim.',
        'The first claim of each state is its first server-side sample.',
        "From the relay's floor: the same claim starting at the lowest id a running relay knows it needs (ClaimFloor, after its first two steps); the claim without it is what a relay's first claims cost.",
      ],
    }
    const claimRatio = median(largest.server) / baseServer
    const deadRatio = median(deadState.server) / baseServer
    const deadFlooredRatio = median(deadState.floored) / baseFloored
    return {
      id: this.id,
      title: this.title,
      tables: [table],
      targets: [
        {
          name: `claim p50 (server) at ${fmtInt(levels.at(-1) ?? 0)} waiting / at 0`,
          target: '<= 2x',
          measured: `${fmtRatio(claimRatio)} (client-timed: ${fmtRatio(median(largest.client) / median(base.client))})`,
          met: claimRatio <= 2,
        },
        {
          name: `claim p50 (server) after deleting ${fmtInt(deleted)} rows, from the relay's floor / at 0 (same bar)`,
          target: '<= 2x',
          measured: `${deadState.floor === undefined ? 'no floor' : fmtRatio(deadFlooredRatio)} (a relay's first claims, before its floor is known: ${fmtRatio(deadRatio)}, first claim ${fmt(deadState.server[0] ?? Number.NaN, 1)} ms${afterVacuum ? `; after VACUUM ${fmtRatio(afterVacuum.ratio)}` : ''})`,
          met: deadState.floor !== undefined && deadFlooredRatio <= 2,
        },
      ],
      data: {
        batch: BATCH,
        samples,
        relayed,
        afterVacuum: afterVacuum
          ? { serverP50Ms: round(afterVacuum.p50, 3), ratioToEmptyBacklog: round(afterVacuum.ratio, 3) }
          : null,
        states: states.map((s) => ({
          label: s.label,
          rowsInTable: s.rowsInTable,
          deadTuples: s.deadTuples ?? null,
          serverP50Ms: round(median(s.server), 3),
          serverP90Ms: round(p(s.server, 90), 3),
          serverFirstMs: round(s.server[0] ?? Number.NaN, 3),
          floor: s.floor ?? null,
          flooredServerP50Ms:
            s.floored.length > 0 && s.floor !== undefined ? round(median(s.floored), 3) : null,
          buffersP50: median(s.buffers),
          clientP50Ms: round(median(s.client), 3),
          clientP90Ms: round(p(s.client, 90), 3),
          concurrentServerP50Ms: s.concurrentServer.length > 0 ? round(median(s.concurrentServer), 3) : null,
          relayRate: s.relay ? round(s.relay.rate, 0) : null,
        })),
      },
    }
  },
}
