// Commit-to-acknowledged latency under an open-loop offered load.
//
// Transactions are scheduled at fixed times (i / rate) over a fixed window and spread over a few
// connections; a connection that falls behind starts the next one at once, and nothing is started
// after the window ends, so the offered load is the schedule and the achieved rate (committed /
// window) is reported next to it: below the offered rate, the writers (PostgreSQL commits) were
// the limit, not the relay.
// Each transaction inserts an order row and produces one message; its commit time is taken when
// COMMIT returns. The relay records, per message, when Kafka acknowledged the batch holding it
// (AckRecordingTransport). Latency = ack - commit, both wall-clock in ms.
import pg from 'pg'
import type { RelayEvent } from '../../src/index.ts'
import type { BenchContext } from './context.ts'
import type { Resources } from './env.ts'
import { AckRecordingTransport, warmTransport } from './kafka.ts'
import { type StageBreakdown, stageBreakdown } from './latency-stages.ts'
import { peerStorage, setupPeer } from './peer.ts'
import { type Distribution, distribution, sleep, wallNow } from './stats.ts'
import type { WorkerResult } from './worker.ts'
import { Worker } from './workers.ts'
import { benchMessage, benchOutbox } from './workload.ts'

export type RelayPlacement =
  /** Our relay alone in a child process (as a separate relay service would run). */
  | 'child'
  /** Our relay in the writers' process: `outbox.transaction()` wakes it right after COMMIT. */
  | 'inprocess'
  /** pg-transactional-outbox's polling listener in a child process. */
  | 'peer'

export interface LatencyOptions {
  label: string
  rate: number
  durationMs: number
  connections: number
  placement: RelayPlacement
  relayOptions?: Record<string, unknown>
  outboxOptions?: Record<string, unknown>
  /** How long to wait after the load for the last acknowledgements (default COMPLETION_TIMEOUT_MS). */
  completionTimeoutMs?: number
  /** Child placement: split each message's latency into stages (see latency-stages.ts). */
  stages?: boolean
  /** Child placement: the worker.ts to run the relay with (default this tree's). */
  workerModule?: string
}

export interface LatencyRun {
  label: string
  offeredRate: number
  achievedRate: number
  committed: number
  acknowledged: number
  missing: number
  /** Latest a transaction started after its scheduled time, ms (> a few ms: writers could not keep up). */
  maxScheduleLagMs: number
  latency: Distribution
  relayCpuPercent: number | undefined
  roundTripsPerMessage: number | undefined
  errors: string[]
  /** With `stages`: where the time went (undefined when the relay's record could not be joined). */
  stages?: StageBreakdown
}

/** How long to wait, after the load ends, for the last messages to be acknowledged. */
export const COMPLETION_TIMEOUT_MS = 30_000

export async function measureLatency(
  ctx: BenchContext,
  res: Resources,
  options: LatencyOptions,
): Promise<LatencyRun> {
  const schema = res.schema('lat')
  const topic = await res.topic('lat')
  const prefix = `l${options.rate}`
  const outbox = benchOutbox(schema, topic, ctx.brokers, options.outboxOptions)
  const pool = new pg.Pool({
    connectionString: ctx.databaseUrl,
    max: options.connections,
    application_name: 'k-entity-bench-writers',
  })
  pool.on('error', () => {})
  let worker: Worker | undefined
  let inProcess: { relay: ReturnType<typeof outbox.relay>; acks: AckRecordingTransport } | undefined
  let delivered = 0
  const errors: string[] = []
  try {
    await withPool(pool, async (client) => {
      if (options.placement === 'peer') {
        await setupPeer(client as unknown as pg.Client, schema)
      } else {
        await outbox.migrate(client)
      }
      await client.query(
        `CREATE TABLE "${schema}".orders (id bigint PRIMARY KEY, customer text NOT NULL, amount integer NOT NULL)`,
      )
    })
    // Warm the writers' connections.
    await Promise.all(
      Array.from({ length: options.connections }, () => withPool(pool, (c) => c.query('SELECT 1'))),
    )

    if (options.placement === 'inprocess') {
      const acks = new AckRecordingTransport(await warmTransport(ctx.brokers, ctx.warmupTopic, topic))
      const relay = outbox.relay({
        ...options.relayOptions,
        connection: ctx.databaseUrl,
        kafka: acks,
        onEvent: (event: RelayEvent) => {
          if (event.type === 'delivered') delivered += event.count
          else if (event.type === 'error' && errors.length < 20)
            errors.push(`${event.stage}: ${String(event.error)}`)
        },
      })
      inProcess = { relay, acks }
      await relay.start()
    } else {
      worker = new Worker(
        options.placement === 'peer'
          ? {
              kind: 'peer',
              brokers: ctx.brokers,
              databaseUrl: ctx.databaseUrl,
              schema,
              topic,
              warmupTopic: ctx.warmupTopic,
              recordAcks: true,
              progress: true,
            }
          : {
              kind: 'relay',
              brokers: ctx.brokers,
              databaseUrl: ctx.databaseUrl,
              schema,
              topic,
              warmupTopic: ctx.warmupTopic,
              relay: options.relayOptions ?? {},
              recordAcks: true,
              stages: options.stages === true,
              progress: true,
            },
        options.workerModule,
      )
      worker.onProgress((count) => {
        delivered = count
      })
      await worker.ready
      worker.go()
      // Let the relay connect (and LISTEN) before the load starts.
      await sleep(300)
    }

    const store = options.placement === 'peer' ? peerStorage(schema) : undefined
    const transaction = async (i: number) => {
      const message = benchMessage(prefix, i)
      const insert = (client: pg.PoolClient) =>
        client.query(`INSERT INTO "${schema}".orders (id, customer, amount) VALUES ($1, $2, $3)`, [
          i,
          message.key,
          i % 1000,
        ])
      if (store) {
        await withPool(pool, async (client) => {
          await client.query('BEGIN')
          await insert(client)
          await store(message, client as unknown as pg.Client)
          await client.query('COMMIT')
        })
      } else {
        await outbox.transaction(pool, async (client, topics) => {
          await insert(client)
          await topics.bench.produce(message)
        })
      }
    }

    const total = Math.round((options.rate * options.durationMs) / 1000)
    const commits = new Map<string, number>()
    let next = 0
    let maxLag = 0
    const t0 = wallNow() + 50
    let lastCommit = t0
    const end = t0 + options.durationMs
    const writer = async () => {
      for (;;) {
        // Open loop with a fixed window: what the writers could not start within it is not
        // offered late (the achieved rate tells how much of the schedule ran).
        if (wallNow() > end) return
        const i = next++
        if (i >= total) return
        const due = t0 + (i * 1000) / options.rate
        const wait = due - wallNow()
        if (wait >= 1) await sleep(wait)
        maxLag = Math.max(maxLag, wallNow() - due)
        await transaction(i)
        lastCommit = wallNow()
        commits.set(`${prefix}-${i}`, lastCommit)
      }
    }
    await Promise.all(Array.from({ length: options.connections }, writer))
    const achievedRate = (commits.size / (Math.max(lastCommit, end) - t0)) * 1000

    const deadline = Date.now() + (options.completionTimeoutMs ?? COMPLETION_TIMEOUT_MS)
    while (delivered < commits.size && Date.now() < deadline) await sleep(20)

    let acks: Map<string, number>
    let result: WorkerResult | undefined
    if (inProcess) {
      await inProcess.relay.stop()
      acks = inProcess.acks.acks
    } else if (worker) {
      worker.stop()
      result = await worker.result
      await worker.exit()
      acks = new Map(result.acks ?? [])
      errors.push(...result.errors)
    } else {
      throw new Error('unreachable')
    }

    const latencies: number[] = []
    let missing = 0
    for (const [id, committedAt] of commits) {
      const ackedAt = acks.get(id)
      if (ackedAt === undefined) {
        // Never acknowledged within the wait: counts as infinitely late, so percentiles stay honest.
        missing++
        latencies.push(Number.POSITIVE_INFINITY)
      } else latencies.push(ackedAt - committedAt)
    }
    const seconds = result ? (Math.max(result.endedAt, lastCommit) - result.startedAt) / 1000 : undefined
    return {
      label: options.label,
      offeredRate: options.rate,
      achievedRate,
      committed: commits.size,
      acknowledged: latencies.length - missing,
      missing,
      maxScheduleLagMs: maxLag,
      latency: distribution(latencies),
      relayCpuPercent:
        result && seconds ? ((result.cpuUserS + result.cpuSystemS) / seconds) * 100 : undefined,
      roundTripsPerMessage: result ? result.roundTrips / Math.max(1, commits.size) : undefined,
      errors,
      ...(result?.stages ? { stages: stageBreakdown(commits, result.stages) } : {}),
    }
  } finally {
    worker?.kill()
    await inProcess?.relay.stop().catch(() => {})
    await pool.end().catch(() => {})
  }
}

async function withPool<R>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<R>): Promise<R> {
  const client = await pool.connect()
  try {
    return await fn(client)
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    throw error
  } finally {
    client.release()
  }
}
