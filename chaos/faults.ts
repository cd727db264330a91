/**
 * The faults the chaos runner injects, other than kill -9 of its own relay processes (which is
 * one `process.kill(pid, 'SIGKILL')` in the runner): a Kafka broker stopped and restarted on the
 * same ports and data, the run's relay sessions terminated in PostgreSQL, the exclusive leader's
 * session ended, and a crash and restart of the run's own PostgreSQL server. Everything here only
 * touches what this run started: its own broker JVM, its own PostgreSQL server (by its data
 * directory), and backends whose application_name is this run's relay name.
 */
import { execFile, execFileSync } from 'node:child_process'
import { chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import type pg from 'pg'
import { type KafkaBroker, type ProxiedListenerOptions, startKafkaBroker } from '../scripts/kafka-broker.ts'
import { lockClass } from '../src/dialects/postgres/names.ts'

/** A broker this run owns: fixed ports and data dir, so it can be stopped and brought back as it was. */
export class ChaosBroker {
  readonly dataDir: string
  readonly port: number
  readonly controllerPort: number
  /** --kafka-proxy: the listener the relays reach through the proxy (same ports on every start). */
  readonly proxiedListener: ProxiedListenerOptions | undefined
  #broker: KafkaBroker | undefined

  constructor(
    dataDir: string,
    port: number,
    controllerPort: number,
    proxiedListener?: ProxiedListenerOptions,
  ) {
    this.dataDir = dataDir
    this.port = port
    this.controllerPort = controllerPort
    this.proxiedListener = proxiedListener
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
      ...(this.proxiedListener ? { proxiedListener: this.proxiedListener } : {}),
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

/** `count` distinct free TCP ports on 127.0.0.1 (held open together so they differ). */
export async function freePorts(count: number): Promise<number[]> {
  const open = () =>
    new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
      const server = createServer()
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => resolve(server))
    })
  const servers = await Promise.all(Array.from({ length: count }, open))
  const ports = servers.map((s) => (s.address() as { port: number }).port)
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

const PG_BIN = process.env.CHAOS_PG_BIN ?? '/usr/lib/postgresql/15/bin'

/**
 * A PostgreSQL server this run owns, so it can be crashed: the machine's shared server is never
 * touched. initdb into a temp dir, its own port and socket dir, trust auth on 127.0.0.1, fsync on
 * (the default). initdb and postgres refuse to run as root: as root, everything runs as the
 * `postgres` OS user through runuser, in a directory that user owns. Stopped and started only
 * through its own data directory (pg_ctl -D), never by process name.
 */
export class OwnPostgres {
  readonly dir: string
  readonly dataDir: string
  readonly port: number
  #autoConf: string | undefined

  constructor(dir: string, port: number) {
    this.dir = dir
    this.dataDir = join(dir, 'data')
    this.port = port
  }

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`
  }

  /** The postmaster's pid, from its own postmaster.pid (undefined when it is not running). */
  get pid(): number | undefined {
    const file = join(this.dataDir, 'postmaster.pid')
    if (!existsSync(file)) return undefined
    const pid = Number(readFileSync(file, 'utf8').split('\n')[0])
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  }

  async init(): Promise<void> {
    mkdirSync(this.dir, { recursive: true })
    if (asRoot) chownSync(this.dir, ...postgresIds())
    await pgTool('initdb', [
      '-D',
      this.dataDir,
      '-U',
      'postgres',
      '--auth=trust',
      '-E',
      'UTF8',
      '--no-locale',
      // Only initdb's own final sync: the server runs with fsync on.
      '--no-sync',
    ])
  }

  /** pg_ctl start -w: returns once the server accepts connections (crash recovery done). */
  async start(): Promise<void> {
    await pgTool('pg_ctl', [
      '-D',
      this.dataDir,
      '-w',
      '-t',
      '60',
      '-l',
      join(this.dir, 'server.log'),
      '-o',
      `-p ${this.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${this.dir} -c fsync=on -c max_connections=200`,
      'start',
    ])
  }

  /** `pg_ctl stop -m immediate`: every backend quits without a checkpoint, as in a crash. */
  async crash(): Promise<void> {
    await pgTool('pg_ctl', ['-D', this.dataDir, '-m', 'immediate', '-w', 'stop'])
  }

  async stop(): Promise<void> {
    if (this.pid === undefined) return
    await pgTool('pg_ctl', ['-D', this.dataDir, '-m', 'fast', '-w', '-t', '30', 'stop']).catch(() =>
      pgTool('pg_ctl', ['-D', this.dataDir, '-m', 'immediate', '-w', 'stop']),
    )
  }

  /**
   * Makes every COMMIT wait after its commit record is flushed (a synchronous standby that does
   * not exist): a crash then lands while commits are durable but unanswered.
   */
  async holdCommitsAfterFlush(admin: pg.Pool): Promise<void> {
    this.#autoConf = readFileSync(join(this.dataDir, 'postgresql.auto.conf'), 'utf8')
    await admin.query(`ALTER SYSTEM SET synchronous_standby_names = 'k_entity_chaos_absent_standby'`)
    await admin.query('SELECT pg_reload_conf()')
  }

  /** Undoes holdCommitsAfterFlush while the server is down, so it starts without the standby. */
  restoreConfig(): void {
    if (this.#autoConf === undefined) return
    writeFileSync(join(this.dataDir, 'postgresql.auto.conf'), this.#autoConf)
    this.#autoConf = undefined
  }
}

const asRoot = process.getuid?.() === 0

function postgresIds(): [number, number] {
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim())
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim())
  return [uid, gid]
}

/** Runs a PostgreSQL binary (as the postgres OS user when we are root); rejects with its output. */
function pgTool(tool: string, args: string[]): Promise<void> {
  const file = join(PG_BIN, tool)
  const [command, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', file, ...args]] : [file, args]
  return new Promise((resolve, reject) => {
    execFile(command, argv, { timeout: 90_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${tool} ${args.at(-1)} failed: ${error.message}\n${stdout}${stderr}`))
      else resolve()
    })
  })
}
