/** pg_terminate_backend on every relay session of the run (what a database restart does to them). */
import { terminateRelaySessions } from '../faults.ts'
import { living, waitUntil } from '../relays.ts'
import { log, type PhaseState, relayApp, state, TARGET_TIMEOUT_MS } from '../state.ts'
import { newFault } from './record.ts'

export async function injectPgTerminate(phase: PhaseState): Promise<void> {
  // Right after a kill the only relay may still be restarting: wait for a session to end.
  await waitUntil(() => living(phase).length > 0, TARGET_TIMEOUT_MS)
  const at = Date.now()
  const ended = await terminateRelaySessions(state.admin, relayApp)
  const fault = newFault(
    phase,
    'pg-terminate-relays',
    at,
    `pg_terminate_backend on all ${ended.length} relay sessions (application_name ${relayApp})`,
  )
  if (phase.plan.mode === 'exclusive') fault.takeoverMs = null
  log(`${phase.plan.mode}: ${fault.kind}: ${fault.detail}`)
}
