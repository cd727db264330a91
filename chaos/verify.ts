/**
 * After the run: every delivered topic read back and checked against what the producers
 * committed, unknown-outcome transactions resolved from the business rows, duplicates explained
 * by the batches the faults interrupted, dead letters matched with the poison, recovery times;
 * the invariants and the summary (printed, and JSON in chaos/results/).
 */
import os from 'node:os'
import { DEFAULT_RETRY_POLICY } from '../src/core/retry.ts'
import {
  checkDelivery,
  formatReport,
  observedFromConsumed,
  readTopic,
  readTracking,
  type TrackedMessage,
} from '../src/testing/index.ts'
import { checkEffects, type EffectsResult, effectInvariants } from './effects.ts'
import { poisonKindOf, readProduced } from './producers.ts'
import {
  type ChaosSummary,
  type FaultKind,
  formatSummary,
  type Invariant,
  spread,
  type TopicResult,
  writeSummary,
} from './report.ts'
import { topicExists } from './setup.ts'
import { INTERNAL_TOPIC, POISON_KINDS, type PoisonKind, type TopicAccessor } from './shared.ts'
import {
  clockSkew,
  consumerOn,
  kafkaBrokers,
  loadAverageStart,
  outbox,
  type PhaseState,
  PROFILE,
  profileName,
  RESULTS_DIR,
  runId,
  sabotage,
  seed,
  short,
  startedAt,
  state,
  t0,
  topicNames,
} from './state.ts'

/** Checks the finished run; returns the exit code (0 only if every invariant holds). */
export async function verify(run: {
  phases: PhaseState[]
  codes: (number | null)[]
  drainMs: number | null
  command: string
  /** --consumer: from the drain until every effect was applied (null: never). */
  effectsMs: number | null
}): Promise<number> {
  const { phases, codes, drainMs, command } = run

  // The business rows decide what an unknown-outcome transaction did: all of them there means it
  // committed, so its messages are expected; none means it did not, so none may be delivered.
  const produced = readProduced()
  const businessIds = await state.db.businessIds()
  const notCommitted = new Map<TopicAccessor, TrackedMessage[]>()
  const addTo = (target: Map<TopicAccessor, TrackedMessage[]>, topic: TopicAccessor, m: TrackedMessage) => {
    const list = target.get(topic)
    if (list) list.push(m)
    else target.set(topic, [m])
  }
  const resolved = produced.unknown.map((tx) => {
    const present = tx.messages.filter((m) => businessIds.has(m.id)).length
    const outcome: 'committed' | 'not committed' | 'partial' =
      present === tx.messages.length ? 'committed' : present === 0 ? 'not committed' : 'partial'
    for (const [i, m] of tx.messages.entries()) {
      const topic = tx.topics[i] as TopicAccessor
      if (outcome === 'committed')
        addTo(m.id === tx.poison?.id ? produced.poison : produced.committed, topic, m)
      else addTo(notCommitted, topic, m)
    }
    const restart = state.restarts.findIndex((r) => tx.at >= r.window.from && tx.at <= r.window.to)
    return { tx, outcome, present, restart: restart < 0 ? null : restart + 1 }
  })
  for (const tx of produced.failed)
    for (const [i, m] of tx.messages.entries()) addTo(notCommitted, tx.topics[i] as TopicAccessor, m)

  // Read every delivered topic back and check it.
  const poisonIds = new Set([...produced.poison.values()].flat().map((m) => m.id))
  const poisonKinds = new Map<string, PoisonKind>()
  for (const [topic, list] of produced.poison)
    for (const m of list) poisonKinds.set(m.id, poisonKindOf(topic))
  const copies = new Map<string, number>()
  /** Where each message's first copy sits in Kafka, for the end-to-end check (--consumer). */
  const firstCopies = new Map<string, { partition: number; offset: number }>()
  const topics: TopicResult[] = await Promise.all(
    (['orders', 'payments'] as const).map(async (accessor) => {
      const topic = topicNames[accessor]
      const expected = produced.committed.get(accessor) ?? []
      const consumed = await readTopic({
        brokers: kafkaBrokers(),
        topic,
        expectedCount: expected.length,
        idleTimeoutMs: 10_000,
        timeoutMs: 300_000,
      })
      const observed = observedFromConsumed(consumed)
      for (const m of observed) {
        copies.set(m.id, (copies.get(m.id) ?? 0) + 1)
        const first = firstCopies.get(m.id)
        if (first === undefined || Number(m.offset) < first.offset)
          firstCopies.set(m.id, { partition: m.partition, offset: Number(m.offset) })
      }
      const report = checkDelivery({
        expected,
        forbidden: [
          ...(produced.rolledBack.get(accessor) ?? []),
          ...(notCommitted.get(accessor) ?? []),
          ...(produced.poison.get(accessor) ?? []),
        ],
        observed,
      })
      const poisonDelivered = new Set(observed.filter((m) => poisonIds.has(m.id)).map((m) => m.id)).size
      if (!report.ok) console.log(`${topic}:\n${formatReport(report)}`)
      return {
        topic,
        expected: report.expected,
        observed: report.observed,
        delivered: report.delivered,
        lost: report.lost,
        phantom: report.phantom - poisonDelivered,
        poisonDelivered,
        unknown: report.unknown,
        duplicates: report.duplicates,
        outOfOrder: report.outOfOrder,
        keysOnSeveralPartitions: report.keysOnSeveralPartitions,
        samples: { ...report.samples },
      }
    }),
  )
  const missingTopicCreated = await topicExists(kafkaBrokers(), topicNames.missing)

  // Duplicates: every extra copy must come from a batch of its own message that was not finished.
  let unexplained = 0
  const unexplainedSamples: string[] = []
  const byCause: Record<string, number> = {}
  for (const [id, n] of copies) {
    if (n < 2) continue
    const risk = state.atRisk.get(id)
    const extra = n - 1
    const explained = Math.min(extra, risk?.count ?? 0)
    for (let i = 0; i < explained; i++) {
      const cause = risk?.causes[i] ?? '?'
      byCause[cause] = (byCause[cause] ?? 0) + 1
    }
    if (extra > explained) {
      unexplained += extra - explained
      if (unexplainedSamples.length < 10) unexplainedSamples.push(id)
    }
  }
  const duplicates = topics.reduce((sum, t) => sum + t.duplicates, 0)
  const bound = Object.values(state.boundByCause).reduce((a, b) => a + b, 0)
  const effects: EffectsResult | undefined = consumerOn
    ? await checkEffects({
        committed: produced.committed,
        rolledBack: produced.rolledBack,
        notCommitted,
        poisonIds,
        kafkaDuplicates: duplicates,
        firstCopies,
        catchUpMs: run.effectsMs,
      })
    : undefined
  const notResent = state.ackedAtKill.flatMap((k) => k.ids.filter((id) => (copies.get(id) ?? 0) < 2))
  const ackedTotal = state.ackedAtKill.reduce((sum, k) => sum + k.ids.length, 0)

  const dead = await outbox.deadLetters(state.db.runnerConnection()).list({ limit: 10_000 })
  const deadById = new Map(dead.map((d) => [readTracking(d.headers)?.id ?? `untracked:${d.id}`, d]))
  const deadIds = [...deadById.keys()].sort()
  const expectedDead = [...poisonIds].sort()
  const deadErrors = dead.map((d) => d.errors.at(-1)?.error.slice(0, 200) ?? '')
  // What each poison kind must have been buried with (and where it was headed).
  const deadMismatches: string[] = []
  for (const [id, kind] of poisonKinds) {
    const letter = deadById.get(id)
    if (!letter) continue
    const error = letter.errors.at(-1)?.error ?? ''
    const ok =
      kind === 'too-large'
        ? letter.topic === topicNames.orders && /MESSAGE_TOO_LARGE|RECORD_LIST_TOO_LARGE/.test(error)
        : kind === 'missing-topic'
          ? letter.topic === topicNames.missing &&
            /does not exist/.test(error) &&
            letter.attempts === DEFAULT_RETRY_POLICY.maxAttempts
          : letter.topic === INTERNAL_TOPIC && /reserved/.test(error)
    if (!ok)
      deadMismatches.push(
        `${id} (${kind}: topic ${letter.topic}, ${letter.attempts} attempts, ${error.slice(0, 120)})`,
      )
  }
  const stats = await outbox.stats(state.db.runnerConnection())
  const outboxRowCount = await state.db.outboxRows()
  const committedIds = [...produced.committed.values()].flat().map((m) => m.id)
  const rolledBackIds = [...produced.rolledBack.values()].flat().map((m) => m.id)
  const missingBusiness = [...committedIds, ...poisonIds].filter((id) => !businessIds.has(id)).length
  const rolledBackBusiness = rolledBackIds.filter((id) => businessIds.has(id)).length
  const failedBusiness = produced.failed
    .flatMap((tx) => tx.messages)
    .filter((m) => businessIds.has(m.id)).length
  const committedCount = committedIds.length

  // Unknown outcomes: each transaction all there (business rows, messages delivered or, for its
  // poison, dead-lettered) or all absent.
  const unknownReport = resolved.map(({ tx, outcome, present, restart }) => {
    const healthy = tx.messages.filter((m) => m.id !== tx.poison?.id)
    const delivered = healthy.filter((m) => (copies.get(m.id) ?? 0) > 0).length
    const buried = tx.poison !== undefined && deadById.has(tx.poison.id)
    const ok =
      outcome === 'committed'
        ? delivered === healthy.length && (tx.poison === undefined || buried)
        : outcome === 'not committed' && delivered === 0 && !buried
    return {
      producer: tx.producer,
      firstId: tx.messages[0]?.id ?? '',
      messages: tx.messages.length,
      restart,
      outcome,
      businessRows: present,
      delivered,
      ...(tx.poison ? { poison: tx.poison.id, deadLettered: buried } : {}),
      ok,
      error: tx.error,
    }
  })
  const unknownCommitted = unknownReport.filter((u) => u.outcome === 'committed').length
  const unknownNotCommitted = unknownReport.filter((u) => u.outcome === 'not committed').length
  const unknownBad = unknownReport.filter((u) => !u.ok)
  const failedDelivered = produced.failed
    .flatMap((tx) => tx.messages)
    .filter((m) => (copies.get(m.id) ?? 0) > 0 || deadById.has(m.id)).length
  const inRestart = (at: number) => state.restarts.some((r) => at >= r.window.from && at <= r.window.to)
  const strayFailures = [...produced.failed, ...produced.unknown].filter((tx) => !inRestart(tx.at))

  // Recovery: from each fault until a relay (for a kill: another process) delivered again; for a
  // Kafka outage, from Kafka answering until it acknowledged a send again.
  for (const fault of state.faults) {
    const { at, killedPid } = state.faultTimes.get(fault) as { at: number; killedPid?: number }
    // A consumer kill has recovered once a consumer (another one, or the next life) handles again.
    const progress =
      fault.kind === 'kafka-outage'
        ? state.acks
        : fault.kind === 'consumer-kill'
          ? state.consumerProgress
          : state.deliveries
    const resumed = progress.find((d) => d.at >= at && d.pid !== killedPid)
    fault.resumeMs = resumed === undefined ? null : resumed.at - at
    if (fault.takeoverMs === null) {
      const takeover = state.leadershipTimes.find((l) => l.at >= at && l.pid !== killedPid)
      fault.takeoverMs = takeover === undefined ? null : takeover.at - at
    }
    const killed = state.relays.find((p) => p.pid === killedPid)
    if (killed?.afterKill.has('delivered'))
      fault.detail += ' (its batch was deleted before the signal landed)'
    else if (killed?.afterKill.has('sent'))
      fault.detail += ' (Kafka acked its batch before the signal landed)'
    if (fault.kind !== 'kafka-outage' && state.outages.some((o) => at >= o.from && at <= o.to)) {
      fault.duringOutage = true
      fault.detail += ' [during the Kafka outage]'
    }
  }
  for (const [i, restart] of state.restarts.entries()) {
    const mine = unknownReport.filter((u) => u.restart === i + 1)
    const failedHere = produced.failed.filter(
      (tx) => tx.at >= restart.window.from && tx.at <= restart.window.to,
    ).length
    restart.fault.detail += `; unknown outcome: ${mine.length} transactions (${mine.filter((u) => u.outcome === 'committed').length} committed, ${mine.filter((u) => u.outcome === 'not committed').length} not); ${failedHere} failed before COMMIT`
  }
  for (const poison of state.poisonCommits) {
    const buried = state.deadLetterEvents.find((d) => d.at >= poison.at && d.topic === poison.topic)
    poison.fault.deadLetteredMs = buried === undefined ? null : buried.at - poison.at
  }

  const totalKills = phases.reduce((sum, p) => sum + p.kills, 0)
  const kinds = new Set(state.faults.map((f) => f.kind))
  const requiredKinds: FaultKind[] = [
    'kill-after-ack',
    'kill-before-send',
    'kill-mid-send',
    ...(state.cluster ? (['kafka-broker-kill'] as const) : (['kafka-outage'] as const)),
    ...(state.db.canEndSessions ? (['pg-terminate-relays', 'pg-terminate-leader'] as const) : []),
    'poison-too-large',
    'poison-missing-topic',
    'poison-internal-topic',
    ...(state.db.owned ? [state.db.restartKind] : []),
    ...(state.dbProxy ? (['db-proxy-blackhole', 'db-proxy-delay', 'db-proxy-drop'] as const) : []),
    ...(state.kafkaProxies.length > 0
      ? (['kafka-proxy-blackhole', 'kafka-proxy-delay', 'kafka-proxy-drop'] as const)
      : []),
    ...(clockSkew ? (['clock-skew'] as const) : []),
    ...(consumerOn ? (['consumer-kill'] as const) : []),
  ]
  const sum = (field: keyof TopicResult) => topics.reduce((acc, t) => acc + (t[field] as number), 0)
  const invariants: Invariant[] = [
    {
      name: 'lost',
      ok: sum('lost') === 0,
      detail: `${sum('lost')} committed messages never delivered (must be 0)`,
    },
    {
      name: 'phantom',
      ok: sum('phantom') === 0,
      detail: `${sum('phantom')} rolled-back or not committed messages delivered (must be 0)`,
    },
    {
      name: 'order per key',
      ok: sum('outOfOrder') === 0 && sum('keysOnSeveralPartitions') === 0,
      detail: `${sum('outOfOrder')} messages read after a later message of their key, ${sum('keysOnSeveralPartitions')} keys on several partitions (must be 0)`,
    },
    {
      name: 'nothing foreign',
      ok: sum('unknown') === 0,
      detail: `${sum('unknown')} records that no producer wrote (must be 0)`,
    },
    {
      name: 'duplicates bounded',
      ok: duplicates <= bound && unexplained === 0,
      detail: `${duplicates} duplicates <= ${bound} messages in unfinished batches; ${unexplained} extra copies not covered by their own message's unfinished batches${unexplainedSamples.length ? ` (${unexplainedSamples.join(', ')})` : ''}`,
    },
    {
      name: 'after-ack kills re-sent',
      ok: notResent.length === 0,
      detail: `${ackedTotal} messages Kafka had acknowledged when their relay was killed before deleting them; ${notResent.length} of them not read twice (must be 0: proves the kill landed after the ack and the rows survived it)`,
    },
    {
      name: 'dead letters = poison',
      ok:
        JSON.stringify(deadIds) === JSON.stringify(expectedDead) &&
        deadMismatches.length === 0 &&
        sum('poisonDelivered') === 0,
      detail: `dead letters [${deadIds.join(', ')}], poison committed [${expectedDead.map((id) => `${id} ${poisonKinds.get(id)}`).join(', ')}], poison delivered ${sum('poisonDelivered')}; too large: MESSAGE_TOO_LARGE, missing topic: 'does not exist' after ${DEFAULT_RETRY_POLICY.maxAttempts} attempts (the default retry policy), __consumer_offsets: reserved name${deadMismatches.length ? `; WRONG: ${deadMismatches.join('; ')}` : ''}`,
    },
    {
      name: 'missing topic not created',
      ok: !missingTopicCreated,
      detail: `${topicNames.missing} ${missingTopicCreated ? 'EXISTS: a send created it' : 'does not exist on the broker (autoCreateTopics off)'}`,
    },
    {
      name: 'outbox drained',
      ok: drainMs !== null && stats.pending === 0 && outboxRowCount === 0,
      detail: `pending ${stats.pending}, rows ${outboxRowCount}, drained ${drainMs === null ? 'never' : `in ${drainMs} ms`} after producers stopped`,
    },
    {
      name: 'business rows = committed',
      ok:
        missingBusiness === 0 &&
        rolledBackBusiness === 0 &&
        failedBusiness === 0 &&
        businessIds.size === committedCount + poisonIds.size,
      detail: `${businessIds.size} rows for ${committedCount + poisonIds.size} committed messages (${unknownCommitted} unknown-outcome transactions resolved as committed included); ${missingBusiness} missing, ${rolledBackBusiness} from rolled-back transactions, ${failedBusiness} from transactions that failed before their COMMIT`,
    },
    {
      name: 'unknown outcomes all or nothing',
      ok: unknownBad.length === 0 && failedDelivered === 0,
      detail: `${unknownReport.length} transactions lost their connection in COMMIT: ${unknownCommitted} committed (business rows and every message delivered or its poison dead-lettered), ${unknownNotCommitted} not committed (no row, nothing delivered), ${unknownBad.length} neither${unknownBad.length ? ` (${unknownBad.map((u) => `${u.firstId}: ${u.businessRows}/${u.messages} rows, ${u.delivered} delivered`).join('; ')})` : ''}; ${produced.failed.length} transactions failed before their COMMIT, ${failedDelivered} of their messages delivered or dead-lettered (must be 0)`,
    },
    {
      name: 'no row deleted twice',
      ok: state.deliveredReported <= committedCount,
      detail: `relays reported ${state.deliveredReported} deletions for ${committedCount} committed messages (a kill can lose a report, never add one)`,
    },
    {
      name: 'every fault recovered',
      ok:
        state.faults.every((f) => f.resumeMs !== null) &&
        state.faults.every((f) => f.takeoverMs !== null) &&
        state.poisonCommits.every((p) => p.fault.deadLetteredMs !== null),
      detail: `deliveries resumed after ${state.faults.filter((f) => f.resumeMs !== null).length}/${state.faults.length} faults (${spread(state.faults.map((f) => f.resumeMs))}); a leader again after ${state.faults.filter((f) => f.takeoverMs !== undefined && f.takeoverMs !== null).length}/${state.faults.filter((f) => f.takeoverMs !== undefined).length}; poison dead-lettered ${state.poisonCommits.filter((p) => p.fault.deadLetteredMs !== null).length}/${state.poisonCommits.length}`,
    },
    {
      name: 'relays only died when killed',
      ok: state.unexpectedExits === 0,
      detail: `${state.unexpectedExits} relay processes exited on their own`,
    },
    {
      name: 'producers clean',
      ok: strayFailures.length === 0 && codes.every((c) => c === 0),
      detail: `${strayFailures.length} transactions failed outside a database restart${
        strayFailures.length
          ? ` (${strayFailures
              .slice(0, 3)
              .map((tx) => tx.error)
              .join('; ')})`
          : ''
      }; exit codes ${codes.join(', ')}`,
    },
    {
      name: 'fault coverage',
      ok:
        totalKills >= PROFILE.minKills &&
        requiredKinds.every((k) => kinds.has(k)) &&
        state.injectionErrors.length === 0,
      detail: `${totalKills} kills (>= ${PROFILE.minKills}); missing kinds: ${requiredKinds.filter((k) => !kinds.has(k)).join(', ') || 'none'}; ${state.injectionErrors.length} injections failed${state.injectionErrors.length ? ` (${state.injectionErrors.join('; ')})` : ''}`,
    },
  ]

  if (effects) invariants.push(...effectInvariants(effects))
  const ok = invariants.every((i) => i.ok)
  const summary: ChaosSummary = {
    ok,
    seed,
    short,
    profile: profileName,
    ...(sabotage ? { sabotage } : {}),
    command,
    runId,
    startedAt: startedAt.toISOString(),
    durationS: Math.round((Date.now() - t0) / 1000),
    machine: {
      cpus: os.cpus().length,
      loadAverageStart,
      loadAverageEnd: os.loadavg().map((l) => Math.round(l * 100) / 100),
      node: process.version,
    },
    phases: phases.map((p) => ({
      mode: p.plan.mode,
      relays: p.plan.relays,
      seconds: p.plan.seconds,
      kills: p.kills,
      spawned: p.spawned,
    })),
    produced: {
      committed: committedCount,
      rolledBack: rolledBackIds.length,
      poison: poisonIds.size,
      poisonByKind: Object.fromEntries(
        POISON_KINDS.map((kind) => [kind, [...poisonKinds.values()].filter((k) => k === kind).length]),
      ),
      failedBeforeCommit: {
        transactions: produced.failed.length,
        messages: produced.failed.reduce((n, tx) => n + tx.messages.length, 0),
      },
      uncertain: produced.unknown.reduce((n, tx) => n + tx.messages.length, 0),
      businessRows: businessIds.size,
    },
    database: state.db.describe(),
    pgRestarts: state.restarts.map((r) => ({
      n: r.fault.n,
      phase: r.fault.phase,
      variant: r.variant,
      heldCommits: r.heldCommits,
      crashMs: r.crashMs,
      downMs: r.downMs,
      startMs: r.startMs,
      resumeMs: r.fault.resumeMs,
      takeoverMs: r.fault.takeoverMs ?? null,
    })),
    unknownOutcome: unknownReport,
    topics,
    duplicates: { count: duplicates, bound, unexplained, byCause, boundByCause: state.boundByCause },
    deadLetters: { expectedIds: expectedDead, actualIds: deadIds, errors: deadErrors },
    relays: {
      deliveredReported: state.deliveredReported,
      sendFailures: state.sendFailures,
      partialSends: state.partialSends,
      heldMessages: state.heldMessages,
      errorsByStage: state.errorsByStage,
      unexpectedExits: state.unexpectedExits,
      coldStart: spread(state.coldStarts),
    },
    faults: state.faults,
    ...(effects ? { effects } : {}),
    drainMs,
    invariants,
  }
  console.log(formatSummary(summary))
  const file = writeSummary(RESULTS_DIR, summary)
  console.log(`\nresults: ${file}`)
  console.log(ok ? 'CHAOS OK' : 'CHAOS FAILED')
  return ok ? 0 : 1
}
