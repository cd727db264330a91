/**
 * The chaos run on MariaDB through the mysql2 adapter (--db mariadb): the run's own mariadbd
 * (mariadb-install-db into a temp dir, its own port and socket, grant tables skipped so that the
 * user name a session connects with tells producers, relays and the runner apart), crashed with
 * SIGKILL while producer sessions are in their COMMIT. The machine's shared server (3306) is only
 * used with --shared-db, and never restarted.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process'
import { chownSync, mkdirSync, rmSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import mysql from 'mysql2/promise'
import { lockName } from '../../src/dialects/mysql/names.ts'
import { freePorts } from '../faults.ts'
import { newFault } from '../injectors/record.ts'
import { living, waitUntil } from '../relays.ts'
import { type RelayMode, sleep } from '../shared.ts'
import {
  log,
  outbox,
  type PhaseState,
  type RestartRecord,
  runId,
  schema,
  state,
  TARGET_TIMEOUT_MS,
} from '../state.ts'
import type { ChaosDatabase } from './types.ts'

export const SHARED_MYSQL_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'
const MARIADBD = process.env.CHAOS_MARIADBD ?? '/usr/sbin/mariadbd'
const INSTALL_DB = process.env.CHAOS_MARIADB_INSTALL_DB ?? 'mariadb-install-db'
const asRoot = process.getuid?.() === 0
/** With grant tables skipped, any name is accepted and shown in PROCESSLIST.USER. */
const RELAY_USER = `chaos_relay_${runId}`
const PRODUCER_USER = `chaos_producer_${runId}`
/** How long a crash waits for a producer session to be in its COMMIT before crashing anyway. */
const COMMIT_WAIT_MS = 2000

/**
 * A MariaDB server this run owns, so it can be crashed. As root, mariadbd switches to the `mysql`
 * OS user itself (--user), in a directory that user owns. Stopped and killed only through the
 * child process this object started, never by name.
 */
export class OwnMariadb {
  readonly dir: string
  readonly dataDir: string
  readonly port: number
  #child: ChildProcess | undefined
  #exited: Promise<void> = Promise.resolve()

  constructor(dir: string, port: number) {
    this.dir = dir
    this.dataDir = join(dir, 'data')
    this.port = port
  }

  url(user: string, database = ''): string {
    return `mysql://${user}@127.0.0.1:${this.port}/${database}`
  }

  async init(): Promise<void> {
    mkdirSync(this.dir, { recursive: true })
    if (asRoot) chownSync(this.dir, ...mysqlIds())
    await new Promise<void>((resolve, reject) => {
      execFile(
        INSTALL_DB,
        [
          '--no-defaults',
          `--datadir=${this.dataDir}`,
          ...(asRoot ? ['--user=mysql'] : []),
          '--auth-root-authentication-method=normal',
          '--skip-test-db',
          '--skip-name-resolve',
        ],
        { timeout: 90_000 },
        (error, stdout, stderr) => {
          if (error) reject(new Error(`mariadb-install-db failed: ${error.message}\n${stdout}${stderr}`))
          else resolve()
        },
      )
    })
  }

  /** Starts mariadbd and returns once it accepts connections (InnoDB crash recovery done). */
  async start(): Promise<void> {
    const child = spawn(
      MARIADBD,
      [
        '--no-defaults',
        `--datadir=${this.dataDir}`,
        `--port=${this.port}`,
        '--bind-address=127.0.0.1',
        `--socket=${join(this.dir, 'mariadb.sock')}`,
        `--pid-file=${join(this.dir, 'mariadb.pid')}`,
        `--log-error=${join(this.dir, 'server.log')}`,
        ...(asRoot ? ['--user=mysql'] : []),
        '--skip-grant-tables',
        '--skip-name-resolve',
        // Durable commits (the default, stated): a crash must not lose an acknowledged COMMIT.
        '--innodb-flush-log-at-trx-commit=1',
        '--sync-binlog=1',
        '--max-connections=300',
        '--innodb-buffer-pool-size=128M',
      ],
      { stdio: 'ignore' },
    )
    this.#child = child
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()))
    const deadline = Date.now() + 90_000
    for (;;) {
      if (child.exitCode !== null)
        throw new Error(`mariadbd exited (${child.exitCode}); see ${this.dir}/server.log`)
      const connection = await mysql.createConnection({ uri: this.url('root') }).catch(() => undefined)
      if (connection) {
        await connection.end().catch(() => {})
        return
      }
      if (Date.now() > deadline) throw new Error(`mariadbd did not accept connections in 90 s`)
      await sleep(100)
    }
  }

  /** SIGKILL: no shutdown, InnoDB redo recovery on the next start. */
  async crash(): Promise<void> {
    this.#child?.kill('SIGKILL')
    await this.#exited
  }

  async stop(): Promise<void> {
    const child = this.#child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    await this.#exited
    clearTimeout(timer)
  }
}

function mysqlIds(): [number, number] {
  const uid = Number(execFileSync('id', ['-u', 'mysql'], { encoding: 'utf8' }).trim())
  const gid = Number(execFileSync('id', ['-g', 'mysql'], { encoding: 'utf8' }).trim())
  return [uid, gid]
}

export class MariadbChaosDb implements ChaosDatabase {
  readonly kind = 'mariadb'
  readonly restartKind = 'db-restart'
  readonly modes: readonly RelayMode[] = ['single', 'exclusive', 'concurrent']
  readonly networked = true
  readonly #shared: boolean
  #server: OwnMariadb | undefined
  #admin: mysql.Pool | undefined
  readonly #dir = join(os.tmpdir(), `k-entity-chaos-${runId}-mariadb`)

  constructor(shared: boolean) {
    this.#shared = shared
  }

  get owned(): boolean {
    return this.#server !== undefined
  }

  /** On the shared server every session is root: relay sessions cannot be told apart. */
  get canEndSessions(): boolean {
    return this.owned
  }

  get #pool(): mysql.Pool {
    if (!this.#admin) throw new Error('MariaDB admin pool not open')
    return this.#admin
  }

  async start(): Promise<void> {
    if (this.#shared) return
    const [port] = await freePorts(1)
    this.#server = new OwnMariadb(this.#dir, port as number)
    const begin = Date.now()
    await this.#server.init()
    await this.#server.start()
    log(
      `own MariaDB at 127.0.0.1:${port} (innodb_flush_log_at_trx_commit=1, data in ${this.#server.dataDir}), ready in ${Date.now() - begin} ms`,
    )
  }

  #url(user: string, database: string): string {
    if (this.#server) return this.#server.url(user, database)
    const url = new URL(SHARED_MYSQL_URL)
    url.pathname = `/${database}`
    return url.toString()
  }

  async prepare(): Promise<void> {
    this.#admin = mysql.createPool({ uri: this.#url('root', ''), connectionLimit: 2 })
    await this.#admin.query(`CREATE DATABASE \`${schema}\``)
    await outbox.migrate(this.runnerConnection() as never)
    await this.#admin.query(
      `CREATE TABLE \`${schema}\`.business (id VARCHAR(64) PRIMARY KEY, topic VARCHAR(16) NOT NULL, \`key\` VARCHAR(64) NOT NULL) ENGINE=InnoDB`,
    )
  }

  producerUrl(): string {
    return this.#url(PRODUCER_USER, schema)
  }

  relayUrl(): string {
    return this.#url(RELAY_USER, schema)
  }

  runnerConnection(): unknown {
    return this.#url('root', schema)
  }

  async businessIds(): Promise<Set<string>> {
    const [rows] = await this.#pool.query(`SELECT id FROM \`${schema}\`.business`)
    return new Set((rows as { id: string }[]).map((row) => row.id))
  }

  async outboxRows(): Promise<number> {
    const [rows] = await this.#pool.query(`SELECT count(*) AS n FROM \`${schema}\`.outbox`)
    return Number((rows as { n: number }[])[0]?.n)
  }

  async #sessionsOf(user: string): Promise<number[]> {
    const [rows] = await this.#pool.query(
      'SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = ?',
      [user],
    )
    return (rows as { id: number }[]).map((row) => Number(row.id))
  }

  async endRelaySessions(): Promise<{ ended: number[]; how: string }> {
    const ended: number[] = []
    for (const id of await this.#sessionsOf(RELAY_USER)) {
      if (await this.#kill(id)) ended.push(id)
    }
    return { ended, how: `KILL CONNECTION (user ${RELAY_USER})` }
  }

  async leaderSession(): Promise<number | undefined> {
    const [rows] = await this.#pool.query('SELECT IS_USED_LOCK(?) AS id', [
      lockName({ schema, table: 'outbox' }, 'leader'),
    ])
    const id = (rows as { id: number | null }[])[0]?.id
    if (id === null || id === undefined) return undefined
    return (await this.#sessionsOf(RELAY_USER)).includes(Number(id)) ? Number(id) : undefined
  }

  async endSession(id: number): Promise<boolean> {
    if (!(await this.#sessionsOf(RELAY_USER)).includes(id)) return false
    return this.#kill(id)
  }

  async #kill(id: number): Promise<boolean> {
    try {
      await this.#pool.query(`KILL CONNECTION ${Number(id)}`)
      return true
    } catch {
      // Gone between the listing and the KILL.
      return false
    }
  }

  /**
   * SIGKILLs mariadbd at a moment a producer session is in its COMMIT (polled in PROCESSLIST, up
   * to 2 s, else at once), waits `downMs`, starts it again (InnoDB recovery).
   */
  async restart(phase: PhaseState, downMs: number): Promise<void> {
    const server = this.#server
    if (!server) return
    await waitUntil(() => living(phase).length > 0, TARGET_TIMEOUT_MS)
    const from = Date.now()
    const window = { from, to: Number.POSITIVE_INFINITY }
    let heldCommits: number | null = null
    try {
      const until = Date.now() + COMMIT_WAIT_MS
      while (Date.now() < until) {
        const [rows] = await this.#pool.query(
          `SELECT count(*) AS n FROM information_schema.PROCESSLIST WHERE USER = ? AND INFO = 'COMMIT'`,
          [PRODUCER_USER],
        )
        heldCommits = Number((rows as { n: number }[])[0]?.n)
        if (heldCommits > 0) break
        await sleep(2)
      }
    } catch (error) {
      log(`!! ${phase.plan.mode}: preparing the restart: ${(error as Error).message}`)
    }
    const at = Date.now()
    await server.crash()
    const stoppedAt = Date.now()
    // The pool's connections died with the server; new ones are opened on demand.
    await sleep(downMs)
    const startAt = Date.now()
    await server.start()
    const upAt = Date.now()
    window.to = upAt + 10_000
    const record: RestartRecord = {
      fault: newFault(
        phase,
        'db-restart',
        at,
        `mariadbd SIGKILL (${heldCommits === null ? 'no COMMIT seen' : `${heldCommits} producer sessions in COMMIT`}) in ${stoppedAt - at} ms; down ${((startAt - stoppedAt) / 1000).toFixed(1)} s; start (InnoDB recovery) ${upAt - startAt} ms`,
      ),
      variant: 'mid-commit',
      heldCommits,
      window,
      crashMs: stoppedAt - at,
      downMs: startAt - stoppedAt,
      startMs: upAt - startAt,
    }
    state.restarts.push(record)
    state.faultTimes.set(record.fault, { at: upAt })
    if (phase.plan.mode === 'exclusive') record.fault.takeoverMs = null
    log(`${phase.plan.mode}: db-restart: ${record.fault.detail}`)
  }

  describe(): string {
    return this.#server
      ? `own MariaDB ${mariadbVersion()} server (mariadb-install-db in a temp dir, 127.0.0.1:${this.#server.port}, innodb_flush_log_at_trx_commit=1), mysql2 adapter`
      : `shared MariaDB at MYSQL_URL, database ${schema} (no restarts, no session faults), mysql2 adapter`
  }

  async cleanup(keep: boolean): Promise<void> {
    if (!this.#server && !keep)
      await this.#admin?.query(`DROP DATABASE IF EXISTS \`${schema}\``).catch(() => {})
    await this.#admin?.end().catch(() => {})
    if (!this.#server) return
    await this.#server.stop().catch((error: Error) => console.error(`stopping MariaDB: ${error.message}`))
    if (keep) console.error(`chaos: --keep: the database stays in ${this.#server.dataDir} (stopped)`)
    else rmSync(this.#dir, { recursive: true, force: true })
  }
}

function mariadbVersion(): string {
  try {
    return execFileSync(MARIADBD, ['--version'], { encoding: 'utf8' }).match(/Ver (\S+)/)?.[1] ?? ''
  } catch {
    return ''
  }
}
