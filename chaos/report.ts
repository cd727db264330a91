/**
 * The chaos run's result: what it wrote to `chaos/results/*.json` and the tables it prints.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { EffectsResult } from './effects.ts'

export type FaultKind =
  | 'kill-after-ack'
  | 'kill-before-send'
  | 'kill-mid-send'
  | 'kill'
  | 'kafka-outage'
  | 'pg-terminate-relays'
  | 'pg-terminate-leader'
  | 'pg-restart'
  /** --db mariadb: mariadbd SIGKILLed while producers COMMIT, then started again. */
  | 'db-restart'
  | 'poison-too-large'
  | 'poison-missing-topic'
  | 'poison-internal-topic'
  | 'kafka-broker-kill'
  | 'db-proxy-blackhole'
  | 'db-proxy-delay'
  | 'db-proxy-drop'
  | 'kafka-proxy-blackhole'
  | 'kafka-proxy-delay'
  | 'kafka-proxy-drop'
  | 'clock-skew'
  /** --consumer: kill -9 of a consumer process (outbox.consume() with the inbox), then its next life. */
  | 'consumer-kill'

export interface FaultRecord {
  n: number
  phase: string
  kind: FaultKind
  /** Seconds since the run's first phase started. */
  atS: number
  detail: string
  /**
   * From the fault until a relay (for a kill: another process than the killed one) delivered a
   * batch, i.e. Kafka acknowledged it and its rows were deleted; for a Kafka outage, from Kafka
   * answering again until it acknowledged a relay's send.
   */
  resumeMs: number | null
  /** Kills with a batch in flight: until another relay process sent one of that batch's messages again. */
  reclaimMs?: number | null
  /** Exclusive mode: until a relay reported it leads. */
  takeoverMs?: number | null
  /** Poison: from its commit until it was dead-lettered. For a pg-restart, resume counts from the server's return. */
  deadLetteredMs?: number | null
  /** Messages in the killed relay's unfinished batch (sent or being sent). */
  inFlight?: number
  /** It happened while Kafka was down (its recovery waits for Kafka). */
  duringOutage?: boolean
}

export interface TopicResult {
  topic: string
  expected: number
  observed: number
  delivered: number
  lost: number
  phantom: number
  poisonDelivered: number
  unknown: number
  duplicates: number
  outOfOrder: number
  keysOnSeveralPartitions: number
  samples: Record<string, string[]>
}

export interface Invariant {
  name: string
  ok: boolean
  detail: string
}

export interface ChaosSummary {
  ok: boolean
  seed: number
  short: boolean
  /** short, medium or full (absent in results written before --medium existed: short tells). */
  profile?: string
  /** Set when relays misbehaved on purpose (`--sabotage`): such a run must fail. */
  sabotage?: string
  command: string
  runId: string
  startedAt: string
  durationS: number
  machine: { cpus: number; loadAverageStart: number[]; loadAverageEnd: number[]; node: string }
  phases: { mode: string; relays: number; seconds: number; kills: number; spawned: number }[]
  produced: {
    committed: number
    rolledBack: number
    poison: number
    poisonByKind: Record<string, number>
    /** Transactions whose connection broke before their COMMIT was sent (not committed). */
    failedBeforeCommit: { transactions: number; messages: number }
    /** Messages in transactions whose COMMIT got no answer (see unknownOutcome). */
    uncertain: number
    businessRows: number
  }
  database: string
  pgRestarts: {
    n: number
    phase: string
    variant: string
    heldCommits: number | null
    crashMs: number
    downMs: number
    startMs: number
    resumeMs: number | null
    takeoverMs: number | null
  }[]
  /** Each transaction that lost its connection in COMMIT, and how the business rows resolved it. */
  unknownOutcome: {
    producer: number
    firstId: string
    messages: number
    restart: number | null
    outcome: 'committed' | 'not committed' | 'partial'
    businessRows: number
    delivered: number
    poison?: string
    deadLettered?: boolean
    ok: boolean
    error: string
  }[]
  topics: TopicResult[]
  duplicates: {
    count: number
    /** Messages in batches that were sent (or being sent) but not deleted: kills, failed sends, failed deletes. */
    bound: number
    /** Duplicates beyond what their id's own in-flight count explains (must be 0). */
    unexplained: number
    byCause: Record<string, number>
    boundByCause: Record<string, number>
  }
  deadLetters: { expectedIds: string[]; actualIds: string[]; errors: string[] }
  relays: {
    deliveredReported: number
    sendFailures: number
    /** Sends Kafka took only part of (the transport's per-record answer). */
    partialSends: number
    /** Messages held without using an attempt (Kafka's own trouble on their partition). */
    heldMessages: number
    errorsByStage: Record<string, number>
    unexpectedExits: number
    /** Relay processes restarted after a kill: fork() until the relay runs (median and max). */
    coldStart: string
  }
  faults: FaultRecord[]
  /** --consumer: the consumers' effects checked against the producers' ledger. */
  effects?: EffectsResult
  drainMs: number | null
  invariants: Invariant[]
}

const pad = (text: string | number, width: number) => String(text).padEnd(width)
const padLeft = (text: string | number, width: number) => String(text).padStart(width)
const ms = (value: number | null | undefined) => (value === null || value === undefined ? '-' : `${value}`)

export function formatSummary(s: ChaosSummary): string {
  const lines: string[] = []
  lines.push('')
  lines.push(
    `chaos ${s.profile ?? (s.short ? 'short' : 'full')} run ${s.runId}, seed ${s.seed}: ${s.ok ? 'PASSED' : 'FAILED'} in ${s.durationS} s`,
  )
  lines.push(
    `phases: ${s.phases.map((p) => `${p.mode} (${p.relays} relay${p.relays > 1 ? 's' : ''}, ${p.seconds} s, ${p.kills} kills, ${p.spawned} processes)`).join('; ')}`,
  )
  lines.push(
    `produced: ${s.produced.committed} committed, ${s.produced.rolledBack} rolled back, ${s.produced.poison} poison (${Object.entries(
      s.produced.poisonByKind,
    )
      .map(([kind, n]) => `${kind} ${n}`)
      .join(
        ', ',
      )}), ${s.produced.uncertain} in unknown-outcome transactions, ${s.produced.failedBeforeCommit.messages} in ${s.produced.failedBeforeCommit.transactions} transactions failed before COMMIT; business rows ${s.produced.businessRows}`,
  )
  lines.push(`database: ${s.database}`)
  lines.push('')
  lines.push(
    `${pad('topic', 34)}${padLeft('expected', 9)}${padLeft('read', 8)}${padLeft('lost', 6)}${padLeft('phantom', 9)}${padLeft('dup', 6)}${padLeft('order', 7)}${padLeft('unknown', 9)}`,
  )
  for (const t of s.topics) {
    lines.push(
      `${pad(t.topic, 34)}${padLeft(t.expected, 9)}${padLeft(t.observed, 8)}${padLeft(t.lost, 6)}${padLeft(t.phantom, 9)}${padLeft(t.duplicates, 6)}${padLeft(t.outOfOrder, 7)}${padLeft(t.unknown, 9)}`,
    )
  }
  lines.push('')
  lines.push(
    `duplicates ${s.duplicates.count} <= bound ${s.duplicates.bound} (messages in unfinished batches); unexplained ${s.duplicates.unexplained}`,
  )
  lines.push(
    `  by cause: ${
      Object.entries(s.duplicates.byCause)
        .map(([cause, n]) => `${cause} ${n}`)
        .join(', ') || 'none'
    }`,
  )
  lines.push(
    `  bound by cause: ${
      Object.entries(s.duplicates.boundByCause)
        .map(([cause, n]) => `${cause} ${n}`)
        .join(', ') || 'none'
    }`,
  )
  lines.push(
    `dead letters: ${s.deadLetters.actualIds.length} (poison committed: ${s.deadLetters.expectedIds.length})`,
  )
  lines.push(
    `relays: ${s.relays.deliveredReported} rows deleted as reported, ${s.relays.sendFailures} failed sends, ${s.relays.partialSends} partly taken, ${s.relays.heldMessages} messages held by partition errors, errors ${JSON.stringify(s.relays.errorsByStage)}, unexpected exits ${s.relays.unexpectedExits}`,
  )
  lines.push(`relay process restart (fork until running): ${s.relays.coldStart}`)
  lines.push(`drain after producers stopped: ${ms(s.drainMs)} ms`)
  if (s.effects) {
    const e = s.effects
    lines.push(
      `consumers (outbox.consume() + inbox): ${e.consumers} processes, ${e.lives} lives, ${e.kills} kill -9; effects ${e.rows} for ${e.expected} committed: lost ${e.lost}, phantom ${e.phantom}, duplicated ${e.duplicated}, out of order ${e.outOfOrder}, applied from a later copy ${e.fromLaterCopy}; skipped by the inbox >= ${e.skippedByInboxAtLeast} (Kafka extra copies ${e.kafkaDuplicates}); dead letters ${e.deadLetterRows}; reconnects >= ${e.reconnectsAtLeast}; complete ${ms(e.catchUpMs)} ms after the drain`,
    )
  }
  lines.push('')
  lines.push(
    `${padLeft('#', 3)}  ${pad('phase', 11)}${padLeft('at s', 7)}  ${pad('fault', 20)}${padLeft('resume ms', 10)}${padLeft('reclaim', 9)}${padLeft('takeover', 9)}${padLeft('dead-l.', 9)}  detail`,
  )
  for (const f of s.faults) {
    lines.push(
      `${padLeft(f.n, 3)}  ${pad(f.phase, 11)}${padLeft(f.atS.toFixed(1), 7)}  ${pad(f.kind, 20)}${padLeft(ms(f.resumeMs), 10)}${padLeft(ms(f.reclaimMs), 9)}${padLeft(ms(f.takeoverMs), 9)}${padLeft(ms(f.deadLetteredMs), 9)}  ${f.detail}`,
    )
  }
  if (s.pgRestarts.length > 0) {
    lines.push('')
    lines.push(
      `${padLeft('#', 3)}  ${pad('database restart', 22)}${padLeft('held', 6)}${padLeft('crash ms', 10)}${padLeft('down ms', 9)}${padLeft('start ms', 10)}${padLeft('resume ms', 11)}${padLeft('unknown', 9)}${padLeft('commit', 8)}${padLeft('not', 5)}`,
    )
    for (const [i, r] of s.pgRestarts.entries()) {
      const mine = s.unknownOutcome.filter((u) => u.restart === i + 1)
      lines.push(
        `${padLeft(r.n, 3)}  ${pad(`${r.phase} ${r.variant}`, 22)}${padLeft(r.heldCommits ?? '-', 6)}${padLeft(r.crashMs, 10)}${padLeft(r.downMs, 9)}${padLeft(r.startMs, 10)}${padLeft(ms(r.resumeMs), 11)}${padLeft(mine.length, 9)}${padLeft(mine.filter((u) => u.outcome === 'committed').length, 8)}${padLeft(mine.filter((u) => u.outcome === 'not committed').length, 5)}`,
      )
    }
  }
  if (s.unknownOutcome.length > 0) {
    lines.push('')
    lines.push('unknown-outcome transactions (connection lost in COMMIT), resolved from the business rows:')
    for (const u of s.unknownOutcome) {
      lines.push(
        `  ${u.ok ? 'ok  ' : 'FAIL'} ${pad(u.firstId, 14)} restart ${u.restart ?? '-'}: ${u.outcome}, ${u.businessRows}/${u.messages} business rows, ${u.delivered} delivered${u.poison ? `, poison ${u.poison} ${u.deadLettered ? 'dead-lettered' : 'not dead-lettered'}` : ''}`,
      )
    }
  }
  lines.push('')
  for (const i of s.invariants) lines.push(`${i.ok ? 'ok  ' : 'FAIL'}  ${i.name}: ${i.detail}`)
  return lines.join('\n')
}

export function writeSummary(dir: string, s: ChaosSummary): string {
  mkdirSync(dir, { recursive: true })
  const stamp = s.startedAt.replaceAll(':', '').replace(/\..*/, '')
  const kind = `${s.sabotage ? `sabotage-${s.sabotage}-` : ''}${s.profile ?? (s.short ? 'short' : 'full')}`
  const file = join(dir, `chaos-${kind}-${stamp}-seed${s.seed}.json`)
  const text = `${JSON.stringify(s, null, 2)}\n`
  writeFileSync(file, text)
  if (!s.sabotage) writeFileSync(join(dir, `latest-${kind}.json`), text)
  return file
}

/** Median and max of the non-null values, for the one-line recovery summary. */
export function spread(values: (number | null | undefined)[]): string {
  const present = values.filter((v): v is number => typeof v === 'number').sort((a, b) => a - b)
  if (present.length === 0) return '-'
  return `median ${present[Math.floor(present.length / 2)]} ms, max ${present.at(-1)} ms (n=${present.length})`
}
