/**
 * Ends every database session of the run's relays (what a database restart does to them):
 * pg_terminate_backend on PostgreSQL, KILL CONNECTION on MariaDB.
 */
import { living, waitUntil } from '../relays.ts'
import { log, type PhaseState, state, TARGET_TIMEOUT_MS } from '../state.ts'
import { newFault } from './record.ts'

export async function injectPgTerminate(phase: PhaseState): Promise<void> {
  // Right after a kill the only relay may still be restarting: wait for a session to end.
  await waitUntil(() => living(phase).length > 0, TARGET_TIMEOUT_MS)
  if (!state.db.canEndSessions) {
    log(`${phase.plan.mode}: relay sessions cannot be told apart on this server: session fault skipped`)
    return
  }
  const at = Date.now()
  const { ended, how } = await state.db.endRelaySessions()
  const fault = newFault(phase, 'pg-terminate-relays', at, `${how} on all ${ended.length} relay sessions`)
  if (phase.plan.mode === 'exclusive') fault.takeoverMs = null
  log(`${phase.plan.mode}: ${fault.kind}: ${fault.detail}`)
}
