/**
 * A producer process of the chaos run: business transactions that insert rows and produce
 * tracked messages, a fraction rolled back on purpose. Even writers use
 * `outbox.transaction(pool, fn)`, odd ones their own BEGIN/COMMIT with `outbox.in(client)`, on
 * clients of the same pool (both hold their writes until the COMMIT).
 * Each writer owns its keys, so the sequence number it gives a key's messages is their commit
 * order. What committed and what rolled back is appended to a JSONL file (see ProducerLine).
 *
 * Runner commands over IPC: { type: 'go' } (start producing, when started with waitForGo),
 * { type: 'poison' } (commit a too-large message between two normal
 * ones of one key), { type: 'stop' }.
 */
import { appendFileSync } from 'node:fs'
import pg from 'pg'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { withPoolClient } from '../src/adapters/pg/pool-client.ts'
import {
  type ChaosEvent,
  chaosTopics,
  env,
  POISON_PAD_BYTES,
  type ProducerCommand,
  type ProducerConfig,
  type ProducerLine,
  type ProducerReport,
  seededRandom,
  sleep,
  type TopicAccessor,
  waitForGo,
} from './shared.ts'

const config = JSON.parse(env('CHAOS_PRODUCER')) as ProducerConfig
const report = (message: ProducerReport) => process.send?.(message)
const random = seededRandom(config.seed)
const outbox = createPgOutbox({ topics: chaosTopics(config.topics), schema: config.schema })
const pool = new pg.Pool({
  connectionString: config.databaseUrl,
  application_name: config.applicationName,
  max: config.writers + 1,
})
pool.on('error', () => {})
const business = `"${config.schema}".business`

type Producers = ReturnType<typeof outbox.in>
type Transaction = (fn: (client: pg.PoolClient, topics: Producers) => Promise<void>) => Promise<void>

const helperTransaction: Transaction = (fn) => outbox.transaction(pool, fn)

/** The app's own BEGIN/COMMIT on a client of the pool, producing through `outbox.in(client)`. */
const ownTransaction: Transaction = (fn) =>
  withPoolClient(pool, async (client) => {
    await client.query('BEGIN')
    try {
      await fn(client, outbox.in(client))
      await client.query('COMMIT')
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      throw error
    }
  })

type Tuple = [string, TopicAccessor, string, number]
interface Planned {
  topic: TopicAccessor
  event: ChaosEvent
}

class RollbackOnPurpose extends Error {}

let stopping = false
let poisonRequested = 0
let txNo = 0
const counts = { committed: 0, rolledBack: 0, uncertain: 0 }

function record(line: ProducerLine): void {
  appendFileSync(config.outFile, `${JSON.stringify(line)}\n`)
}

const tuple = (p: Planned): Tuple => [p.event.id, p.topic, p.event.key, p.event.seq]

async function writer(w: number): Promise<void> {
  const keys = Array.from({ length: config.keysPerWriter }, (_, i) => `p${config.index}w${w}-k${i}`)
  const burstKey = `p${config.index}w${w}-burst`
  const seqs = new Map<string, number>()
  const next = (key: string) => {
    const seq = (seqs.get(key) ?? 0) + 1
    seqs.set(key, seq)
    return seq
  }
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T
  const topicOf = (): TopicAccessor => (random() < 0.5 ? 'orders' : 'payments')
  const transaction = w % 2 === 0 ? helperTransaction : ownTransaction

  while (!stopping) {
    const tx = txNo++
    const planned: Planned[] = []
    let poison: Planned | undefined
    let rollback = false
    if (w === 0 && poisonRequested > 0) {
      // A poison message in the middle of a key's stream: one message of the key before it and
      // one after it, in the same transaction, on the topic with the low max.message.bytes.
      poisonRequested--
      const key = pick(keys)
      for (const [m, pad] of [0, POISON_PAD_BYTES, 0].entries()) {
        const event: ChaosEvent = { id: `p${config.index}-${tx}-${m}`, key, seq: next(key), pad }
        planned.push({ topic: 'orders', event })
      }
      poison = planned[1]
    } else if (random() < config.burstRate) {
      const topic = topicOf()
      const n = 20 + Math.floor(random() * 41)
      for (let m = 0; m < n; m++) {
        planned.push({
          topic,
          event: { id: `p${config.index}-${tx}-${m}`, key: burstKey, seq: next(burstKey) },
        })
      }
      rollback = random() < config.rollbackRate
    } else {
      const n = 1 + Math.floor(random() * 4)
      for (let m = 0; m < n; m++) {
        const key = pick(keys)
        planned.push({ topic: topicOf(), event: { id: `p${config.index}-${tx}-${m}`, key, seq: next(key) } })
      }
      rollback = random() < config.rollbackRate
    }

    try {
      await transaction(async (client, topics) => {
        await client.query(
          `INSERT INTO ${business} (id, topic, key) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])`,
          [planned.map((p) => p.event.id), planned.map((p) => p.topic), planned.map((p) => p.event.key)],
        )
        for (const topic of ['orders', 'payments'] as const) {
          const events = planned.filter((p) => p.topic === topic).map((p) => p.event)
          if (events.length === 0) continue
          // Bursts and poison transactions go through produceMany (one multi-row insert).
          if (events.length === 1) await topics[topic].produce(events[0] as ChaosEvent)
          else await topics[topic].produceMany(events)
        }
        if (rollback) throw new RollbackOnPurpose()
      })
      if (poison) {
        record({ c: planned.filter((p) => p !== poison).map(tuple), p: [tuple(poison)] })
        const [before, , after] = planned
        report({
          type: 'poisoned',
          pid: process.pid,
          id: poison.event.id,
          key: poison.event.key,
          before: before?.event.id ?? '',
          after: after?.event.id ?? '',
        })
        counts.committed += planned.length - 1
      } else {
        record({ c: planned.map(tuple) })
        counts.committed += planned.length
      }
    } catch (error) {
      if (error instanceof RollbackOnPurpose) {
        record({ r: planned.map(tuple) })
        counts.rolledBack += planned.length
      } else {
        // Not planned: we cannot tell whether COMMIT happened. Recorded apart, never guessed.
        record({ u: planned.map(tuple) })
        counts.uncertain += planned.length
        console.error(`producer ${config.index}: transaction failed: ${(error as Error).message}`)
        await sleep(200)
      }
    }
    if (config.paceMs > 0) await sleep(config.paceMs * (0.5 + random()))
  }
}

process.on('message', (message: ProducerCommand) => {
  if (message.type === 'poison') poisonRequested++
  if (message.type === 'stop') stopping = true
})
// The runner is gone: stop producing.
process.on('disconnect', () => {
  stopping = true
})

report({ type: 'loaded', pid: process.pid })
await waitForGo(config.waitForGo)
report({ type: 'started', pid: process.pid })
const progress = setInterval(() => report({ type: 'progress', pid: process.pid, ...counts }), 2000)
try {
  await Promise.all(Array.from({ length: config.writers }, (_, w) => writer(w)))
  clearInterval(progress)
  await pool.end()
  exitAfter({ type: 'stopped', pid: process.pid, ...counts }, 0)
} catch (error) {
  exitAfter({ type: 'failed', pid: process.pid, message: String((error as Error)?.stack ?? error) }, 1)
}

/** Exits once the last report is handed to the IPC channel (process.exit would drop it). */
function exitAfter(message: ProducerReport, code: number): void {
  if (!process.send || !process.connected) process.exit(code)
  process.send(message, () => process.exit(code))
}
