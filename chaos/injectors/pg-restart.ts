/** A crash and restart of the run's own PostgreSQL server while producers are in their COMMIT. */
import { living, waitUntil } from '../relays.ts'
import { sleep } from '../shared.ts'
import {
  COMMIT_HOLD_MS,
  log,
  type PhaseState,
  producerApp,
  RESTART_VARIANTS,
  type RestartRecord,
  type RestartVariant,
  schema,
  state,
  TARGET_TIMEOUT_MS,
} from '../state.ts'
import { newFault } from './record.ts'

/**
 * Crashes the run's own PostgreSQL (`pg_ctl stop -m immediate`: no checkpoint, WAL recovery on
 * the next start) while producers are in their COMMIT, and starts it again after the planned time.
 */
export async function injectPgRestart(phase: PhaseState, downMs: number): Promise<void> {
  const server = state.ownPg
  if (!server) return
  const variant = RESTART_VARIANTS[state.restartCounter++ % RESTART_VARIANTS.length] as RestartVariant
  await waitUntil(() => living(phase).length > 0, TARGET_TIMEOUT_MS)
  const from = Date.now()
  const window = { from, to: Number.POSITIVE_INFINITY }
  let heldCommits: number | null = null
  let behindHeld = 0
  try {
    if (variant === 'after-flush') await server.holdCommitsAfterFlush(state.admin)
    if (variant === 'before-commit-record') {
      // Self-expiring, in case the crash comes late: commits after the restart are not held.
      await state.admin.query(
        `UPDATE "${schema}".chaos_commit_gate SET until = clock_timestamp() + interval '4 seconds'`,
      )
    }
    if (variant !== 'plain') {
      await sleep(COMMIT_HOLD_MS)
      // Held in the COMMIT itself, or behind one (a NOTIFYing commit waits for the commit
      // before it to finish: PostgreSQL serializes them on a lock).
      const { rows } = await state.admin.query(
        `SELECT count(*) FILTER (WHERE wait_event IN ('SyncRep', 'PgSleep'))::int AS held,
                count(*) FILTER (WHERE wait_event_type = 'Lock')::int AS behind
         FROM pg_stat_activity WHERE application_name = $1`,
        [producerApp],
      )
      heldCommits = rows[0]?.held ?? 0
      behindHeld = rows[0]?.behind ?? 0
    }
  } catch (error) {
    log(`!! ${phase.plan.mode}: preparing the restart: ${(error as Error).message}`)
  }
  const at = Date.now()
  await server.crash()
  const stoppedAt = Date.now()
  server.restoreConfig()
  await sleep(downMs)
  const startAt = Date.now()
  await server.start()
  const upAt = Date.now()
  // Producers see the broken connections and reconnect within a few seconds of the server's return.
  window.to = upAt + 10_000
  await state.admin
    .query(`UPDATE "${schema}".chaos_commit_gate SET until = NULL`)
    .catch((error: Error) => log(`!! clearing the commit gate: ${error.message}`))
  const record: RestartRecord = {
    fault: newFault(
      phase,
      'pg-restart',
      at,
      `pg_ctl stop -m immediate (${variant}${heldCommits === null ? '' : `, ${heldCommits} producer COMMITs held, ${behindHeld} producer sessions waiting on a lock behind them`}) in ${stoppedAt - at} ms; down ${((startAt - stoppedAt) / 1000).toFixed(1)} s; pg_ctl start -w (WAL recovery) ${upAt - startAt} ms`,
    ),
    variant,
    heldCommits,
    window,
    crashMs: stoppedAt - at,
    downMs: startAt - stoppedAt,
    startMs: upAt - startAt,
  }
  state.restarts.push(record)
  // Recovery counts from the moment the server accepts connections again.
  state.faultTimes.set(record.fault, { at: upAt })
  if (phase.plan.mode === 'exclusive') record.fault.takeoverMs = null
  log(`${phase.plan.mode}: pg-restart: ${record.fault.detail}`)
}
