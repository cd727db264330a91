// What metrics cost the relay itself: the relay drains an in-memory store into a transport that
// acknowledges at once, so every microsecond is the relay's own per-batch work, counted as CPU time (no database, no
// Kafka, which would hide it in their noise). Scenarios alternate, `--reps` times each:
//   none       no listener at all (what an app without metrics runs)
//   otel-noop  outboxMetrics() on the global API with no SDK installed
//   otel-sdk   outboxMetrics() on a real MeterProvider
//   prom       outboxPrometheus() on a prom-client registry
// Usage: node bench/observability-overhead.ts [--messages 500000] [--batch 500] [--reps 5] [--only none,prom]
import { parseArgs } from 'node:util'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { Registry } from 'prom-client'
import type { RelayStore } from '../src/core/seams.ts'
import { type OutboxRecord, OutboxRelay, type StoredMessage } from '../src/index.ts'
import { outboxMetrics } from '../src/observability/opentelemetry.ts'
import { outboxPrometheus } from '../src/observability/prometheus.ts'

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '500000' },
    batch: { type: 'string', default: '500' },
    reps: { type: 'string', default: '5' },
    /** Comma-separated scenario names, e.g. `none` to compare the bare relay of two commits. */
    only: { type: 'string' },
  },
})
const total = Number(values.messages)
const batch = Number(values.batch)
const reps = Number(values.reps)

const messages: StoredMessage[] = Array.from({ length: total }, (_, i) => ({
  id: String(i + 1),
  topic: `topic-${i % 4}`,
  key: Buffer.from(`k${i % 64}`),
  value: Buffer.alloc(256, 1),
  headers: [],
  orderingHash: i % 64,
  attempts: 0,
}))

/** Hands out the prepared messages in order; deletes are free. */
class MemoryStore implements RelayStore {
  healthy = true
  #next = 0
  async connect(): Promise<void> {}
  async tryAcquireLeadership(): Promise<boolean> {
    return true
  }
  async claim(limit: number): Promise<StoredMessage[]> {
    const claimed = messages.slice(this.#next, this.#next + limit)
    this.#next += claimed.length
    return claimed
  }
  async complete(): Promise<void> {}
  async abandon(): Promise<void> {}
  async waitForWork(): Promise<void> {}
  async close(): Promise<void> {}
}

const transport = {
  async send(_records: readonly OutboxRecord[]): Promise<void> {},
  async close(): Promise<void> {},
}

async function drain(): Promise<number> {
  const relay = new OutboxRelay(new MemoryStore(), transport, {
    maxMessagesPerPoll: batch,
    maxBytesPerPoll: 1024 * 1024 * 1024,
    logger: false,
  })
  // CPU time, not wall time: on a shared machine other processes stretch wall time at random.
  const started = process.cpuUsage()
  const count = await relay.drain()
  const used = process.cpuUsage(started)
  const ms = (used.user + used.system) / 1000
  if (count !== total) throw new Error(`drained ${count} of ${total}`)
  await relay.stop()
  return ms
}

const scenarios: Record<string, () => () => void> = {
  none: () => () => {},
  'otel-noop': () => {
    const metrics = outboxMetrics()
    return () => metrics.close()
  },
  'otel-sdk': () => {
    const provider = new MeterProvider()
    const metrics = outboxMetrics({ meter: provider.getMeter('k-entity') })
    return () => metrics.close()
  },
  prom: () => {
    const metrics = outboxPrometheus({ registry: new Registry() })
    return () => metrics.close()
  },
}

const chosen = values.only?.split(',') ?? Object.keys(scenarios)
for (const name of Object.keys(scenarios)) if (!chosen.includes(name)) delete scenarios[name]
const times = new Map<string, number[]>(Object.keys(scenarios).map((name) => [name, []]))
await drain() // warm-up
for (let rep = 0; rep < reps; rep++) {
  for (const [name, setup] of Object.entries(scenarios)) {
    const teardown = setup()
    times.get(name)?.push(await drain())
    teardown()
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0
const base = median(times.get('none') ?? [])
console.log(`${total} messages, batches of ${batch}, ${reps} alternating runs each; median CPU time per run`)
console.log('scenario   | CPU ms      | msg/CPU-s | CPU µs/batch | vs none | runs (ms)')
for (const [name, runs] of times) {
  const ms = median(runs)
  console.log(
    `${name.padEnd(10)} | ${ms.toFixed(0).padStart(11)} | ${Math.round((total / ms) * 1000)
      .toString()
      .padStart(
        9,
      )} | ${((ms * 1000) / (total / batch)).toFixed(1).padStart(12)} | ${(ms / base).toFixed(3).padStart(7)} | ${runs.map((r) => r.toFixed(0)).join(' ')}`,
  )
}
