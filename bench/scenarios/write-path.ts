// Scenario 2: what the outbox adds to a business transaction. N sequential transactions on one
// connection, each inserting one order row: alone, with one outbox message (default, i.e. with
// the wake-up NOTIFY, and with `notify: false` when that option exists), and the naive dual write
// (commit, then await a direct Kafka send with the same client and settings). The variants are
// interleaved in blocks of 100 so that a slow phase of the shared machine hits all of them.
import pg from 'pg'
import type { KafkaTransport } from '../../src/transports/kafka/index.ts'
import type { BenchContext, Scenario } from '../lib/context.ts'
import { Resources } from '../lib/env.ts'
import { warmTransport } from '../lib/kafka.ts'
import { fmt, fmtInt, fmtRatio, type ScenarioResult, type Table } from '../lib/report.ts'
import { type Distribution, distribution, mean, median, round } from '../lib/stats.ts'
import {
  type BenchOutbox,
  benchMessage,
  benchOutbox,
  benchTopic,
  pooledTransaction,
} from '../lib/workload.ts'
import { type ConcurrentWrites, concurrentWrites } from './concurrent-writes.ts'

type BenchProducers = ReturnType<BenchOutbox['in']>

const BLOCK = 100
const WARMUP = 50

interface Variant {
  id: string
  label: string
  run: (i: number) => Promise<void>
  times: number[]
}

export const writePath: Scenario = {
  id: 'write-path',
  number: 2,
  title: 'Write-path overhead of one outbox message',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const transactions = ctx.full ? 10_000 : 2_000
    const res = new Resources(ctx.brokers)
    const client = new pg.Client({
      connectionString: ctx.databaseUrl,
      application_name: 'k-entity-bench-writes',
    })
    await client.connect()
    // The transaction() helper checks its client out of a pool: one connection, always reused.
    const pool = new pg.Pool({
      connectionString: ctx.databaseUrl,
      max: 1,
      application_name: 'k-entity-bench-writes',
    })
    let transport: KafkaTransport | undefined
    try {
      const schema = res.schema('writes')
      const topic = await res.topic('writes')
      const direct = await warmTransport(ctx.brokers, ctx.warmupTopic, topic)
      transport = direct
      const outbox = benchOutbox(schema, topic, ctx.brokers)
      await outbox.migrate(ctx.databaseUrl)
      const withoutNotify = ctx.features.outboxNotifyOption
        ? benchOutbox(schema, topic, ctx.brokers, { notify: false })
        : undefined
      await client.query(
        `CREATE TABLE "${schema}".orders (id bigint PRIMARY KEY, customer text NOT NULL, amount integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`,
      )
      const definition = benchTopic(topic)
      let orderId = 0
      const insertOrder = (on: pg.ClientBase, i: number) =>
        on.query(`INSERT INTO "${schema}".orders (id, customer, amount) VALUES ($1, $2, $3)`, [
          ++orderId,
          `customer-${i % 64}`,
          i % 1000,
        ])
      // The app's own BEGIN/COMMIT on `client`, producing through `outbox.in(client)`.
      const own = (id: string, label: string, producers: BenchProducers, prefix: string): Variant => ({
        id,
        label,
        times: [],
        run: async (i) => {
          await client.query('BEGIN')
          await insertOrder(client, i)
          await producers.bench.produce(benchMessage(prefix, i))
          await client.query('COMMIT')
        },
      })
      // outbox.transaction() on a client of `pool`.
      const helper = (id: string, label: string, through: BenchOutbox, prefix: string): Variant => ({
        id,
        label,
        times: [],
        run: async (i) => {
          await through.transaction(pool, async (pooled, topics) => {
            await insertOrder(pooled, i)
            await topics.bench.produce(benchMessage(prefix, i))
          })
        },
      })
      const variants: Variant[] = [
        {
          id: 'plain',
          label: 'plain transaction (1 order row)',
          times: [],
          run: async (i) => {
            await client.query('BEGIN')
            await insertOrder(client, i)
            await client.query('COMMIT')
          },
        },
        own(
          'outbox',
          `+ 1 outbox message${ctx.features.outboxNotifyOption ? ' (default: with NOTIFY)' : ''}`,
          outbox.in(client),
          'w',
        ),
        {
          id: 'plainPool',
          label: 'plain transaction, pooled client (BEGIN, order, COMMIT, release)',
          times: [],
          run: (i) => pooledTransaction(pool, (pooled) => insertOrder(pooled, i)),
        },
        helper(
          'helper',
          '+ 1 outbox message through outbox.transaction(pool, fn) (default: with NOTIFY)',
          outbox,
          'h',
        ),
      ]
      if (withoutNotify) {
        variants.push(
          own('outboxNoNotify', '+ 1 outbox message (notify: false)', withoutNotify.in(client), 'q'),
          helper(
            'helperNoNotify',
            '+ 1 outbox message through outbox.transaction(pool, fn) (notify: false)',
            withoutNotify,
            'hq',
          ),
        )
      }
      variants.push(
        own(
          'outboxEager',
          '+ 1 outbox message written at produce() (writeWithCommit: false)',
          benchOutbox(schema, topic, ctx.brokers, { writeWithCommit: false }).in(client),
          'e',
        ),
        own(
          'outboxHeld',
          '+ 1 outbox message held until the COMMIT (in(client, { holdWrites: true }))',
          outbox.in(client, { holdWrites: true }),
          'k',
        ),
      )
      variants.push({
        id: 'dualWrite',
        label: 'naive dual write (commit, then await Kafka send)',
        times: [],
        run: async (i) => {
          await client.query('BEGIN')
          await insertOrder(client, i)
          await client.query('COMMIT')
          await direct.send([definition.toRecord(benchMessage('d', i))])
        },
      })

      for (const variant of variants) {
        for (let i = 0; i < WARMUP; i++) await variant.run(i)
      }
      for (let block = 0; block < transactions / BLOCK; block++) {
        // Each round starts with a different variant: whichever runs right after the Kafka-bound
        // dual write (or first in a round) must not always be the same one.
        const rotated = [
          ...variants.slice(block % variants.length),
          ...variants.slice(0, block % variants.length),
        ]
        for (const variant of rotated) {
          for (let j = 0; j < BLOCK; j++) {
            const i = block * BLOCK + j
            const started = performance.now()
            await variant.run(i)
            variant.times.push(performance.now() - started)
          }
        }
      }

      // Sequential work is done: the pool and client above sit idle while the writers run.
      const concurrent: ConcurrentWrites | undefined = ctx.features.outboxNotifyOption
        ? await concurrentWrites(ctx, schema, topic)
        : undefined
      const stats = new Map<string, Distribution>(variants.map((v) => [v.id, distribution(v.times)]))
      const plain = stats.get('plain') as Distribution
      // Paired estimate, robust to slow phases of a shared machine: per round of blocks, the
      // variant's mean over plain's mean in the same round; the median over rounds.
      const rounds = transactions / BLOCK
      // The helper's transactions check a client out of a pool: compare them with pooled ones.
      const baseOf = (id: string) => (id.startsWith('helper') ? 'plainPool' : 'plain')
      const baseStats = (id: string) => stats.get(baseOf(id)) as Distribution
      const roundRatio = (id: string, baseId = baseOf(id)): number => {
        const variant = variants.find((v) => v.id === id)
        const base = variants.find((v) => v.id === baseId)
        if (variant === undefined || base === undefined) return Number.NaN
        const ratios: number[] = []
        for (let r = 0; r < rounds; r++) {
          ratios.push(
            mean(variant.times.slice(r * BLOCK, (r + 1) * BLOCK)) /
              mean(base.times.slice(r * BLOCK, (r + 1) * BLOCK)),
          )
        }
        return median(ratios)
      }
      const rows = variants.map((variant) => {
        const d = stats.get(variant.id) as Distribution
        return [
          variant.label,
          fmtInt(1000 / d.mean),
          fmt(d.mean, 3),
          fmt(d.p50, 3),
          fmt(d.p99, 3),
          fmtRatio(d.mean / baseStats(variant.id).mean),
          fmtRatio(d.p50 / baseStats(variant.id).p50),
          fmtRatio(roundRatio(variant.id)),
        ]
      })
      const outboxRatio = roundRatio('outbox')
      const helperRatio = roundRatio('helper')
      const outboxMeanRatio = (stats.get('outbox') as Distribution).mean / plain.mean
      const quiet = stats.get('outboxNoNotify')
      const table: Table = {
        title: `2. Write path: ${fmtInt(transactions)} sequential transactions per variant on one connection (interleaved in blocks of ${BLOCK})`,
        columns: [
          'variant',
          'tx/s',
          'mean ms',
          'p50 ms',
          'p99 ms',
          'mean vs plain (pooled for the helper)',
          'p50 vs plain (pooled for the helper)',
          'paired ratio (median of rounds)',
        ],
        rows,
        notes: [
          'Time per transaction from BEGIN to COMMIT returning (dual write: to the Kafka acknowledgement, acks=all).',
          'The message is 256 bytes with 2 headers, produced with produce(): one single-row INSERT that also takes the key lock and queues the NOTIFY.',
          "outbox.in(client) with the app's own BEGIN/COMMIT writes that INSERT at produce(), one round trip of its own (as with writeWithCommit: false); in(client, { holdWrites: true }) and outbox.transaction(pool, fn) hold it until the client's next query or the COMMIT and send it in the same round trip. The helper is compared with the same pooled transaction without the message.",
          `Paired ratio: for each of the ${rounds} rounds (one block of ${BLOCK} per variant, back to back), the variant's mean over plain's mean in that round; the median over rounds. The order of the variants rotates from round to round. It cancels slow phases of a shared machine; the target is read on it.`,
        ],
      }
      return {
        id: this.id,
        title: this.title,
        tables: concurrent ? [table, concurrent.table] : [table],
        targets: [
          {
            name: 'outbox.transaction() with 1 message / plain pooled transaction (paired)',
            target: '<= 1.3x',
            measured: `${fmtRatio(helperRatio)}${quiet ? `; notify: false: ${fmtRatio(roundRatio('helperNoNotify'))}` : ''}`,
            met: helperRatio <= 1.3,
          },
          {
            name: 'own BEGIN/COMMIT + outbox.in(client) / plain transaction (paired)',
            target: '<= 1.3x',
            measured: `${fmtRatio(outboxRatio)} (overall means: ${fmtRatio(outboxMeanRatio)}${quiet ? `; notify: false: ${fmtRatio(roundRatio('outboxNoNotify'))}` : ''}; writeWithCommit: false: ${fmtRatio(roundRatio('outboxEager'))}; holdWrites: ${fmtRatio(roundRatio('outboxHeld'))})`,
            met: outboxRatio <= 1.3,
          },
        ],
        data: {
          transactions,
          block: BLOCK,
          concurrentWriters: concurrent?.data,
          variants: Object.fromEntries(
            variants.map((v) => {
              const d = stats.get(v.id) as Distribution
              return [
                v.id,
                {
                  label: v.label,
                  txPerSecond: round(1000 / d.mean, 0),
                  meanMs: round(d.mean, 4),
                  p50Ms: round(d.p50, 4),
                  p99Ms: round(d.p99, 4),
                  meanRatioToPlain: round(d.mean / baseStats(v.id).mean, 3),
                  pairedRatioToPlain: round(roundRatio(v.id), 3),
                },
              ]
            }),
          ),
        },
      }
    } finally {
      await client.end().catch(() => {})
      await pool.end().catch(() => {})
      await transport?.close().catch(() => {})
      await res.release()
    }
  },
}
