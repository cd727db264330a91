// The Kafka JVMs this process starts: their command line, and a guard so none outlives us.
import { type ChildProcess, spawn } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { brokerError, javaBinary, LOG_TAIL_LINES, LOG4J_CONFIG, STOP_TIMEOUT_MS } from './common.ts'
import type { Layout } from './config.ts'

export type JvmProfile = 'test' | 'server'

const JVM_PROFILES: Record<JvmProfile, string[]> = {
  test: ['-Xms256m', '-Xmx512m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1'],
  // KAFKA_HEAP_OPTS and KAFKA_JVM_PERFORMANCE_OPTS as bin/kafka-run-class.sh sets them by default.
  server: [
    '-Xmx1g',
    '-Xms1g',
    '-server',
    '-XX:+UseG1GC',
    '-XX:MaxGCPauseMillis=20',
    '-XX:InitiatingHeapOccupancyPercent=35',
    '-XX:+ExplicitGCInvokesConcurrent',
  ],
}

export function jvmArgs(jarsDir: string, l: Layout, profile: JvmProfile = 'test'): string[] {
  return [
    ...JVM_PROFILES[profile],
    `-Dlog4j2.configurationFile=${LOG4J_CONFIG}`,
    `-Dkafka.logs.dir=${l.dataDir}`,
    '-cp',
    `${jarsDir}/*`,
  ]
}

// A signal with no listener ends Node without an 'exit' event, and the detached JVM would live
// on. So while we own JVMs we listen, but only act when nobody else does: a host that handles
// the signal itself (scripts/test.ts, the CLI's run) stops its brokers or exits through 'exit'.
const FATAL_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

/** JVMs that must not outlive this Node process (a crashed test run would otherwise leak them). */
class JvmGuard {
  readonly #pids = new Set<number>()
  readonly #onFatalSignal = (signal: NodeJS.Signals): void => {
    if (process.listenerCount(signal) > 1) return
    this.#killAll()
    for (const s of FATAL_SIGNALS) process.removeListener(s, this.#onFatalSignal)
    process.kill(process.pid, signal)
  }

  constructor() {
    process.on('exit', () => this.#killAll())
  }

  add(pid: number): void {
    if (this.#pids.size === 0) for (const s of FATAL_SIGNALS) process.on(s, this.#onFatalSignal)
    this.#pids.add(pid)
  }

  delete(pid: number): void {
    this.#pids.delete(pid)
    if (this.#pids.size === 0) for (const s of FATAL_SIGNALS) process.removeListener(s, this.#onFatalSignal)
  }

  #killAll(): void {
    for (const pid of this.#pids) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // Already gone.
      }
    }
  }
}

/** The one guard of this process: every JVM we spawn is in it until we stop it or hand it off. */
export const jvmGuard = new JvmGuard()

/** True while the pid names a process that has not exited; a zombie has exited. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    // Field 3 of /proc/PID/stat is the state; the command name before it may contain spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (isAlive(pid)) {
    if (Date.now() >= deadline) return false
    await sleep(100)
  }
  return true
}

/** SIGTERM for a clean shutdown (so logs are flushed), SIGKILL if that takes too long. */
export async function terminate(pid: number): Promise<void> {
  if (!isAlive(pid)) return
  process.kill(pid, 'SIGTERM')
  if (await waitForExit(pid, STOP_TIMEOUT_MS)) return
  process.kill(pid, 'SIGKILL')
  if (!(await waitForExit(pid, 5_000))) throw brokerError(`Kafka broker pid ${pid} survived SIGKILL`)
}

export interface Running {
  child: ChildProcess
  pid: number
  /** Settles with a description of how the JVM ended. */
  exited: Promise<string>
}

/** Starts one Kafka JVM on its layout, guarded so it is killed if this process dies. */
export async function spawnJvm(jarsDir: string, l: Layout, profile: JvmProfile = 'test'): Promise<Running> {
  const out = openSync(l.consoleLog, 'a')
  let child: ChildProcess
  try {
    // Detached (own process group): a Ctrl-C aimed at the test runner must not kill the broker
    // before the runner has closed its clients and stopped it in order.
    child = spawn(javaBinary(), [...jvmArgs(jarsDir, l, profile), 'kafka.Kafka', l.properties], {
      cwd: l.dataDir,
      detached: true,
      stdio: ['ignore', out, out],
    })
  } finally {
    closeSync(out)
  }
  const exited = new Promise<string>((resolveExit) => {
    child.once('error', (error) => resolveExit(`could not be started: ${error.message}`))
    child.once('exit', (code, signal) =>
      resolveExit(signal ? `was killed by ${signal}` : `exited with code ${code}`),
    )
  })
  child.unref()
  const pid = await new Promise<number>((resolveSpawn, reject) => {
    child.once('spawn', () => resolveSpawn(child.pid as number))
    child.once('error', (error) => reject(new Error(`Could not run ${javaBinary()}: ${error.message}`)))
  })
  jvmGuard.add(pid)
  return { child, pid, exited }
}

export async function logTail(l: Layout): Promise<string> {
  const parts: string[] = []
  for (const file of [l.consoleLog, l.brokerLog]) {
    const text = existsSync(file) ? (await readFile(file, 'utf8')).trimEnd() : ''
    if (!text) continue
    parts.push(
      `--- last ${LOG_TAIL_LINES} lines of ${file} ---\n${text.split('\n').slice(-LOG_TAIL_LINES).join('\n')}`,
    )
  }
  return parts.length > 0 ? parts.join('\n') : `(no broker output in ${l.dataDir})`
}
