/**
 * Turns what a dialect read for `status()` into an `OutboxStatus`. Every read is bounded by the
 * count cap, so the dialects only gather: the oldest `cap + 1` pending rows grouped by topic (the
 * primary key's order, so the sample's per-topic oldest ages are the real ones), the rows waiting
 * for a retry (read through the retry index, also capped), the dead letters likewise, and an
 * estimate of the table's size for when the sample overflows the cap.
 */
import { describe, invalidArgument } from '../core/errors.ts'
import type { OutboxStatus, RelayNodeStatus, StatusOptions, TopicStatus } from './types.ts'

export const DEFAULT_COUNT_CAP = 100_000
/** Above this a "capped" count is itself a scan of a large part of the table. */
const MAX_COUNT_CAP = 10_000_000

/** One topic's share of a capped sample. */
export interface SampledTopic {
  topic: string
  count: number
  /** Age of the topic's oldest row in the sample, in ms (pending rows only). */
  oldestMs?: number
}

/** A capped read of one table: its rows (at most cap + 1) grouped by topic. */
export interface CappedSample {
  topics: SampledTopic[]
  /**
   * The table's size when the sample overflowed (the planner's estimate, bounded by the id range),
   * read only then; undefined when the sample was complete.
   */
  estimate?: number
}

export interface RawStatus {
  at: Date
  cap: number
  oldestPendingMs: number
  pending: CappedSample
  /** Pending rows waiting for their retry time, by topic (capped, never scaled). */
  retrying: SampledTopic[]
  dead: CappedSample
  relays: RelayNodeStatus[]
}

export function checkStatusOptions(options: unknown): { countCap: number } {
  if (options === undefined) return { countCap: DEFAULT_COUNT_CAP }
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(
      `status(options): options must be an object like { countCap: 100000 }, got ${describe(options)}`,
    )
  }
  const { countCap } = options as StatusOptions
  if (countCap === undefined) return { countCap: DEFAULT_COUNT_CAP }
  if (!Number.isInteger(countCap) || countCap < 1 || countCap > MAX_COUNT_CAP) {
    throw invalidArgument(
      `status option 'countCap' must be an integer from 1 to ${MAX_COUNT_CAP}, got ${describe(countCap)}; counts above it come from the planner's estimate`,
    )
  }
  return { countCap }
}

function total(topics: readonly SampledTopic[]): number {
  return topics.reduce((sum, topic) => sum + topic.count, 0)
}

/** Each topic's count, scaled to the estimate when the sample overflowed the cap. */
function scaled(
  sample: CappedSample,
  cap: number,
): { total: number; exact: boolean; byTopic: Map<string, number> } {
  const sampled = total(sample.topics)
  const byTopic = new Map<string, number>()
  if (sampled <= cap || sample.estimate === undefined) {
    for (const topic of sample.topics) byTopic.set(topic.topic, topic.count)
    return { total: sampled, exact: true, byTopic }
  }
  const estimate = Math.max(Math.round(sample.estimate), sampled)
  const factor = estimate / sampled
  for (const topic of sample.topics) byTopic.set(topic.topic, Math.round(topic.count * factor))
  return { total: estimate, exact: false, byTopic }
}

export function buildStatus(raw: RawStatus): OutboxStatus {
  const pending = scaled(raw.pending, raw.cap)
  const dead = scaled(raw.dead, raw.cap)
  const retrying = new Map(raw.retrying.map((topic) => [topic.topic, topic.count]))
  const oldest = new Map(raw.pending.topics.map((topic) => [topic.topic, topic.oldestMs ?? 0]))
  const names = new Set([...pending.byTopic.keys(), ...retrying.keys(), ...dead.byTopic.keys()])
  const topics: TopicStatus[] = [...names].sort().map((topic) => {
    const waiting = retrying.get(topic) ?? 0
    // A capped sample can miss retrying rows of a topic beyond it: never fewer pending than retrying.
    const topicPending = Math.max(pending.byTopic.get(topic) ?? 0, waiting)
    return {
      topic,
      pending: topicPending,
      ready: topicPending - waiting,
      retrying: waiting,
      deadLetters: dead.byTopic.get(topic) ?? 0,
      oldestPendingMs: Math.max(0, oldest.get(topic) ?? 0),
    }
  })
  const retryingTotal = total(raw.retrying)
  const pendingTotal = Math.max(pending.total, retryingTotal)
  return {
    at: raw.at,
    pending: pendingTotal,
    ready: pendingTotal - retryingTotal,
    retrying: retryingTotal,
    deadLetters: dead.total,
    oldestPendingMs: Math.max(0, raw.oldestPendingMs),
    exact: pending.exact && dead.exact && retryingTotal <= raw.cap,
    topics,
    relays: raw.relays,
  }
}

/** The size estimate a dialect read, kept within what the sample and the id range prove. */
export function boundedEstimate(
  planner: number | undefined,
  sampled: number,
  idRange: number | undefined,
): number {
  let estimate =
    planner !== undefined && Number.isFinite(planner) && planner > 0 ? planner : (idRange ?? sampled)
  if (idRange !== undefined && Number.isFinite(idRange)) estimate = Math.min(estimate, idRange)
  return Math.max(estimate, sampled)
}
