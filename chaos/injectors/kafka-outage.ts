/** The run's Kafka broker stopped for PROFILE.outageMs and started again on the same ports and data. */
import { kafkaOutage } from '../faults.ts'
import { log, type PhaseState, PROFILE, state } from '../state.ts'
import { backlog, newFault } from './record.ts'

export async function injectOutage(phase: PhaseState): Promise<void> {
  if (!state.broker) return
  const planned = Date.now()
  state.outageWindow = { from: planned, to: Number.POSITIVE_INFINITY }
  log(`${phase.plan.mode}: kafka-outage: stopping the broker for ${PROFILE.outageMs / 1000} s`)
  const outage = kafkaOutage(state.broker, PROFILE.outageMs)
  state.outageInProgress = outage.then(
    () => {},
    () => {},
  )
  const times = await outage.finally(() => {
    state.outageInProgress = undefined
  })
  state.outages.push({ from: times.downAt, to: times.upAt })
  // Sends that were already failing keep failing for a moment after the broker is back.
  state.outageWindow = { from: planned, to: times.upAt + 15_000 }
  // The database may be restarting right now too.
  const waiting = await backlog()
  const fault = newFault(
    phase,
    'kafka-outage',
    times.downAt,
    `broker stopped in ${times.stoppedAt - times.downAt} ms, unreachable ${((times.upAt - times.stoppedAt) / 1000).toFixed(1)} s (${PROFILE.outageMs / 1000} s + restart ${((times.upAt - times.stoppedAt - PROFILE.outageMs) / 1000).toFixed(1)} s); ${waiting} messages waiting when it was back`,
  )
  // Recovery counts from the moment Kafka answers again.
  state.faultTimes.set(fault, { at: times.upAt })
  log(`${phase.plan.mode}: kafka-outage: ${fault.detail}`)
}
