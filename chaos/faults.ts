/**
 * The faults the chaos runner injects, other than kill -9 of its own relay processes (which is
 * one `process.kill(pid, 'SIGKILL')` in the runner): a Kafka broker stopped and restarted on the
 * same ports and data, the run's relay sessions terminated in PostgreSQL, the exclusive leader's
 * session ended. Everything here only touches what this run started: its own broker JVM, and
 * PostgreSQL backends whose application_name is this run's relay name.
 */
import { createServer } from 'node:net'
import type pg from 'pg'
import { type KafkaBroker, startKafkaBroker } from '../scripts/kafka-broker.ts'
import { lockClass } from '../src/dialects/postgres/names.ts'

/** A broker this run owns: fixed ports and data dir, so it can be stopped and brought back as it was. */
export class ChaosBroker {
  readonly dataDir: string
  readonly port: number
  readonly controllerPort: number
  #broker: KafkaBroker | undefined

  constructor(dataDir: string, port: number, controllerPort: number) {
    this.dataDir = dataDir
    this.port = port
    this.controllerPort = controllerPort
  }

  get brokers(): string {
    return `127.0.0.1:${this.port}`
  }

  get running(): boolean {
    return this.#broker !== undefined
  }

  async start(): Promise<void> {
    if (this.#broker) return
    this.#broker = await startKafkaBroker({
      dataDir: this.dataDir,
      port: this.port,
      controllerPort: this.controllerPort,
      quiet: true,
    })
  }

  /** Stops the JVM (SIGTERM; the launcher escalates to SIGKILL after 20 s); keeps the data. */
  async stop(): Promise<void> {
    const broker = this.#broker
    this.#broker = undefined
    await broker?.stop()
  }
}

export interface OutageTimes {
  /** When the stop began. */
  downAt: number
  /** When the JVM was gone. */
  stoppedAt: number
  /** When the new JVM answered metadata requests again. */
  upAt: number
}

/** Kafka down for `downMs` (counted from the moment the old JVM is gone), then back. */
export async function kafkaOutage(broker: ChaosBroker, downMs: number): Promise<OutageTimes> {
  const downAt = Date.now()
  await broker.stop()
  const stoppedAt = Date.now()
  await new Promise((resolve) => setTimeout(resolve, downMs))
  await broker.start()
  return { downAt, stoppedAt, upAt: Date.now() }
}

/**
 * Ends every PostgreSQL session of this run's relays (what a database restart does to them),
 * chosen by their exact, run-specific application_name. Returns the backend pids ended.
 */
export async function terminateRelaySessions(admin: pg.Pool, applicationName: string): Promise<number[]> {
  const result = await admin.query(
    `SELECT pid, pg_terminate_backend(pid) AS ended FROM pg_stat_activity
     WHERE application_name = $1 AND pid <> pg_backend_pid()`,
    [applicationName],
  )
  return result.rows.filter((row) => row.ended === true).map((row) => row.pid as number)
}

/** Backend pid of the session holding this outbox's exclusive leader lock, if it is one of ours. */
export async function leaderBackendPid(
  admin: pg.Pool,
  schema: string,
  applicationName: string,
): Promise<number | undefined> {
  const result = await admin.query(
    `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid AND l.objid = 0
       AND a.application_name = $2`,
    [lockClass({ schema, table: 'outbox' }, 'leader') >>> 0, applicationName],
  )
  return result.rows[0]?.pid as number | undefined
}

/** Ends one backend, after checking again that it is one of this run's relay sessions. */
export async function terminateBackend(
  admin: pg.Pool,
  pid: number,
  applicationName: string,
): Promise<boolean> {
  const result = await admin.query(
    `SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE pid = $1 AND application_name = $2`,
    [pid, applicationName],
  )
  return result.rows[0]?.ended === true
}

/** Two distinct free TCP ports on 127.0.0.1 (held open together so they differ). */
export async function freePorts(): Promise<[number, number]> {
  const open = () =>
    new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
      const server = createServer()
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => resolve(server))
    })
  const servers = [await open(), await open()]
  const ports = servers.map((s) => (s.address() as { port: number }).port)
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return [ports[0] as number, ports[1] as number]
}
