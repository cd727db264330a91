/** One phase of the run: its relays started, its planned faults injected on time, its relays stopped. */

import { injectBrokerKill } from './injectors/broker-kill.ts'
import { injectConsumerKill } from './injectors/consumer-kill.ts'
import { injectDbProxy } from './injectors/db-proxy.ts'
import { injectOutage } from './injectors/kafka-outage.ts'
import { injectKafkaProxy } from './injectors/kafka-proxy.ts'
import { injectKill } from './injectors/kill.ts'
import { injectLeaderEnd } from './injectors/leader-end.ts'
import { injectPgTerminate } from './injectors/pg-terminate.ts'
import { injectPoison } from './injectors/poison.ts'
import { newFault } from './injectors/record.ts'
import { startRelays, stopRelays } from './relays.ts'
import { sleep } from './shared.ts'
import { CLOCK_SKEW_MS, clockSkew, log, type PhaseState, state } from './state.ts'

/** How long the phase goes on at least after a restart had the server back (producers reconnect, relays deliver). */
const RESTART_TAIL_MS = 5_000
/** How long relays keep working after the phase's last fault healed, before the phase may end. */
const SETTLE_MS = 3000

export async function runPhase(phase: PhaseState, next: PhaseState | undefined): Promise<void> {
  const { plan } = phase
  await startRelays(phase)
  const start = Date.now()
  log(`phase ${plan.mode}: ${plan.relays} relay(s) running; ${plan.seconds} s of faults`)
  if (clockSkew && !state.faults.some((f) => f.kind === 'clock-skew')) {
    const fault = newFault(
      phase,
      'clock-skew',
      start,
      `every relay process runs with its Date ${CLOCK_SKEW_MS / 60_000} min ahead (odd relay numbers) or behind (even), for the whole run`,
    )
    log(`${plan.mode}: clock-skew: ${fault.detail}`)
  }
  let outage: Promise<void> | undefined
  /** When the last database restart of the phase had the server back. */
  let restartedAt: number | undefined
  // A network fault lasts PROXY_FAULT_MS: it runs beside the plan, which keeps its moments.
  const networkFaults: Promise<void>[] = []
  for (const step of phase.steps) {
    const wait = start + step.at - Date.now()
    if (wait > 0) await sleep(wait)
    try {
      if (step.kind === 'outage')
        outage = state.cluster
          ? injectBrokerKill(phase).catch((error: Error) => {
              state.injectionErrors.push(`broker-kill: ${error.message}`)
              log(`!! ${plan.mode}: broker-kill failed: ${error.message}`)
            })
          : injectOutage(phase)
      else if (step.kind === 'kill' && step.kill)
        await injectKill(phase, step.kill.variant, step.kill.wantLeader)
      else if (step.kind === 'pg-terminate') await injectPgTerminate(phase)
      else if (step.kind === 'leader-end') await injectLeaderEnd(phase)
      else if (step.kind === 'poison') await injectPoison(phase)
      else if (step.kind === 'consumer-kill') await injectConsumerKill(phase)
      else if (step.kind === 'pg-restart') {
        await state.db.restart(phase, step.downMs ?? 3000)
        restartedAt = Date.now()
      } else if (step.kind === 'db-proxy')
        networkFaults.push(
          injectDbProxy(phase).catch((error: Error) => {
            state.injectionErrors.push(`db-proxy: ${error.message}`)
            log(`!! ${plan.mode}: db-proxy failed: ${error.message}`)
          }),
        )
      else if (step.kind === 'kafka-proxy')
        networkFaults.push(
          injectKafkaProxy(phase).catch((error: Error) => {
            state.injectionErrors.push(`kafka-proxy: ${error.message}`)
            log(`!! ${plan.mode}: kafka-proxy failed: ${error.message}`)
          }),
        )
    } catch (error) {
      // E.g. a runner query meeting a restart: the fault is missing, which 'fault coverage' reports.
      state.injectionErrors.push(`${step.kind}: ${(error as Error).message}`)
      log(`!! ${plan.mode}: ${step.kind} failed: ${(error as Error).message}`)
    }
  }
  const rest = start + plan.seconds * 1000 - Date.now()
  if (rest > 0) await sleep(rest)
  // A restart drawn late in the phase can end after it (down 2-5 s, then recovery): without new
  // commits before the producers stop, 'every fault recovered' would see no delivery after it.
  if (restartedAt !== undefined) {
    const tail = restartedAt + RESTART_TAIL_MS - Date.now()
    if (tail > 0) await sleep(tail)
  }
  await Promise.all(networkFaults)
  if (outage) {
    await outage
    // Let the relays work against the restored broker before the phase ends.
    await sleep(3000)
  }
  // A fault that healed at the phase's very end (a PostgreSQL restart planned 2 s before it, whose
  // server came back 5 s later) left the relays no time to deliver again before the producers
  // stopped and the outbox was found empty: 'every fault recovered' then failed for want of work,
  // not of a relay (seed 1972873448 --kafka-proxy). Producers and relays run on for SETTLE_MS.
  const healed = state.faults
    .filter((f) => f.phase === plan.mode)
    .map((f) => state.faultTimes.get(f)?.at ?? 0)
  const settle = Math.max(0, ...healed) + SETTLE_MS - Date.now()
  if (settle > 0) await sleep(settle)
  if (next) await stopRelays(phase)
}
