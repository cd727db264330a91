/** The record of each injected fault (what the report lists), and the runtime draws of the injectors. */
import type { FaultKind, FaultRecord } from '../report.ts'
import { outbox, type PhaseState, runtimeRandom, state, t0 } from '../state.ts'

export function newFault(
  phase: PhaseState,
  kind: FaultKind,
  at: number,
  detail: string,
  killedPid?: number,
): FaultRecord {
  const fault: FaultRecord = {
    n: ++state.faultCounter,
    phase: phase.plan.mode,
    kind,
    atS: Math.round((at - t0) / 100) / 10,
    detail,
    resumeMs: null,
  }
  state.faults.push(fault)
  state.faultTimes.set(fault, { at, ...(killedPid === undefined ? {} : { killedPid }) })
  return fault
}

export function pick<T>(list: readonly T[]): T | undefined {
  return list.length === 0 ? undefined : list[Math.floor(runtimeRandom() * list.length)]
}

/** Messages waiting in the outbox now, for a fault's detail ('?' if the database is restarting too). */
export function backlog(): Promise<string> {
  return outbox
    .stats(state.db.runnerConnection())
    .then((stats) => String(stats.pending))
    .catch(() => '?')
}
