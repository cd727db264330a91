/**
 * The runner's side of the producer processes (chaos/producer.ts): forking them, and reading back
 * what each recorded as committed, rolled back, poison, failed or of unknown outcome.
 */
import { fork } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { TrackedMessage } from '../src/testing/index.ts'
import type { PoisonKind, ProducerConfig, ProducerLine, ProducerReport, TopicAccessor } from './shared.ts'
import {
  dbKind,
  log,
  PRODUCER_SCRIPT,
  PRODUCER_SETTINGS,
  type ProducerProc,
  producerApp,
  schema,
  seed,
  state,
  tempDir,
  topicNames,
} from './state.ts'

export function spawnProducer(index: number): ProducerProc {
  const outFile = join(tempDir, `producer-${index}.jsonl`)
  const config: ProducerConfig = {
    index,
    db: dbKind,
    databaseUrl: state.db.producerUrl(),
    applicationName: producerApp,
    schema,
    topics: topicNames,
    outFile,
    ...PRODUCER_SETTINGS,
    seed: (seed + 7919 * (index + 1)) >>> 0,
    waitForGo: true,
  }
  const child = fork(PRODUCER_SCRIPT, [], {
    env: { ...process.env, CHAOS_PRODUCER: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  let markLoaded: () => void = () => {}
  const loaded = new Promise<void>((resolve) => {
    markLoaded = resolve
  })
  child.on('message', (r: ProducerReport) => {
    if (r.type === 'loaded') markLoaded()
    if (r.type === 'poisoned') state.bus.emit('poisoned', r, Date.now())
    if (r.type === 'failed') log(`!! producer ${index} failed: ${r.message}`)
  })
  const proc = { index, child, outFile, loaded, exited }
  state.producers.push(proc)
  return proc
}

export type Tuple = [string, TopicAccessor, string, number]

/** A transaction that failed without being rolled back on purpose, as its producer recorded it. */
export interface FailedTransaction {
  producer: number
  messages: TrackedMessage[]
  topics: TopicAccessor[]
  poison: { id: string; topic: TopicAccessor } | undefined
  at: number
  error: string
}

export interface Produced {
  committed: Map<TopicAccessor, TrackedMessage[]>
  rolledBack: Map<TopicAccessor, TrackedMessage[]>
  /** Committed poison, by the topic accessor it was written to (orders, missing, internal). */
  poison: Map<TopicAccessor, TrackedMessage[]>
  /** Failed before the COMMIT went out: nothing of them may exist. */
  failed: FailedTransaction[]
  /** Failed once the COMMIT was on its way: outcome unknown, resolved from the business rows. */
  unknown: FailedTransaction[]
}

export const poisonKindOf = (topic: TopicAccessor): PoisonKind =>
  topic === 'missing' ? 'missing-topic' : topic === 'internal' ? 'internal-topic' : 'too-large'

export function readProduced(): Produced {
  const byTopic = () =>
    new Map<TopicAccessor, TrackedMessage[]>([
      ['orders', []],
      ['payments', []],
      ['missing', []],
      ['internal', []],
    ])
  const produced: Produced = {
    committed: byTopic(),
    rolledBack: byTopic(),
    poison: byTopic(),
    failed: [],
    unknown: [],
  }
  const failedTransaction = (producer: number, tuples: Tuple[], line: ProducerLine): FailedTransaction => ({
    producer,
    messages: tuples.map(([id, , key, seq]) => ({ id, key, seq })),
    topics: tuples.map(([, topic]) => topic),
    poison: line.up ? { id: line.up[0], topic: line.up[1] } : undefined,
    at: line.t ?? 0,
    error: line.e ?? '',
  })
  for (const producer of state.producers) {
    if (!existsSync(producer.outFile)) continue
    for (const text of readFileSync(producer.outFile, 'utf8').split('\n')) {
      if (!text) continue
      const line = JSON.parse(text) as ProducerLine
      for (const [field, target] of [
        ['c', produced.committed],
        ['r', produced.rolledBack],
        ['p', produced.poison],
      ] as const) {
        for (const [id, topic, key, seq] of line[field] ?? []) target.get(topic)?.push({ id, key, seq })
      }
      if (line.f) produced.failed.push(failedTransaction(producer.index, line.f, line))
      if (line.u) produced.unknown.push(failedTransaction(producer.index, line.u, line))
    }
  }
  return produced
}
