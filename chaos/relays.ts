/**
 * The relay processes of a run: forking them, reading their reports into the run's state (what
 * is in flight, acknowledged, delivered; what an interruption leaves at risk of a duplicate),
 * starting and stopping a phase's relays, and kill -9.
 */
import { fork } from 'node:child_process'
import { appendFileSync } from 'node:fs'
import type { RelayCommand, RelayConfig, RelayMode, RelayReport } from './shared.ts'
import { sleep } from './shared.ts'
import {
  addAtRisk,
  CLOCK_SKEW_MS,
  claimSlots,
  clockSkew,
  dbKind,
  HOLD_MS,
  log,
  MAX_MESSAGES_PER_POLL,
  type PhaseState,
  RELAY_SCRIPT,
  type RelayProc,
  relayApp,
  relayKafkaBrokers,
  runtimeRandom,
  SKEWED_CLOCK,
  sabotage,
  schema,
  state,
  t0,
  topicNames,
  traceFile,
} from './state.ts'

export function sendFailureCause(message: string): string {
  if (/MESSAGE_TOO_LARGE|RECORD_LIST_TOO_LARGE|does not exist|was not sent to Kafka/.test(message))
    return 'failed send (poison in batch)'
  const now = Date.now()
  if (state.outageWindow && now >= state.outageWindow.from && now <= state.outageWindow.to)
    return 'failed send (Kafka down)'
  return 'failed send (other)'
}

// ---------------------------------------------------------------------------------------------
// Relay processes

export function relayConfig(mode: RelayMode, waitForGo: boolean): RelayConfig {
  return {
    db: dbKind,
    databaseUrl: state.dbProxy ? viaProxy(state.db.relayUrl(), state.dbProxy.port) : state.db.relayUrl(),
    applicationName: relayApp,
    schema,
    topics: topicNames,
    brokers: relayKafkaBrokers(),
    mode,
    ...(mode === 'concurrent' && claimSlots !== undefined ? { claimSlots } : {}),
    maxMessagesPerPoll: MAX_MESSAGES_PER_POLL,
    holdMs: HOLD_MS,
    waitForGo,
    ...(sabotage ? { sabotage } : {}),
  }
}

/** The same database URL, on the proxy's port. */
function viaProxy(url: string, port: number): string {
  const parsed = new URL(url)
  parsed.port = String(port)
  return parsed.toString()
}

export function spawnRelay(phase: PhaseState, prepared: boolean): RelayProc {
  const n = ++state.relayCounter
  // --clock-skew: the whole process (relay, Kafka client, pg) sees the skewed Date.
  const skewMs = clockSkew ? (n % 2 === 1 ? CLOCK_SKEW_MS : -CLOCK_SKEW_MS) : 0
  const child = fork(RELAY_SCRIPT, [], {
    env: {
      ...process.env,
      CHAOS_RELAY: JSON.stringify(relayConfig(phase.plan.mode, prepared)),
      ...(skewMs === 0 ? {} : { CHAOS_CLOCK_SKEW_MS: String(skewMs) }),
    },
    ...(skewMs === 0 ? {} : { execArgv: [...process.execArgv, '--import', SKEWED_CLOCK] }),
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const proc: RelayProc = {
    n,
    pid: child.pid as number,
    child,
    phase,
    prepared,
    spawnedAt: Date.now(),
    loaded: false,
    started: false,
    alive: true,
    killedByUs: false,
    stopping: false,
    leader: false,
    inFlight: undefined,
    unconfirmed: [],
    afterKill: new Set(),
  }
  phase.spawned++
  phase.procs.push(proc)
  state.relays.push(proc)
  child.on('message', (message: RelayReport) => onRelayReport(proc, message, Date.now()))
  child.on('exit', (code, signal) => onRelayExit(proc, code, signal))
  return proc
}

/** Commands reach a child only once it listens, i.e. after it reported 'loaded'. */
export function command(proc: RelayProc, message: RelayCommand): void {
  if (proc.alive && proc.child.connected) proc.child.send(message)
}

export function onRelayReport(proc: RelayProc, r: RelayReport, at: number): void {
  if (traceFile) appendFileSync(traceFile, `${JSON.stringify({ t: at - t0, n: proc.n, ...r })}\n`)
  if (proc.killedByUs) proc.afterKill.add(r.type)
  switch (r.type) {
    case 'loaded':
      proc.loaded = true
      if (proc.stopping) command(proc, { type: 'stop' })
      else if (proc.prepared && proc.phase.active) command(proc, { type: 'go' })
      break
    case 'started':
      proc.started = true
      if (!proc.prepared) state.coldStarts.push(at - proc.spawnedAt)
      break
    case 'sending':
      // Reported just before a kill -9 but read after it: part of what the kill interrupted.
      if (proc.killedByUs) addAtRisk(r.ids, 'kill -9')
      else proc.inFlight = r.ids
      for (const watcher of state.reclaimWatchers) {
        if (watcher.fault.reclaimMs !== null || watcher.pid === proc.pid) continue
        if (r.ids.some((id) => watcher.ids.has(id))) watcher.fault.reclaimMs = at - watcher.since
      }
      break
    case 'sent':
      state.acks.push({ at, pid: proc.pid })
      if (proc.inFlight && !proc.killedByUs) proc.unconfirmed.push(proc.inFlight)
      proc.inFlight = undefined
      break
    case 'send-partial':
      state.partialSends++
      // Acknowledged messages behind a refused one of their key are sent again: all of it at risk.
      // The refused ones are not in Kafka: an after-ack kill must not expect them twice.
      if (proc.inFlight && !proc.killedByUs) {
        addAtRisk(proc.inFlight, 'partial send')
        const refused = new Set(r.failed)
        proc.inFlight = proc.inFlight.filter((id) => !refused.has(id))
      }
      break
    case 'send-failed':
      state.sendFailures++
      if (proc.inFlight && !proc.killedByUs) addAtRisk(proc.inFlight, sendFailureCause(r.message))
      proc.inFlight = undefined
      break
    case 'delivered':
      state.deliveredReported += r.count
      state.deliveries.push({ at, pid: proc.pid })
      // The oldest acknowledged batch only: a pipelined relay deletes batch N while N+1 is sent
      // (one query with the claim of N+2), so N+1 stays unconfirmed until its own delete returns.
      proc.unconfirmed.shift()
      break
    case 'message-failed':
      proc.unconfirmed = []
      if (r.deadLettered) state.deadLetterEvents.push({ at, topic: r.topic })
      break
    case 'held':
      state.heldMessages += r.count
      break
    case 'leadership':
      proc.leader = r.leader
      if (r.leader) state.leadershipTimes.push({ at, pid: proc.pid })
      break
    case 'error':
      state.errorsByStage[r.stage] = (state.errorsByStage[r.stage] ?? 0) + 1
      if (!proc.killedByUs) addAtRisk(proc.unconfirmed.flat(), `delete failed (${r.stage} error)`)
      proc.unconfirmed = []
      break
  }
  state.bus.emit('relay', proc, r, at)
}

export function onRelayExit(proc: RelayProc, code: number | null, signal: NodeJS.Signals | null): void {
  proc.alive = false
  proc.leader = false
  const leftover = [...(proc.inFlight ?? []), ...proc.unconfirmed.flat()]
  proc.inFlight = undefined
  proc.unconfirmed = []
  if (proc.killedByUs) return
  if (proc.stopping) {
    addAtRisk(leftover, 'graceful stop')
    return
  }
  state.unexpectedExits++
  addAtRisk(leftover, 'unexpected exit')
  log(`!! relay #${proc.n} (pid ${proc.pid}) exited on its own (code ${code}, signal ${signal})`)
  if (proc.phase.active && state.unexpectedExits <= 5) scheduleRespawn(proc.phase)
}

export function scheduleRespawn(phase: PhaseState): void {
  const delay = 300 + Math.floor(runtimeRandom() * 1200)
  setTimeout(() => {
    if (phase.active) spawnRelay(phase, false)
  }, delay)
}

export const living = (phase: PhaseState) => phase.procs.filter((p) => p.alive && !p.killedByUs && p.started)
export const leaderOf = (phase: PhaseState) => living(phase).find((p) => p.leader)

/**
 * Resolves with the first relay report matching `predicate` (or undefined after `timeoutMs`).
 * `action` runs synchronously when it matches, before any later report of the same read is
 * handled: a kill there lands as close to that report as the runner can get.
 */
export function onRelay(
  predicate: (proc: RelayProc, r: RelayReport) => boolean,
  timeoutMs: number,
  action?: (proc: RelayProc, r: RelayReport) => void,
): Promise<{ proc: RelayProc; r: RelayReport; at: number } | undefined> {
  return new Promise((resolve) => {
    const listener = (proc: RelayProc, r: RelayReport, at: number) => {
      if (!predicate(proc, r)) return
      action?.(proc, r)
      done({ proc, r, at })
    }
    const timer = setTimeout(() => done(undefined), timeoutMs)
    function done(value: { proc: RelayProc; r: RelayReport; at: number } | undefined) {
      clearTimeout(timer)
      state.bus.off('relay', listener)
      resolve(value)
    }
    state.bus.on('relay', listener)
  })
}

export async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) return false
    await sleep(50)
  }
  return true
}

/**
 * SIGKILL; returns the tracking ids it left unfinished, and the last batch Kafka acknowledged
 * (the one an after-ack kill holds: its delete cannot have started, so it must come again). An
 * earlier batch's delete may be running (pipelined): unfinished, but perhaps committed.
 */
export function killRelay(proc: RelayProc): { unfinished: string[]; acked: string[]; at: number } {
  const acked = proc.unconfirmed.at(-1) ?? []
  const unfinished = [...(proc.inFlight ?? []), ...proc.unconfirmed.flat()]
  addAtRisk(unfinished, 'kill -9')
  proc.killedByUs = true
  proc.inFlight = undefined
  proc.unconfirmed = []
  proc.child.kill('SIGKILL')
  proc.phase.kills++
  return { unfinished, acked, at: Date.now() }
}

export function prepareRelays(phase: PhaseState): void {
  for (let i = 0; i < phase.plan.relays; i++) spawnRelay(phase, true)
}

export async function startRelays(phase: PhaseState): Promise<void> {
  const begin = Date.now()
  phase.active = true
  const waiting = phase.procs.filter((p) => p.alive && p.prepared && !p.started)
  for (const proc of waiting) if (proc.loaded) command(proc, { type: 'go' })
  for (let i = waiting.length; i < phase.plan.relays; i++) spawnRelay(phase, false)
  const ready = await waitUntil(
    () =>
      living(phase).length >= phase.plan.relays &&
      (phase.plan.mode !== 'exclusive' || leaderOf(phase) !== undefined),
    90_000,
  )
  if (!ready) throw new Error(`${phase.plan.mode}: relays did not start within 90 s`)
  log(`${phase.plan.mode}: ${phase.plan.relays} relay(s) running ${Date.now() - begin} ms after 'go'`)
}

export async function stopRelays(phase: PhaseState): Promise<void> {
  phase.active = false
  const begin = Date.now()
  const alive = phase.procs.filter((p) => p.alive)
  for (const proc of alive) {
    proc.stopping = true
    // One still loading has no database session or claim yet: SIGTERM ends it at once.
    if (proc.loaded) command(proc, { type: 'stop' })
    else proc.child.kill('SIGTERM')
  }
  if (await waitUntil(() => alive.every((p) => !p.alive), 30_000)) {
    log(`${phase.plan.mode}: ${alive.length} relay(s) stopped in ${Date.now() - begin} ms`)
    return
  }
  for (const proc of alive.filter((p) => p.alive)) {
    log(`!! relay #${proc.n} did not stop within 30 s: SIGKILL`)
    proc.killedByUs = true
    proc.child.kill('SIGKILL')
  }
  await waitUntil(() => alive.every((p) => !p.alive), 5000)
}
