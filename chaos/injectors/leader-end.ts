/** The exclusive leader's PostgreSQL session ended: a standby must take over. */
import { leaderBackendPid, terminateBackend } from '../faults.ts'
import { leaderOf, waitUntil } from '../relays.ts'
import { log, type PhaseState, relayApp, schema, state, TARGET_TIMEOUT_MS } from '../state.ts'
import { newFault } from './record.ts'

export async function injectLeaderEnd(phase: PhaseState): Promise<void> {
  await waitUntil(() => leaderOf(phase) !== undefined, TARGET_TIMEOUT_MS)
  const leader = leaderOf(phase)
  const backend = await leaderBackendPid(state.admin, schema, relayApp)
  if (backend === undefined) {
    log(`${phase.plan.mode}: no leader session found, leader fault skipped`)
    return
  }
  const at = Date.now()
  const ended = await terminateBackend(state.admin, backend, relayApp)
  const fault = newFault(
    phase,
    'pg-terminate-leader',
    at,
    `leader's session (backend ${backend}${leader ? `, relay #${leader.n}` : ''}) ${ended ? 'terminated' : 'already gone'}`,
  )
  fault.takeoverMs = null
  log(`${phase.plan.mode}: ${fault.kind}: ${fault.detail}`)
}
