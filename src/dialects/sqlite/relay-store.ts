import { setTimeout as sleep } from 'node:timers/promises'
import { ErrorCodes, internalError, isKEntityError, KEntityError } from '../../core/errors.ts'
import type { StoredMessage } from '../../core/record.ts'
import type { FailedDelivery, OutboxTable, RelayStore } from '../../core/seams.ts'
import { waitOrAbort } from '../../core/wait.ts'
import { noOpenClaim, relayStoreError } from '../shared/relay-store-errors.ts'
import type { SqliteConnection } from './connection.ts'
import { classifyFailure } from './errors.ts'
import { qualified } from './names.ts'
import { claimStatement, deleteSql, failureStatements, toMessage } from './sql.ts'

export interface SqliteRelayStoreOptions {
  table: OutboxTable
  /**
   * The relay's connection: the app's own handle (`owned: false`, shared with the app) or one
   * opened for the relay (`owned: true`, closed with it).
   */
  connect: () => { connection: SqliteConnection; owned: boolean }
  /**
   * Longest the relay waits, in ms, for the database to be free: for other connections'
   * write locks, and on a shared handle for the app's open transaction to end.
   */
  busyTimeout: number
  /**
   * Opens a connection to a file (the driver's `open`), for the relay lock beside a database
   * file (see `SqliteRelayStore.tryAcquireLeadership`). Without it, or for an in-memory database,
   * nothing is locked across processes.
   */
  openLock?: (filename: string) => SqliteConnection
}

/**
 * The file whose SQLite lock marks the relay of one outbox, beside the database file: a database
 * of its own, so holding its lock never blocks the app's writers.
 */
export function relayLockFile(filename: string, table: OutboxTable): string {
  return `${filename}-${table.schema}_${table.table}.relay-lock`
}

/** Relays of this process by database and table: SQLite supports one relay per outbox. */
const activeRelays = new Map<string, SqliteRelayStore>()
const handleIds = new WeakMap<object, number>()
let nextHandleId = 0

function relayKey(connection: SqliteConnection, table: OutboxTable): string {
  if (connection.filename !== null) return `file:${connection.filename}:${qualified(table)}`
  let id = handleIds.get(connection.handle)
  if (id === undefined) {
    id = ++nextHandleId
    handleIds.set(connection.handle, id)
  }
  return `memory:${id}:${qualified(table)}`
}

type Attempt<R> = { done: true; value: R } | { done: false }

/**
 * The relay's side of a SQLite outbox. There is exactly one relay, so a claim needs no lock:
 * it reads the oldest messages, the relay sends them, and `complete` deletes exactly those in a
 * short write transaction. Nothing is held while Kafka is sent to, so the app's writers are
 * never blocked by the relay for longer than one DELETE.
 *
 * The drivers are synchronous and usually share the app's thread, so the relay never lets the
 * driver sleep on a lock (busy_timeout 0 while it works): it backs off asynchronously instead,
 * which lets the app finish whatever holds the lock.
 */
export class SqliteRelayStore implements RelayStore {
  readonly #options: SqliteRelayStoreOptions
  #connection: SqliteConnection | undefined
  #owned = false
  #key: string | undefined
  #healthy = false
  #claimed = false
  /** The claim ended with `close()` before its batch was acknowledged (see `noOpenClaim`). */
  #claimLost = false
  /** The relay lock's own connection while this relay holds it (see `tryAcquireLeadership`). */
  #lock: SqliteConnection | undefined
  #heldBy: 'leader' | undefined

  constructor(options: SqliteRelayStoreOptions) {
    this.#options = options
  }

  get healthy(): boolean {
    return this.#healthy
  }

  get heldBy(): 'leader' | undefined {
    return this.#heldBy
  }

  async connect(): Promise<void> {
    await this.close()
    const { connection, owned } = this.#options.connect()
    const key = relayKey(connection, this.#options.table)
    const other = activeRelays.get(key)
    if (other !== undefined && other !== this) {
      if (owned) connection.close()
      throw new KEntityError(
        ErrorCodes.RELAY_RUNNING,
        `another relay of this process already relays ${qualified(this.#options.table)}${connection.filename ? ` in ${connection.filename}` : ''}; SQLite supports one relay per outbox (stop the other one first)`,
        { retryable: true },
      )
    }
    activeRelays.set(key, this)
    this.#key = key
    this.#connection = connection
    this.#owned = owned
    // Waits happen asynchronously in #access, never inside the driver (see the class comment).
    if (owned) connection.exec('PRAGMA busy_timeout = 0')
    this.#healthy = true
  }

  /**
   * One relay per outbox across processes too. Within this process the registry above sees to
   * it; another process may open the same database file, so the relay also holds an exclusive
   * SQLite lock (an open `BEGIN EXCLUSIVE`) on a small lock file beside it, taken without
   * waiting. The operating system drops that lock when the process ends, however it ends, so a
   * relay in another process stands by until then and takes over after. The lock file is a
   * database of its own, so the app's writers never wait for it. An in-memory database cannot
   * be reached from another process: nothing to lock.
   */
  async tryAcquireLeadership(): Promise<boolean> {
    if (!this.#healthy) return false
    const filename = this.#connection?.filename
    if (this.#lock !== undefined || filename === null || filename === undefined) return true
    const openLock = this.#options.openLock
    if (openLock === undefined) return true
    const path = relayLockFile(filename, this.#options.table)
    let lock: SqliteConnection
    try {
      lock = openLock(path)
    } catch (error) {
      throw new KEntityError(
        ErrorCodes.STORE_FAILED,
        `the relay could not open its lock file ${path} (it marks the one relay of ${qualified(this.#options.table)} across processes); the directory of the database must be writable`,
        { cause: error, retryable: true },
      )
    }
    try {
      lock.exec('PRAGMA busy_timeout = 0')
      lock.exec('BEGIN EXCLUSIVE')
    } catch (error) {
      const busy = lock.isBusy(error)
      try {
        lock.close()
      } catch {
        // Nothing held: nothing to release.
      }
      if (!busy) throw error
      this.#heldBy = 'leader'
      return false
    }
    this.#lock = lock
    this.#heldBy = undefined
    return true
  }

  async claim(limit: number, maxBytes?: number): Promise<StoredMessage[]> {
    if (this.#claimed) throw internalError('a claim is already open on this relay')
    const statement = claimStatement(this.#options.table, limit, Date.now(), maxBytes)
    const rows = await this.#access(false, (c) => c.all(statement.text, statement.values))
    if (rows.length === 0) return []
    this.#claimLost = false
    this.#claimed = true
    return rows.map(toMessage)
  }

  async complete(acknowledged: readonly string[], failures?: readonly FailedDelivery[]): Promise<void> {
    if (!this.#claimed) throw noOpenClaim('complete()', this.#claimLost)
    try {
      await this.#access(true, (c) => {
        for (const statement of failureStatements(this.#options.table, failures ?? [])) {
          c.run(statement.text, statement.values)
        }
        if (acknowledged.length > 0) c.run(deleteSql(this.#options.table, acknowledged))
      })
    } finally {
      this.#claimed = false
    }
  }

  /** Nothing was locked: the claimed rows simply stay where they are. */
  async abandon(): Promise<void> {
    this.#claimed = false
  }

  /** The late answer for held rows (see `RelayStore.completeHeld`), outside any claim. */
  async completeHeld(acknowledged: readonly string[], failures?: readonly FailedDelivery[]): Promise<void> {
    if (this.#claimed) throw internalError('completeHeld() while a claim is open on this relay')
    if (acknowledged.length === 0 && (failures === undefined || failures.length === 0)) return
    await this.#access(true, (c) => {
      for (const statement of failureStatements(this.#options.table, failures ?? [])) {
        c.run(statement.text, statement.values)
      }
      if (acknowledged.length > 0) c.run(deleteSql(this.#options.table, acknowledged))
    })
  }

  waitForWork(ms: number, signal: AbortSignal): Promise<void> {
    return waitOrAbort(ms, signal)
  }

  async close(): Promise<void> {
    const connection = this.#connection
    this.#connection = undefined
    this.#healthy = false
    this.#claimLost ||= this.#claimed
    this.#claimed = false
    const lock = this.#lock
    this.#lock = undefined
    try {
      // Closing ends its transaction, which lets the lock go.
      lock?.close()
    } catch {
      // Already closed: nothing left to release.
    }
    if (this.#key !== undefined && activeRelays.get(this.#key) === this) activeRelays.delete(this.#key)
    this.#key = undefined
    if (connection && this.#owned) {
      try {
        connection.close()
      } catch {
        // Already closed: nothing left to release.
      }
    }
  }

  async #access<R>(write: boolean, work: (connection: SqliteConnection) => R): Promise<R> {
    const connection = this.#connection
    if (!connection || !this.#healthy) {
      throw new KEntityError(ErrorCodes.STORE_FAILED, 'the relay has no usable database connection', {
        retryable: true,
      })
    }
    const deadline = Date.now() + this.#options.busyTimeout
    for (let attempt = 0; ; attempt++) {
      // On a handle shared with the app, an app transaction that is still open (the app awaits
      // something between BEGIN and COMMIT) would otherwise swallow the relay's statements, and
      // the relay would read its uncommitted messages.
      if (!connection.inTransaction) {
        const result = this.#attempt(connection, write, work)
        if (result.done) return result.value
      }
      if (Date.now() >= deadline) {
        throw new KEntityError(
          ErrorCodes.STORE_FAILED,
          `the database stayed locked for ${this.#options.busyTimeout} ms (another connection writing, or a transaction left open on the app's handle); the relay tries again later`,
          { retryable: true },
        )
      }
      await sleep(Math.min(2 ** attempt, 50))
    }
  }

  #attempt<R>(
    connection: SqliteConnection,
    write: boolean,
    work: (connection: SqliteConnection) => R,
  ): Attempt<R> {
    let saved = 0
    try {
      // The app's handle keeps the app's own busy timeout; it is lifted only while the relay works.
      if (!this.#owned) saved = Number(connection.all('PRAGMA busy_timeout')[0]?.timeout ?? 0)
      if (saved !== 0) connection.exec('PRAGMA busy_timeout = 0')
      if (write) connection.exec('BEGIN IMMEDIATE')
      const value = work(connection)
      if (write) connection.exec('COMMIT')
      return { done: true, value }
    } catch (error) {
      if (write && connection.inTransaction) connection.exec('ROLLBACK')
      if (connection.isBusy(error)) return { done: false }
      const explained = relayStoreError(
        error,
        classifyFailure,
        qualified(this.#options.table),
        'outbox.migrate(db)',
      )
      if (isKEntityError(explained, ErrorCodes.NOT_MIGRATED)) throw explained
      // The handle may have been closed under the relay: let the relay reconnect rather than guess.
      this.#healthy = false
      throw explained
    } finally {
      if (saved !== 0) connection.exec(`PRAGMA busy_timeout = ${saved}`)
    }
  }
}
