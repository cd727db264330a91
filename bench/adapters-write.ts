// The write path of every adapter against its own plain transaction (issue 19: <= 1.3x for every
// adapter other than pg's `transaction()`, whose row in bench/run.ts has its own target).
// Usage: node bench/adapters-write.ts [--rounds=12] [--block=50] [--database=postgres,mysql,sqlite]
//          [--only=substring of an adapter's name]
// Each adapter is set up as the adapter contract sets it up (test/contract/harness-*.ts: the
// outbox migrated, an `orders` table beside it), and runs `--rounds` rounds of `--block`
// transactions of each variant, alternating one by one:
//   plain:   the adapter's transaction as the app runs it (through `outbox.transaction()`, which
//            is the data layer's own transaction when nothing is produced), one order row
//   outbox:  the same transaction, the order row and one message produced through the adapter
// Per round the ratio of the two variants' median transaction times; printed: their median and
// spread over the rounds.
// No relay runs and nothing reaches Kafka: this is the cost a writer pays.
import { parseArgs } from 'node:util'
import type { ContractHarness, ContractTopics } from '../test/contract/adapter-contract.ts'
import {
  drizzleNodePgHarness,
  drizzleNodePgHeldInHarness,
  drizzleNodePgHelperTopicsHarness,
  drizzlePostgresJsHarness,
  drizzlePostgresJsHelperTopicsHarness,
} from '../test/contract/harness-drizzle.ts'
import { knexHarness, knexHeldInHarness, knexHelperTopicsHarness } from '../test/contract/harness-knex.ts'
import { pgHarness, pgHeldInHarness, pgHelperTopicsHarness } from '../test/contract/harness-pg.ts'
import { postgresJsHarness, postgresJsHelperTopicsHarness } from '../test/contract/harness-postgres-js.ts'
import {
  typeormHarness,
  typeormHeldInHarness,
  typeormHelperTopicsHarness,
} from '../test/contract/harness-typeorm.ts'
import { EVERY_ADAPTER } from '../test/contract/harnesses.ts'
import { uniqueName } from '../test/support/env.ts'
import { orderTopic } from '../test/support/workload.ts'
import { loadAverage } from './lib/env.ts'
import { median, minMax } from './lib/stats.ts'

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '12' },
    block: { type: 'string', default: '50' },
    database: { type: 'string', default: 'postgres,mysql,sqlite' },
    only: { type: 'string' },
  },
})
const rounds = Number(values.rounds)
const block = Number(values.block)
for (const [name, n] of [
  ['rounds', rounds],
  ['block', block],
] as const) {
  if (!Number.isInteger(n) || n < 1) {
    console.error(`--${name} must be a positive integer`)
    process.exit(1)
  }
}
const databases = new Set(values.database.split(','))
for (const d of databases) {
  if (d !== 'postgres' && d !== 'mysql' && d !== 'sqlite') {
    console.error(`--database takes postgres, mysql and sqlite, comma-separated; got ${d}`)
    process.exit(1)
  }
}

// Adapters that hold writes on node-postgres, several times: producing through `in(tx)` (written
// at produce()), through the topics `transaction()` hands over (held until the COMMIT), and
// through `in(tx, { holdWrites: true })` in the data layer's own transaction.
// biome-ignore lint/suspicious/noExplicitAny: as EVERY_ADAPTER's, each harness has its own handle type
const HOLDING_VARIANTS = new Map<ContractHarness<any>, ContractHarness<any>[]>([
  [pgHarness, [pgHelperTopicsHarness, pgHeldInHarness]],
  [postgresJsHarness, [postgresJsHelperTopicsHarness]],
  [drizzlePostgresJsHarness, [drizzlePostgresJsHelperTopicsHarness]],
  [knexHarness, [knexHelperTopicsHarness, knexHeldInHarness]],
  [drizzleNodePgHarness, [drizzleNodePgHelperTopicsHarness, drizzleNodePgHeldInHarness]],
  [typeormHarness, [typeormHelperTopicsHarness, typeormHeldInHarness]],
])
const HARNESSES = EVERY_ADAPTER.flatMap((h) => [h, ...(HOLDING_VARIANTS.get(h) ?? [])])
const selected = HARNESSES.filter(
  (h) => databases.has(h.dialect) && (values.only === undefined || h.name.includes(values.only)),
)
if (selected.length === 0) {
  console.error(`no adapter matches --database=${values.database} --only=${values.only ?? ''}`)
  process.exit(1)
}

type Variant = 'plain' | 'outbox'

// biome-ignore lint/suspicious/noExplicitAny: as EVERY_ADAPTER's, each harness has its own handle type
async function measure(harness: ContractHarness<any>): Promise<string[]> {
  const topics: ContractTopics = { orders: orderTopic(uniqueName('ke-bench-write')) }
  // Nothing connects to Kafka here: no relay runs, and producing writes to the outbox table only.
  const ctx = await harness.setup({ topics, schema: uniqueName('ke_bench_w'), brokers: ['127.0.0.1:9'] })
  let n = 0
  const once = async (variant: Variant): Promise<number> => {
    const id = `order-${n++}`
    const customer = `customer-${n % 64}`
    const start = performance.now()
    await ctx.transaction(async (tx) => {
      await ctx.insertOrder(tx, id, customer)
      if (variant === 'outbox') await ctx.producers(tx).orders.produce({ orderId: id, customer, seq: n })
    })
    return performance.now() - start
  }
  try {
    // Connections, prepared statements and the JIT: not counted.
    for (let i = 0; i < block; i++) {
      await once('plain')
      await once('outbox')
    }
    const ratios: number[] = []
    const ms: Record<Variant, number[]> = { plain: [], outbox: [] }
    for (let round = 0; round < rounds; round++) {
      // Alternating per transaction, which goes first alternating too: the machine's load drifts
      // within seconds, and a pair's two transactions see the same. Medians drop GC pauses.
      const took: Record<Variant, number[]> = { plain: [], outbox: [] }
      for (let i = 0; i < block; i++) {
        const order: Variant[] = (round + i) % 2 === 0 ? ['plain', 'outbox'] : ['outbox', 'plain']
        for (const variant of order) took[variant].push(await once(variant))
      }
      const plain = median(took.plain)
      const outbox = median(took.outbox)
      ms.plain.push(plain)
      ms.outbox.push(outbox)
      ratios.push(outbox / plain)
    }
    const verdict = median(ratios) <= 1.3 ? 'met' : 'NOT met'
    return [
      harness.name,
      harness.dialect,
      median(ms.plain).toFixed(3),
      median(ms.outbox).toFixed(3),
      `${median(ratios).toFixed(2)}x (${minMax(ratios, 2)})`,
      verdict,
    ]
  } finally {
    await ctx.teardown()
  }
}

console.log(
  `adapters write path: ${rounds} rounds of ${block} transactions per variant, load ${loadAverage()}`,
)
const rows: string[][] = []
for (const harness of selected) {
  const row = await measure(harness)
  console.log(`  ${row.join(' | ')}`)
  rows.push(row)
}
console.log('\n| adapter | database | plain ms/tx | + 1 message ms/tx | ratio (median, spread) | <= 1.3x |')
console.log('|---|---|---|---|---|---|')
for (const row of rows) console.log(`| ${row.join(' | ')} |`)
console.log(`load at the end ${loadAverage()}`)
