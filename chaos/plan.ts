/**
 * The run's plan, drawn from the seed alone: which phase has the Kafka outage, where the poison
 * goes, and for each phase the moments and kinds of its faults (kill variants included).
 */
import {
  consumerOn,
  dbProxy,
  type KillVariant,
  kafkaCluster,
  kafkaProxy,
  type PhasePlan,
  PROFILE,
  random,
  type ScheduledKind,
  type Step,
  sharedDb,
  state,
} from './state.ts'

/** The first kills of a run cover each variant; later ones are drawn. */
export function drawKill(): { variant: KillVariant; wantLeader: boolean } {
  const k = state.killCounter++
  const first: KillVariant[] = ['kill-after-ack', 'kill-mid-send', 'kill-before-send', 'kill']
  const roll = random()
  const variant: KillVariant =
    first[k] ??
    (roll < 0.35
      ? 'kill-after-ack'
      : roll < 0.55
        ? 'kill-before-send'
        : roll < 0.75
          ? 'kill-mid-send'
          : 'kill')
  // In exclusive mode only the leader sends; a plain kill hits a standby half of the time.
  const wantLeader = variant !== 'kill' || random() < 0.5
  return { variant, wantLeader }
}

export function planPhases(): PhasePlan[] {
  const phases: PhasePlan[] = PROFILE.phases.map((p) => ({
    ...p,
    pgRestart: sharedDb ? 0 : p.pgRestart,
    poisons: 0,
    outage: false,
    proxyFaults: dbProxy ? 1 : 0,
    kafkaProxyFaults: kafkaProxy ? 1 : 0,
    consumerKills: consumerOn ? PROFILE.consumerKills : 0,
  }))
  ;(phases[Math.floor(random() * phases.length)] as PhasePlan).outage = true
  // On the cluster the "outage" is one broker's kill -9 and restart: one per phase, each on another broker.
  if (kafkaCluster) for (const phase of phases) phase.outage = true
  const order = shuffle([0, 1, 2])
  for (let i = 0; i < PROFILE.poisons; i++) (phases[order[i % 3] as number] as PhasePlan).poisons++
  return phases
}

export function shuffle<T>(list: T[]): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[list[i], list[j]] = [list[j] as T, list[i] as T]
  }
  return list
}

export function schedule(plan: PhasePlan): Step[] {
  const kinds = shuffle<ScheduledKind>([
    ...Array<ScheduledKind>(plan.kills).fill('kill'),
    ...Array<ScheduledKind>(plan.pgTerminate).fill('pg-terminate'),
    ...Array<ScheduledKind>(plan.leaderEnd).fill('leader-end'),
    ...Array<ScheduledKind>(plan.poisons).fill('poison'),
    ...Array<ScheduledKind>(plan.pgRestart).fill('pg-restart'),
    ...Array<ScheduledKind>(plan.proxyFaults).fill('db-proxy'),
    ...Array<ScheduledKind>(plan.kafkaProxyFaults).fill('kafka-proxy'),
    ...Array<ScheduledKind>(plan.consumerKills).fill('consumer-kill'),
  ])
  const outageAt = plan.outage ? Math.round(plan.seconds * 1000 * (0.15 + 0.2 * random())) : undefined
  // Kafka is away for the outage plus its restart (taken as at most 15 s here): no send to hold
  // on or interrupt, so kills planned then are plain kills (the kill-during-an-outage case).
  const duringOutage = (at: number) =>
    outageAt !== undefined && at >= outageAt && at <= outageAt + PROFILE.outageMs + 15_000
  // One random moment per equal slot of the phase (2 s margins): random, yet spread out.
  const slot = (plan.seconds * 1000 - 4000) / Math.max(1, kinds.length)
  const steps: Step[] = kinds.map((kind, i) => {
    const at = Math.round(2000 + slot * i + random() * slot * 0.8)
    if (kind === 'pg-restart') return { at, kind, downMs: 2000 + Math.round(random() * 3000) }
    if (kind !== 'kill') return { at, kind }
    const kill = duringOutage(at) ? { variant: 'kill' as const, wantLeader: random() < 0.5 } : drawKill()
    return { at, kind, kill }
  })
  if (outageAt !== undefined) steps.push({ at: outageAt, kind: 'outage' })
  return steps.sort((a, b) => a.at - b.at)
}
