/** The exclusive leader's database session ended: a standby must take over. */
import { leaderOf, waitUntil } from '../relays.ts'
import { log, type PhaseState, state, TARGET_TIMEOUT_MS } from '../state.ts'
import { newFault } from './record.ts'

export async function injectLeaderEnd(phase: PhaseState): Promise<void> {
  await waitUntil(() => leaderOf(phase) !== undefined, TARGET_TIMEOUT_MS)
  const leader = leaderOf(phase)
  if (!state.db.canEndSessions) {
    log(`${phase.plan.mode}: relay sessions cannot be told apart on this server: leader fault skipped`)
    return
  }
  const backend = await state.db.leaderSession()
  if (backend === undefined) {
    log(`${phase.plan.mode}: no leader session found, leader fault skipped`)
    return
  }
  const at = Date.now()
  const ended = await state.db.endSession(backend)
  const fault = newFault(
    phase,
    'pg-terminate-leader',
    at,
    `leader's session (backend ${backend}${leader ? `, relay #${leader.n}` : ''}) ${ended ? 'terminated' : 'already gone'}`,
  )
  fault.takeoverMs = null
  log(`${phase.plan.mode}: ${fault.kind}: ${fault.detail}`)
}
