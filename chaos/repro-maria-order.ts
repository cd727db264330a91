/**
 * Focused reproduction of the MariaDB per-key order failure seen in the chaos run's concurrent
 * phase (report-mariaorder.md). No Kafka: each relay's transport appends what it "writes" to one
 * shared in-memory log (the stand-in for the partitions), so the first copy of every message and
 * who sent it in which batch are known exactly. Real MariaDB, real relays (concurrent mode,
 * pipeline as by default), writers that own their keys and commit one transaction at a time
 * (as chaos/producer.ts does), and faults: partition failures, sends rejected after being
 * written, slow sends, and relay sessions killed on the server (KILL CONNECTION).
 *
 *   scripts/node-env.sh node chaos/repro-maria-order.ts [seconds] [faults: kill,partial,rejectAfter,slow]
 *
 * Exits 1 when a message's first copy is written after a later message of its key.
 */
import mysql from 'mysql2/promise'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { ErrorCodes, KEntityError } from '../src/core/errors.ts'
import type { OutboxRecord } from '../src/core/record.ts'
import type { MessageTransport, SendFailure } from '../src/core/seams.ts'
import { defineTopic } from '../src/index.ts'
import { readTracking, trackingHeaders } from '../src/testing/index.ts'

const BASE_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
const seconds = Number(process.argv[2] ?? 30)
const faults = new Set((process.argv[3] ?? 'kill,partial,rejectAfter,slow').split(','))
const RELAYS = Number(process.env.RELAYS ?? 3)
const WRITERS = Number(process.env.WRITERS ?? 4)
const KEYS_PER_WRITER = Number(process.env.KEYS ?? 6)
const BATCH = Number(process.env.BATCH ?? 20)
const PARTITIONS = 4
const PACE_MS = Number(process.env.PACE_MS ?? 15)
const database = `mariaorder_r${process.pid}`

interface Ev {
  id: string
  key: string
  seq: number
}
const topics = {
  orders: defineTopic<Ev>({
    name: 'mo-orders',
    key: (e) => e.key,
    headers: (e) => trackingHeaders(e.id, e.seq),
  }),
  // A topic the stand-in Kafka never has: its sends take POISON_MS and fail (as a missing topic).
  missing: defineTopic<Ev>({
    name: 'mo-missing',
    key: (e) => e.key,
    headers: (e) => trackingHeaders(e.id, e.seq),
  }),
}
const POISON_MS = Number(process.env.POISON_MS ?? 500)
const POISON_EVERY_MS = Number(process.env.POISON_EVERY_MS ?? 3000)

function urlFor(db: string): string {
  const url = new URL(BASE_URL)
  url.pathname = `/${db}`
  return url.toString()
}

const admin = await mysql.createConnection(BASE_URL)
await admin.query(`DROP DATABASE IF EXISTS \`${database}\``)
await admin.query(`CREATE DATABASE \`${database}\``)
for (let r = 0; r < 100; r++) await admin.query(`CREATE DATABASE IF NOT EXISTS \`${database}_r${r}\``)
const outbox = createMysqlOutbox({ topics, schema: database })
await outbox.migrate(BASE_URL)

/** Everything any relay wrote, in write order: the stand-in for Kafka's partitions. */
interface Written {
  id: string
  /** The outbox row's id (the relay passes StoredMessages). */
  row: string
  key: string
  seq: number
  relay: number
  send: number
  at: number
}
const log: Written[] = []
const committed = new Map<string, Ev>()
const t0 = performance.now()
const now = () => Math.round(performance.now() - t0)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const partitionOf = (key: string) => {
  let h = 0
  for (const c of key) h = (h * 31 + c.charCodeAt(0)) | 0
  return Math.abs(h) % PARTITIONS
}
const stats = {
  sends: 0,
  partial: 0,
  rejectAfter: 0,
  kills: 0,
  restarts: 0,
  errors: 0,
  poisons: 0,
  poisonSends: 0,
}

function transport(relay: number): MessageTransport {
  let sendNo = 0
  return {
    async send(records: readonly OutboxRecord[]) {
      const send = ++sendNo
      stats.sends++
      if (faults.has('slow')) await sleep(Math.random() < 0.1 ? 50 + Math.random() * 300 : Math.random() * 10)
      const entries = records.map((r) => {
        const t = readTracking(r.headers)
        return {
          id: t?.id ?? '?',
          key: r.key?.toString() ?? '',
          seq: t?.seq ?? -1,
          row: (r as { id?: string }).id ?? '?',
        }
      })
      const poisoned = records.flatMap((r, index) => (r.topic === 'mo-missing' ? [index] : []))
      if (poisoned.length > 0) {
        // As the Kafka transport with a missing topic: a metadata round trip, then those records
        // fail (counted attempts) and the others are written.
        await sleep(POISON_MS)
        stats.poisonSends++
        entries.forEach((e, index) => {
          if (!poisoned.includes(index)) log.push({ ...e, relay, send, at: now() })
        })
        throw Object.assign(
          new KEntityError(ErrorCodes.TRANSPORT_FAILED, "topic 'mo-missing' does not exist", {
            retryable: true,
          }),
          {
            failed: poisoned.map((index) => ({
              index,
              error: new Error("topic 'mo-missing' does not exist"),
              retryable: true,
              countsAsAttempt: true,
            })),
          },
        )
      }
      const roll = Math.random()
      if (faults.has('partial') && roll < 0.05) {
        // One partition's leader moving: its records are not written, the others are.
        stats.partial++
        const bad = Math.floor(Math.random() * PARTITIONS)
        const failed: SendFailure[] = []
        entries.forEach((e, index) => {
          if (partitionOf(e.key) === bad) {
            failed.push({
              index,
              error: new KEntityError(ErrorCodes.TRANSPORT_FAILED, 'NOT_LEADER_OR_FOLLOWER', {
                retryable: true,
              }),
              retryable: true,
              countsAsAttempt: false,
              kafkaAnswered: true,
            })
          } else log.push({ ...e, relay, send, at: now() })
        })
        throw Object.assign(
          new KEntityError(ErrorCodes.TRANSPORT_FAILED, 'NOT_LEADER_OR_FOLLOWER on one partition', {
            retryable: true,
          }),
          { failed },
        )
      }
      for (const e of entries) log.push({ ...e, relay, send, at: now() })
      if (faults.has('rejectAfter') && roll > 0.97) {
        // Written, but the answer is lost (request timed out after the broker wrote it).
        stats.rejectAfter++
        throw new KEntityError(ErrorCodes.TRANSPORT_FAILED, 'request timed out', { retryable: true })
      }
    },
    close: async () => {},
  }
}

let relayNo = 0
const live: { no: number; relay: ReturnType<typeof outbox.relay> }[] = []
async function startRelay(): Promise<void> {
  const no = relayNo++
  const relay = outbox.relay({
    connection: urlFor(`${database}_r${no % 100}`),
    mode: 'concurrent',
    kafka: transport(no),
    pollingInterval: 20,
    maxMessagesPerPoll: BATCH,
    retryBackoff: { initial: 100, max: 2000 },
    retry: { maxAttempts: 10, onExhausted: 'dead-letter' },
    onEvent: (e) => {
      if (e.type === 'error') stats.errors++
    },
  })
  await relay.start()
  live.push({ no, relay })
}

let stopping = false
const pool = mysql.createPool({ uri: BASE_URL, connectionLimit: WRITERS + 2 })
let txNo = 0
let lastPoison = 0
async function writer(w: number): Promise<void> {
  const keys = Array.from({ length: KEYS_PER_WRITER }, (_, i) => `w${w}-k${i}`)
  const seqs = new Map<string, number>()
  while (!stopping) {
    const tx = txNo++
    const n = 1 + Math.floor(Math.random() * 4)
    const events: Ev[] = []
    const nextSeqs = new Map(seqs)
    for (let m = 0; m < n; m++) {
      const key = keys[Math.floor(Math.random() * keys.length)] as string
      const seq = (nextSeqs.get(key) ?? 0) + 1
      nextSeqs.set(key, seq)
      events.push({ id: `t${tx}-${m}`, key, seq })
    }
    const rollback = Math.random() < 0.05
    const poison = w === 0 && faults.has('poison') && performance.now() - lastPoison > POISON_EVERY_MS
    if (poison) lastPoison = performance.now()
    try {
      await outbox.transaction(pool, async (_c, t) => {
        if (poison) {
          stats.poisons++
          await t.missing.produce({ id: `poison-${tx}`, key: events[0]?.key ?? 'x', seq: 0 })
        }
        if (events.length === 1) await t.orders.produce(events[0] as Ev)
        else await t.orders.produceMany(events)
        if (rollback) throw new Error('rollback on purpose')
      })
      for (const [k, v] of nextSeqs) seqs.set(k, v)
      for (const e of events) committed.set(e.id, e)
      if (poison && rollback) stats.poisons--
    } catch {
      // rolled back: the seqs are not used
    }
    await sleep(PACE_MS * (0.5 + Math.random()))
  }
}

async function killer(): Promise<void> {
  while (!stopping) {
    await sleep(200 + Math.random() * 400)
    if (stopping) break
    if (faults.has('kill')) {
      const [rows] = (await admin.query(`SELECT id, db FROM information_schema.PROCESSLIST WHERE db LIKE ?`, [
        `${database}\\_r%`,
      ])) as [{ id: number; db: string }[], unknown]
      if (rows.length > 0) {
        const victim = rows[Math.floor(Math.random() * rows.length)] as { id: number }
        await admin.query(`KILL CONNECTION ${victim.id}`).catch(() => {})
        stats.kills++
      }
    }
    if (faults.has('restart') && Math.random() < 0.2 && live.length > 0) {
      const [old] = live.splice(Math.floor(Math.random() * live.length), 1)
      void old?.relay.stop({ timeout: 2000 }).catch(() => {})
      await startRelay()
      stats.restarts++
    }
  }
}

for (let r = 0; r < RELAYS; r++) await startRelay()
const writers = Array.from({ length: WRITERS }, (_, w) => writer(w))
const killing = killer()
await sleep(seconds * 1000)
stopping = true
await Promise.all(writers)
await killing
// Drain.
const drainStart = Date.now()
for (;;) {
  const [rows] = (await admin.query(`SELECT COUNT(*) AS n FROM \`${database}\`.outbox`)) as [
    { n: number }[],
    unknown,
  ]
  if (Number(rows[0]?.n) === 0 || Date.now() - drainStart > 60_000) break
  await sleep(200)
}
for (const { relay } of live) await relay.stop({ timeout: 5000 }).catch(() => {})
await pool.end()

// Verdict: first copy of each committed message, in log order, per key.
const firstAt = new Map<string, number>()
log.forEach((w, i) => {
  if (!firstAt.has(w.id)) firstAt.set(w.id, i)
})
const lost = [...committed.keys()].filter((id) => !firstAt.has(id))
const byKey = new Map<string, Written[]>()
for (const [id, i] of [...firstAt.entries()].sort((a, b) => a[1] - b[1])) {
  const w = log[i] as Written
  if (!committed.has(id)) continue
  byKey.set(w.key, [...(byKey.get(w.key) ?? []), w])
}
const violations: string[] = []
for (const [key, list] of byKey) {
  let maxSeen: Written | undefined
  for (const w of list) {
    if (maxSeen && w.seq < maxSeen.seq) {
      violations.push(
        `${key}: ${w.id} row ${w.row} seq ${w.seq} (relay ${w.relay} send ${w.send} at ${w.at} ms) after ${maxSeen.id} row ${maxSeen.row} seq ${maxSeen.seq} (relay ${maxSeen.relay} send ${maxSeen.send} at ${maxSeen.at} ms)`,
      )
    }
    if (!maxSeen || w.seq > maxSeen.seq) maxSeen = w
  }
}
console.log(
  JSON.stringify({
    seconds,
    faults: [...faults],
    relays: RELAYS,
    committed: committed.size,
    written: log.length,
    lost: lost.length,
    outOfOrder: violations.length,
    stats,
  }),
)
for (const v of violations.slice(0, 20)) console.log(`OUT OF ORDER ${v}`)
if (violations.length > 0) {
  // The surrounding writes of the first violation, for diagnosis.
  const first = violations[0] as string
  console.log(`first: ${first}`)
}
for (let r = 0; r < 100; r++) await admin.query(`DROP DATABASE IF EXISTS \`${database}_r${r}\``)
await admin.query(`DROP DATABASE IF EXISTS \`${database}\``)
await admin.end()
process.exit(violations.length > 0 || lost.length > 0 ? 1 : 0)
