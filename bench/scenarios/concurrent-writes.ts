// Part of scenario 2: what the outbox does to the commit rate of several writers at once. A
// NOTIFY in a transaction makes its commit wait for a cluster-wide lock held through the commit's
// WAL flush, so notifying commits cannot share a flush; the outbox spaces its NOTIFYs for that
// reason, and this table shows the cost it avoids ("NOTIFY in every transaction" is what the
// outbox did before, and what a NOTIFY trigger on the outbox table does).
import pg from 'pg'
import { wakeChannel } from '../../src/dialects/postgres/names.ts'
import type { BenchContext } from '../lib/context.ts'
import { fmtInt, fmtRatio, type Table } from '../lib/report.ts'
import { median, round } from '../lib/stats.ts'
import { type BenchOutbox, benchMessage, benchOutbox, pooledTransaction } from '../lib/workload.ts'

const WRITERS = 8
/** Wall time per variant and round. */
const ROUND_MS = 1000

interface WriteVariant {
  id: string
  label: string
  run: (i: number) => Promise<void>
  rates: number[]
}

export interface ConcurrentWrites {
  table: Table
  data: Record<string, unknown>
}

export async function concurrentWrites(
  ctx: BenchContext,
  schema: string,
  topic: string,
): Promise<ConcurrentWrites> {
  const rounds = ctx.full ? 12 : 4
  const pool = new pg.Pool({
    connectionString: ctx.databaseUrl,
    max: WRITERS,
    application_name: 'k-entity-bench-writers',
  })
  pool.on('error', () => {})
  try {
    const spaced = benchOutbox(schema, topic, ctx.brokers)
    const quiet = benchOutbox(schema, topic, ctx.brokers, { notify: false })
    const channel = wakeChannel({ schema, table: 'outbox' })
    let orderId = 10_000_000
    const insertOrder = (client: pg.PoolClient, i: number) =>
      client.query(`INSERT INTO "${schema}".orders (id, customer, amount) VALUES ($1, $2, $3)`, [
        ++orderId,
        `customer-${i % 64}`,
        i % 1000,
      ])
    const helper = (outbox: BenchOutbox, prefix: string, notifyEach: boolean) => async (i: number) => {
      await outbox.transaction(pool, async (client, topics) => {
        await insertOrder(client, i)
        if (notifyEach) await client.query(`SELECT pg_notify('${channel}', '')`)
        await topics.bench.produce(benchMessage(prefix, i))
      })
    }
    const variants: WriteVariant[] = [
      {
        id: 'plain',
        label: 'plain transaction (1 order row)',
        rates: [],
        run: (i) => pooledTransaction(pool, (client) => insertOrder(client, i)),
      },
      {
        id: 'spaced',
        label: '+ 1 outbox message, transaction() (default: NOTIFY spaced, at most 1 per 20 ms)',
        rates: [],
        run: helper(spaced, 'cs', false),
      },
      {
        id: 'quiet',
        label: '+ 1 outbox message, transaction() (notify: false)',
        rates: [],
        run: helper(quiet, 'cq', false),
      },
      {
        id: 'every',
        label: '+ 1 outbox message, transaction(), NOTIFY in every transaction (the old default)',
        rates: [],
        run: helper(quiet, 'ce', true),
      },
    ]
    let next = 0
    const runFor = async (variant: WriteVariant, ms: number): Promise<number> => {
      const started = performance.now()
      const end = started + ms
      let done = 0
      await Promise.all(
        Array.from({ length: WRITERS }, async () => {
          while (performance.now() < end) {
            await variant.run(next++)
            done++
          }
        }),
      )
      return (done / (performance.now() - started)) * 1000
    }
    for (const variant of variants) await runFor(variant, 200)
    for (let r = 0; r < rounds; r++) {
      const rotated = [...variants.slice(r % variants.length), ...variants.slice(0, r % variants.length)]
      for (const variant of rotated) variant.rates.push(await runFor(variant, ROUND_MS))
    }
    const plain = variants[0] as WriteVariant
    const ratioOf = (variant: WriteVariant) =>
      median(variant.rates.map((rate, r) => rate / (plain.rates[r] as number)))
    const ratios = Object.fromEntries(variants.map((v) => [v.id, ratioOf(v)]))
    return {
      table: {
        title: `2b. Write path with ${WRITERS} concurrent writers (closed loop, ${rounds} rounds of ${ROUND_MS / 1000} s per variant)`,
        columns: ['variant', 'commits/s (median of rounds)', 'vs plain (paired, median of rounds)'],
        rows: variants.map((v) => [v.label, fmtInt(median(v.rates)), fmtRatio(ratios[v.id] as number)]),
        notes: [
          `${WRITERS} connections of one pool, each running its transactions back to back; the variants take turns for ${ROUND_MS / 1000} s each, in an order that rotates every round.`,
          'PostgreSQL makes every committing transaction that queued a NOTIFY wait for one cluster-wide lock, held through its WAL flush, so such commits cannot share a flush (group commit). "NOTIFY in every transaction" adds the NOTIFY in the transaction itself, as the outbox did before it spaced them.',
        ],
      },
      data: {
        writers: WRITERS,
        rounds,
        roundMs: ROUND_MS,
        variants: Object.fromEntries(
          variants.map((v) => [
            v.id,
            {
              label: v.label,
              commitsPerSecond: round(median(v.rates), 0),
              ratioToPlain: round(ratios[v.id] as number, 3),
              rates: v.rates.map((rate) => round(rate, 0)),
            },
          ]),
        ),
      },
    }
  } finally {
    await pool.end().catch(() => {})
  }
}
