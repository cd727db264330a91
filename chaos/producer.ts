/**
 * A producer process of the chaos run: business transactions that insert rows and produce
 * tracked messages, a fraction rolled back on purpose. Even writers use
 * `outbox.transaction(pool, fn)`, odd ones their own BEGIN/COMMIT with `outbox.in(tx)`, on
 * connections of the same pool.
 * The database half (pool, transactions, raw inserts) is chaos/db/producer-{postgres,mariadb}.ts.
 * Each writer owns its keys, so the sequence number it gives a key's messages is their commit
 * order. What committed and what rolled back is appended to a JSONL file (see ProducerLine).
 *
 * A transaction that fails for another reason than the planned rollback is recorded by where it
 * failed: before its COMMIT was sent (`f`: not committed), or once the COMMIT was on its way (`u`:
 * the connection broke without an answer, e.g. a database restart; the outcome is unknown and the
 * runner resolves it from the business rows).
 *
 * Runner commands over IPC: { type: 'go' } (start producing, when started with waitForGo),
 * { type: 'poison', kind } (commit a poison message between two normal ones of one key),
 * { type: 'stop' }.
 */
import { appendFileSync } from 'node:fs'
import { loadProducerDb } from './db/producer-db.ts'
import {
  type ChaosEvent,
  env,
  INTERNAL_TOPIC,
  POISON_PAD_BYTES,
  type PoisonKind,
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
const db = await loadProducerDb(config)

type Tuple = [string, TopicAccessor, string, number]
interface Planned {
  topic: TopicAccessor
  event: ChaosEvent
}

class RollbackOnPurpose extends Error {}

let stopping = false
const poisonRequested: PoisonKind[] = []
let txNo = 0
let lastComplaint = 0
const counts = { committed: 0, rolledBack: 0, failed: 0, uncertain: 0 }

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
  const transaction = w % 2 === 0 ? db.helperTransaction : db.ownTransaction

  while (!stopping) {
    const tx = txNo++
    const planned: Planned[] = []
    let poison: Planned | undefined
    let poisonKind: PoisonKind | undefined
    let rollback = false
    if (w === 0 && poisonRequested.length > 0) {
      // A poison message in the middle of a key's stream: one message of the key before it and
      // one after it on `orders`, in the same transaction.
      poisonKind = poisonRequested.shift() as PoisonKind
      const key = pick(keys)
      const poisonTopic: TopicAccessor =
        poisonKind === 'too-large' ? 'orders' : poisonKind === 'missing-topic' ? 'missing' : 'internal'
      for (const m of [0, 1, 2]) {
        const event: ChaosEvent = { id: `p${config.index}-${tx}-${m}`, key, seq: next(key) }
        if (m === 1 && poisonKind === 'too-large') event.pad = POISON_PAD_BYTES
        planned.push({ topic: m === 1 ? poisonTopic : 'orders', event })
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

    const stage = { committing: false }
    try {
      await transaction(async (tx, topics) => {
        await tx.insertBusiness(planned.map((p) => [p.event.id, p.topic, p.event.key]))
        for (const topic of ['orders', 'payments', 'missing', 'internal'] as const) {
          const events = planned.filter((p) => p.topic === topic).map((p) => p.event)
          if (events.length === 0) continue
          if (topic === 'internal') {
            for (const event of events) await tx.insertInternalTopicRow(event)
            continue
          }
          // Bursts and poison transactions go through produceMany (one multi-row insert).
          if (events.length === 1) await topics[topic].produce(events[0] as ChaosEvent)
          else await topics[topic].produceMany(events)
        }
        if (rollback) throw new RollbackOnPurpose()
      }, stage)
      if (poison && poisonKind) {
        record({ c: planned.filter((p) => p !== poison).map(tuple), p: [tuple(poison)], pk: poisonKind })
        const [before, , after] = planned
        report({
          type: 'poisoned',
          pid: process.pid,
          kind: poisonKind,
          id: poison.event.id,
          topic: poisonKind === 'internal-topic' ? INTERNAL_TOPIC : config.topics[poison.topic as 'orders'],
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
        // Not planned. Before the COMMIT went out nothing can have committed; after it, we cannot
        // tell: recorded apart, never guessed. A poison transaction is asked for again.
        const detail = {
          ...(poison ? { up: tuple(poison) } : {}),
          t: Date.now(),
          e: String((error as Error)?.message ?? error).slice(0, 160),
        }
        const all = planned.map(tuple)
        if (stage.committing) {
          record({ u: all, ...detail })
          counts.uncertain += planned.length
        } else {
          record({ f: all, ...detail })
          counts.failed += planned.length
        }
        if (poisonKind) poisonRequested.unshift(poisonKind)
        // One line per second at most: a writer retries every 200 ms while the database is down.
        if (detail.t - lastComplaint >= 1000) {
          lastComplaint = detail.t
          console.error(
            `producer ${config.index}: transaction failed ${stage.committing ? 'at its COMMIT (outcome unknown)' : 'before its COMMIT'}: ${detail.e}`,
          )
        }
        await sleep(200)
      }
    }
    if (config.paceMs > 0) await sleep(config.paceMs * (0.5 + random()))
  }
}

process.on('message', (message: ProducerCommand) => {
  if (message.type === 'poison') poisonRequested.push(message.kind)
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
  await db.end()
  exitAfter({ type: 'stopped', pid: process.pid, ...counts }, 0)
} catch (error) {
  exitAfter({ type: 'failed', pid: process.pid, message: String((error as Error)?.stack ?? error) }, 1)
}

/** Exits once the last report is handed to the IPC channel (process.exit would drop it). */
function exitAfter(message: ProducerReport, code: number): void {
  if (!process.send || !process.connected) process.exit(code)
  process.send(message, () => process.exit(code))
}
