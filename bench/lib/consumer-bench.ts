// What bench/consumer.ts (PostgreSQL, MariaDB) and bench/consumer-sqlite.ts share: the four
// variants, one timed run of a variant, the repetitions with their warm-up, and the summary.
import { consume } from '../../src/consumer/consume.ts'
import type { KafkaConsumer } from '../../src/consumer/kafka-consumer.ts'
import type { Topic } from '../../src/core/topic.ts'
import type { KafkaOptions } from '../../src/transports/kafka/index.ts'
import { produceRaw, uniqueName } from '../../test/consumer/kafka.ts'
import { midpointMedian, minMax } from './stats.ts'

//   bare:           consume(), handler does nothing
//   inbox:          outbox.consume(), handler does nothing: the inbox's own cost (the >= 0.5x target)
//   bare + write:   consume(), handler writes one row with its own autocommit statement
//   inbox + write:  outbox.consume(), the same row inside the inbox's transaction
export const VARIANTS = ['bare', 'inbox', 'bare + write', 'inbox + write'] as const
export type Variant = (typeof VARIANTS)[number]
export type Event = { id: number; pad: string }

/** What differs per database: the inbox consumer, the bare variant's write, and the cleanup. */
export interface ConsumerBenchDatabase {
  consumeInbox(groupId: string, write: boolean, first: () => void): KafkaConsumer<Event>
  /** One effect row in autocommit (the `bare + write` variant). */
  writeAutocommit(id: number): unknown
  reset(): unknown
}

export interface ConsumerBenchOptions {
  /** Messages a no-op variant handles (the target's pair: long enough to time a bare consumer). */
  total: number
  /** Messages a `+ write` variant handles (a row per message in autocommit is 20-30x slower). */
  writeTotal: number
  reps: number
  warmup: number
  kafka: KafkaOptions
  /** Options every consumer of the run gets (logger, maxWaitMs, maxInFlight). */
  common: { logger: false; maxWaitMs: number; maxInFlight: number }
}

/** `total` messages of 256 bytes, keyed by id, into `topic`. */
export async function fillTopic(brokers: string[], topic: string, total: number): Promise<void> {
  const pad = 'x'.repeat(256 - 30)
  const messages = []
  for (let id = 0; id < total; id++) messages.push({ key: String(id), value: JSON.stringify({ id, pad }) })
  await produceRaw(brokers, topic, messages)
}

/** msg/s from the first handled message to the last, and the transactions that handled them. */
async function run(
  db: ConsumerBenchDatabase,
  events: Topic<Event>,
  variant: Variant,
  options: ConsumerBenchOptions,
): Promise<{ rate: number; batches: number; handled: number }> {
  const { kafka, common } = options
  const total = variant.endsWith('write') ? options.writeTotal : options.total
  await db.reset()
  let began: number | undefined
  const first = () => {
    began ??= performance.now()
  }
  const groupId = uniqueName(variant.replaceAll(/\W+/g, '-'))
  const consumer =
    variant === 'bare'
      ? consume(events, { ...common, kafka, groupId, handler: async () => first() })
      : variant === 'bare + write'
        ? consume(events, {
            ...common,
            kafka,
            groupId,
            handler: async (message) => {
              first()
              await db.writeAutocommit((message.value as Event).id)
            },
          })
        : db.consumeInbox(groupId, variant === 'inbox + write', first)
  const deadline = performance.now() + 300_000
  while (consumer.counts.handled < total) {
    if (performance.now() > deadline)
      throw new Error(`${variant}: ${consumer.counts.handled} of ${total} in 300 s`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  const seconds = (performance.now() - (began ?? 0)) / 1000
  // A batch can take the count past `total`.
  const handled = consumer.counts.handled
  await consumer.close()
  return { rate: handled / seconds, batches: consumer.counts.batches, handled }
}

/**
 * Every variant per repetition, their order alternating; the warm-up repetitions come first and
 * are not counted (the first run of each was up to 5x slower than the next: JIT, the broker's
 * page cache, the database's buffers and plans). Returns each variant's rates.
 */
export async function repetitions(
  db: ConsumerBenchDatabase,
  events: Topic<Event>,
  options: ConsumerBenchOptions,
): Promise<Map<Variant, number[]>> {
  const rates = new Map<Variant, number[]>(VARIANTS.map((v) => [v, []]))
  for (let rep = -options.warmup; rep < options.reps; rep++) {
    const order = rep % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()
    for (const variant of order) {
      const { rate, batches, handled } = await run(db, events, variant, options)
      if (rep >= 0) rates.get(variant)?.push(rate)
      const label = rep < 0 ? 'warm-up' : `rep ${rep + 1}`
      const mean = batches > 0 ? `  (${batches} batches, mean ${Math.round(handled / batches)} messages)` : ''
      console.log(
        `  ${label.padEnd(7)} ${variant.padEnd(14)} ${String(Math.round(rate)).padStart(7)} msg/s${mean}`,
      )
    }
  }
  return rates
}

/** Medians and spreads per variant, the ratios per repetition, and the target's verdict. */
export function summarize(title: string, rates: Map<Variant, number[]>): void {
  console.log(title)
  for (const variant of VARIANTS) {
    const xs = rates.get(variant) as number[]
    console.log(
      `  ${variant.padEnd(14)} ${String(Math.round(midpointMedian(xs))).padStart(7)} msg/s  (${minMax(xs, 0)})`,
    )
  }
  const ratio = (a: Variant, b: Variant) => {
    const xs = (rates.get(a) as number[]).map((x, i) => x / ((rates.get(b) as number[])[i] as number))
    return { median: midpointMedian(xs), text: `${midpointMedian(xs).toFixed(2)}x (${minMax(xs, 2)})` }
  }
  const own = ratio('inbox', 'bare')
  console.log(`  inbox / bare:                 ${own.text}`)
  console.log(`  inbox + write / bare + write: ${ratio('inbox + write', 'bare + write').text}`)
  console.log(`  inbox + write / bare:         ${ratio('inbox + write', 'bare').text}`)
  console.log(
    `  target inbox / bare >= 0.5x: ${own.median >= 0.5 ? 'MET' : 'NOT MET'} (${own.median.toFixed(2)}x)`,
  )
}

/** The size options both consumer benches take, with their defaults (for `parseArgs`). */
export function sizeOptions(defaults: { messages: number; reps: number }) {
  return {
    messages: { type: 'string', default: String(defaults.messages) },
    partitions: { type: 'string', default: '4' },
    reps: { type: 'string', default: String(defaults.reps) },
    warmup: { type: 'string', default: '1' },
    'write-messages': { type: 'string', default: String(Math.min(defaults.messages, 30000)) },
    // The library's defaults.
    'batch-size': { type: 'string', default: '500' },
    'max-in-flight': { type: 'string', default: '10000' },
  } as const
}

/** The size options as numbers; exits with a message naming the first bad one. */
export function parseSizes(values: Record<keyof ReturnType<typeof sizeOptions>, string>) {
  const sizes = {
    total: Number(values.messages),
    partitions: Number(values.partitions),
    reps: Number(values.reps),
    warmup: Number(values.warmup),
    writeTotal: Number(values['write-messages']),
    batchSize: Number(values['batch-size']),
    maxInFlight: Number(values['max-in-flight']),
  }
  for (const [name, n] of [
    ['messages', sizes.total],
    ['write-messages', sizes.writeTotal],
    ['partitions', sizes.partitions],
    ['reps', sizes.reps],
    ['batch-size', sizes.batchSize],
    ['max-in-flight', sizes.maxInFlight],
  ] as const) {
    if (!Number.isInteger(n) || n < 1) {
      console.error(`--${name} must be a positive integer`)
      process.exit(1)
    }
  }
  if (!Number.isInteger(sizes.warmup) || sizes.warmup < 0) {
    console.error('--warmup must be an integer >= 0')
    process.exit(1)
  }
  return sizes
}
