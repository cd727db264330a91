/**
 * kill -9 of a consumer process (--consumer) at the planned moment, whatever it is doing: in a
 * handler's transaction, between its database commit and the offset commit, or rebalancing. The
 * next life of that consumer starts 0.5-3 s later; the inbox must skip what Kafka delivers again.
 */
import { killConsumer, livingConsumers } from '../consumers.ts'
import { waitUntil } from '../relays.ts'
import { log, type PhaseState, TARGET_TIMEOUT_MS } from '../state.ts'
import { newFault, pick } from './record.ts'

export async function injectConsumerKill(phase: PhaseState): Promise<void> {
  // A life that has not loaded yet has nothing to interrupt: wait for one that runs.
  await waitUntil(() => livingConsumers().some((c) => c.loaded), TARGET_TIMEOUT_MS)
  const target = pick(livingConsumers().filter((c) => c.loaded))
  if (!target) {
    log(`${phase.plan.mode}: no running consumer to kill, skipped`)
    return
  }
  const at = Date.now()
  const { handled, duplicates } = target.last
  killConsumer(target)
  const fault = newFault(
    phase,
    'consumer-kill',
    at,
    `consumer #${target.index} life ${target.life} (${target.index === 0 ? 'static member' : 'new member per life'}; ${handled} handled, ${duplicates} skipped by the inbox as last reported, ${Math.round((at - target.spawnedAt) / 1000)} s old)`,
    target.pid,
  )
  log(`${phase.plan.mode}: consumer-kill: ${fault.detail}`)
}
