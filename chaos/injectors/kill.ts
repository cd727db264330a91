/**
 * kill -9 of a relay process, optionally at a hold point: after Kafka acknowledged a batch and
 * before its delete, with a claimed batch before sending it, or on its 'sending' report.
 */

import { command, killRelay, leaderOf, living, onRelay, scheduleRespawn, waitUntil } from '../relays.ts'
import type { FaultKind } from '../report.ts'
import {
  type KillVariant,
  log,
  type PhaseState,
  type RelayProc,
  state,
  TARGET_TIMEOUT_MS,
  TRIGGER_TIMEOUT_MS,
} from '../state.ts'
import { newFault, pick } from './record.ts'

export async function killTarget(phase: PhaseState, wantLeader: boolean): Promise<RelayProc | undefined> {
  const exclusive = phase.plan.mode === 'exclusive'
  await waitUntil(
    () => living(phase).length > 0 && (!exclusive || leaderOf(phase) !== undefined),
    TARGET_TIMEOUT_MS,
  )
  if (!exclusive) return pick(living(phase))
  const leader = leaderOf(phase)
  if (wantLeader) return leader
  return pick(living(phase).filter((p) => p !== leader)) ?? leader
}

export async function injectKill(
  phase: PhaseState,
  variant: KillVariant,
  wantLeader: boolean,
): Promise<void> {
  if (variant !== 'kill' && state.outageInProgress) {
    // Nothing is acknowledged (or even sent) while Kafka is down: wait for it before arming.
    await state.outageInProgress
  }
  const target = await killTarget(phase, wantLeader)
  if (!target) {
    log(`${phase.plan.mode}: no live relay to kill, skipped`)
    return
  }
  const wasLeader = phase.plan.mode === 'exclusive' && target.leader
  const role = phase.plan.mode === 'exclusive' ? (wasLeader ? 'leader ' : 'standby ') : ''
  let kind: FaultKind = variant
  let detail = `${role}relay #${target.n}`
  let killed: ReturnType<typeof killRelay> | undefined
  const kill = () => {
    killed = killRelay(target)
  }
  if (variant === 'kill-after-ack' || variant === 'kill-before-send') {
    const at = variant === 'kill-after-ack' ? 'after-ack' : 'before-send'
    command(target, { type: 'hold', at })
    const trigger = variant === 'kill-after-ack' ? 'sent' : 'sending'
    const hit = await onRelay(
      (p, r) => p === target && r.type === trigger && r.held,
      TRIGGER_TIMEOUT_MS,
      kill,
    )
    if (hit?.r.type === 'sent')
      detail += `: killed after Kafka acked a batch of ${hit.r.count}, before its delete`
    else if (hit?.r.type === 'sending')
      detail += `: killed holding a claimed batch of ${hit.r.ids.length}, before sending it`
    else {
      command(target, { type: 'disarm' })
      kind = 'kill'
      detail += `: no ${at} hold point reached within ${TRIGGER_TIMEOUT_MS} ms, killed anyway`
    }
  } else if (variant === 'kill-mid-send') {
    const hit = await onRelay((p, r) => p === target && r.type === 'sending', TRIGGER_TIMEOUT_MS, kill)
    if (hit?.r.type === 'sending') detail += `: killed on its 'sending' report (batch of ${hit.r.ids.length})`
    else {
      kind = 'kill'
      detail += `: no send within ${TRIGGER_TIMEOUT_MS} ms, killed anyway`
    }
  }
  if (!killed) {
    if (!target.alive || target.killedByUs) {
      log(`${phase.plan.mode}: relay #${target.n} already gone, kill skipped`)
      return
    }
    kill()
  }
  const { unfinished, acked, at } = killed as ReturnType<typeof killRelay>
  const fault = newFault(phase, kind, at, `${detail}; ${unfinished.length} messages unfinished`, target.pid)
  fault.inFlight = unfinished.length
  if (wasLeader) fault.takeoverMs = null
  if (unfinished.length > 0) {
    fault.reclaimMs = null
    state.reclaimWatchers.push({ ids: new Set(unfinished), pid: target.pid, fault, since: at })
  }
  if (kind === 'kill-after-ack') state.ackedAtKill.push({ fault, ids: acked })
  log(`${phase.plan.mode}: ${kind}: ${fault.detail}`)
  scheduleRespawn(phase)
}
