// Where the inbox consumer's time goes on MariaDB/MySQL: runs the inbox consumer (no-op handler)
// over a topic with a mysql2 pool whose connections are wrapped to time every phase of a batch's
// transaction (waiting for a connection, START TRANSACTION, the inbox INSERT, the handlers,
// COMMIT) and to count the rows per batch and the transactions running at once.
// Usage: KAFKA_BROKERS=host:port node bench/consumer-phases.ts [--messages=20000] [--partitions=4]
//          [--reps=2] [--batch-size=200] [--max-in-flight=1000] [--variants=bare,text,library]
// Variants, alternating in order per repetition in one process: `bare` (consume(), no inbox),
// `text` (the inbox with every batch INSERT sent as text, as before full batches were prepared),
// `library` (the inbox as it is).
// MYSQL_URL (default mysql://root@127.0.0.1:3306/test).
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import mysql from 'mysql2/promise'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { consume } from '../src/consumer/consume.ts'
import { defineTopic } from '../src/core/topic.ts'
import { mysqlInbox } from '../src/dialects/mysql/inbox.ts'
import { createTopic, deleteTopic, produceRaw, uniqueName } from '../test/consumer/kafka.ts'
import { insertManyValues } from './lib/mysql-inbox-values.ts'

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '20000' },
    partitions: { type: 'string', default: '4' },
    reps: { type: 'string', default: '2' },
    'batch-size': { type: 'string', default: '200' },
    'max-in-flight': { type: 'string', default: '1000' },
    variants: { type: 'string', default: 'bare,text,library' },
  },
})
const total = Number(values.messages)
const partitions = Number(values.partitions)
const reps = Number(values.reps)
const batchSize = Number(values['batch-size'])
const maxInFlight = Number(values['max-in-flight'])
const brokers = (process.env.KAFKA_BROKERS ?? '').split(',').filter(Boolean)
if (brokers.length === 0) {
  console.error('set KAFKA_BROKERS')
  process.exit(1)
}
const kafka = { brokers, clientId: 'k-entity-bench-phases' }
type Event = { id: number; pad: string }

/** Per phase: total ms and count. */
class Phases {
  readonly sums = new Map<string, { ms: number; n: number }>()
  readonly rows: number[] = []
  open = 0
  maxOpen = 0
  openSamples: number[] = []
  add(name: string, ms: number) {
    const entry = this.sums.get(name) ?? { ms: 0, n: 0 }
    entry.ms += ms
    entry.n++
    this.sums.set(name, entry)
  }
  async time<R>(name: string, fn: () => Promise<R>): Promise<R> {
    const start = performance.now()
    try {
      return await fn()
    } finally {
      this.add(name, performance.now() - start)
    }
  }
}

function wrapPool(pool: mysql.Pool, phases: () => Phases): mysql.Pool {
  return new Proxy(pool, {
    get(target, prop, receiver) {
      if (prop !== 'getConnection') return Reflect.get(target, prop, receiver)
      return async () => {
        const p = phases()
        const connection = await p.time('getConnection', () => target.getConnection())
        let began = 0
        let inserted = 0
        return new Proxy(connection, {
          get(c, name) {
            if (name === 'beginTransaction') {
              return async () => {
                p.open++
                p.maxOpen = Math.max(p.maxOpen, p.open)
                p.openSamples.push(p.open)
                began = performance.now()
                const result = await p.time('begin', () => c.beginTransaction())
                return result
              }
            }
            if (name === 'commit') {
              return async () => {
                if (inserted > 0) p.add('handlers', performance.now() - inserted)
                try {
                  return await p.time('commit', () => c.commit())
                } finally {
                  p.open--
                  p.add('transaction', performance.now() - began)
                }
              }
            }
            if (name === 'rollback') {
              return async () => {
                p.open--
                return p.time('rollback', () => c.rollback())
              }
            }
            if (name === 'query' || name === 'execute') {
              return async (text: string, args?: unknown[]) => {
                const isInbox = typeof text === 'string' && text.includes('_inbox')
                if (isInbox) p.rows.push((args?.length ?? 0) / 6)
                const result = await p.time(isInbox ? 'insert' : 'query', () =>
                  name === 'query' ? c.query(text, args) : c.execute(text, args as never),
                )
                if (isInbox) inserted = performance.now()
                return result
              }
            }
            const value = Reflect.get(c, name, c)
            return typeof value === 'function' ? value.bind(c) : value
          },
        })
      }
    },
  })
}

const url = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
const topic = uniqueName('ke-bench-phases')
const schema = uniqueName('ke_bench_phases').replaceAll('-', '_')
const pool = mysql.createPool({ uri: url, connectionLimit: partitions + 2 })
let current = new Phases()
const wrapped = wrapPool(pool, () => current)
const events = defineTopic<Event>({ name: topic, key: (event) => String(event.id) })
const outbox = createMysqlOutbox({ topics: { events }, schema, kafka })
try {
  await createTopic(brokers, topic, partitions)
  await pool.query(`CREATE DATABASE \`${schema}\``)
  await outbox.migrateInbox(url)
  const pad = 'x'.repeat(256 - 30)
  const messages = []
  for (let id = 0; id < total; id++) messages.push({ key: String(id), value: JSON.stringify({ id, pad }) })
  await produceRaw(brokers, topic, messages)
  const library = mysqlInbox.insertMany
  const forms = (values.variants as string).split(',')
  for (let run = 0; run < reps * forms.length; run++) {
    const rep = Math.floor(run / forms.length)
    const form = (rep % 2 === 0 ? forms : [...forms].reverse())[run % forms.length] as string
    if (form !== 'bare') mysqlInbox.insertMany = form === 'text' ? insertManyValues : library
    await pool.query(`TRUNCATE TABLE \`${schema}\`.outbox_inbox`)
    current = new Phases()
    let began: number | undefined
    const lag = monitorEventLoopDelay({ resolution: 1 })
    lag.enable()
    let cpu: NodeJS.CpuUsage | undefined
    const handler = async () => {
      began ??= performance.now()
      cpu ??= process.cpuUsage()
    }
    const consumer =
      form === 'bare'
        ? consume(events, {
            logger: false,
            maxWaitMs: 100,
            maxInFlight,
            kafka,
            groupId: uniqueName('phases-bare'),
            handler,
          })
        : outbox.consume(events, {
            logger: false,
            maxWaitMs: 100,
            maxInFlight,
            groupId: uniqueName('phases'),
            db: wrapped,
            batchSize,
            handler,
          })
    while (consumer.counts.handled < total) await new Promise((resolve) => setTimeout(resolve, 5))
    const seconds = (performance.now() - (began ?? 0)) / 1000
    lag.disable()
    const used = process.cpuUsage(cpu)
    const mysqld = await import('node:child_process').then((cp) =>
      cp.execSync('ps -C mariadbd,mysqld -o times= || true').toString().trim(),
    )
    console.log(
      `node CPU ${(((used.user + used.system) / 1000 / (seconds * 1000)) * 100).toFixed(0)}% of one core over the run ; mysqld cumulative CPU s: ${mysqld}`,
    )
    await consumer.close()
    const p = current
    console.log(
      `event loop delay: mean ${(lag.mean / 1e6).toFixed(2)} ms, p90 ${(lag.percentile(90) / 1e6).toFixed(2)} ms, max ${(lag.max / 1e6).toFixed(2)} ms`,
    )
    const rows = [...p.rows].sort((a, b) => a - b)
    const q = (f: number) => rows[Math.min(rows.length - 1, Math.floor(f * rows.length))]
    console.log(
      `rep ${rep + 1} ${form}: ${Math.round(total / seconds)} msg/s, ${seconds.toFixed(2)} s, ${rows.length} batches, rows/batch p10 ${q(0.1)} median ${q(0.5)} p90 ${q(0.9)} max ${q(1)}; transactions open at once: max ${p.maxOpen}, mean at begin ${(p.openSamples.reduce((a, b) => a + b, 0) / Math.max(1, p.openSamples.length)).toFixed(2)}`,
    )
    for (const [name, { ms, n }] of p.sums) {
      console.log(
        `  ${name.padEnd(14)} n ${String(n).padStart(5)}  mean ${(ms / n).toFixed(2).padStart(7)} ms  sum ${ms.toFixed(0).padStart(6)} ms`,
      )
    }
  }
} finally {
  await pool.query(`DROP DATABASE IF EXISTS \`${schema}\``).catch(() => {})
  await pool.end()
  await deleteTopic(brokers, topic).catch(() => {})
}
