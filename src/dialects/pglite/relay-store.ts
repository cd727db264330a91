import type { PGliteInterface } from '@electric-sql/pglite'
import { ErrorCodes, internalError, KEntityError } from '../../core/errors.ts'
import type { StoredMessage } from '../../core/record.ts'
import type { FailedDelivery, OutboxTable, RelayStore } from '../../core/seams.ts'
import { classifyFailure } from '../postgres/errors.ts'
import { wakeChannel } from '../postgres/names.ts'
import { claimSql, deleteSql, failuresStatement } from '../postgres/sql.ts'
import { noOpenClaim, relayStoreError } from '../shared/relay-store-errors.ts'
import { decodeHeaders } from '../shared/stored-columns.ts'

/** The relay store of each PGlite database that has one connected. */
const connectedStores = new WeakMap<PGliteInterface, PgliteRelayStore>()

/**
 * The relay's store on an embedded PGlite database.
 *
 * PGlite is a single session that serialises transactions, so the PostgreSQL store's design
 * (a claim transaction holding row locks while Kafka is awaited) would stop every query of the
 * app for as long as Kafka takes. Here a claim is one autocommit SELECT and the acknowledgement
 * one autocommit DELETE; nothing is held in between. Row locks are not needed for that: this
 * store admits one connected relay per database, and nothing outside this process can reach an
 * embedded database. If the process dies after a send and before the DELETE, the rows are still
 * there and are sent again (at least once, as everywhere else).
 */
export class PgliteRelayStore implements RelayStore {
  readonly #db: PGliteInterface
  readonly #table: OutboxTable
  #connected = false
  #claimed = false
  /** The claim ended with `close()` before its batch was acknowledged (see `noOpenClaim`). */
  #claimLost = false
  #unlisten: (() => Promise<void>) | undefined
  /** A commit notification arrived while the relay was busy: the next wait returns at once. */
  #notified = false
  #wake: (() => void) | undefined

  constructor(db: PGliteInterface, table: OutboxTable) {
    this.#db = db
    this.#table = table
  }

  get healthy(): boolean {
    return this.#connected && !this.#db.closed
  }

  async connect(): Promise<void> {
    await this.close()
    if (this.#db.closed) {
      throw new KEntityError(ErrorCodes.STORE_FAILED, 'the PGlite database of this relay is closed')
    }
    const other = connectedStores.get(this.#db)
    if (other !== undefined) {
      throw new KEntityError(
        ErrorCodes.RELAY_RUNNING,
        'another relay is already running on this PGlite database; an embedded database has exactly one relay: stop() the other one first',
        { retryable: true },
      )
    }
    await this.#db.waitReady
    connectedStores.set(this.#db, this)
    this.#connected = true
    // Producers queue a NOTIFY that PGlite delivers at commit, whoever opened the transaction.
    this.#unlisten = await this.#db.listen(wakeChannel(this.#table), () => {
      this.#notified = true
      this.#wake?.()
    })
  }

  /** One relay per database is enforced by `connect()`, so the connected relay always leads. */
  async tryAcquireLeadership(): Promise<boolean> {
    return this.healthy
  }

  async claim(limit: number, maxBytes?: number): Promise<StoredMessage[]> {
    if (this.#claimed) throw internalError('a claim is already open on this relay store')
    const claim = claimSql(
      this.#table,
      limit,
      false,
      undefined,
      maxBytes === undefined ? undefined : { maxBytes },
    )
    // PGlite runs every caller in one session: had the app opened a transaction with a bare
    // BEGIN instead of db.transaction(), its uncommitted rows would be visible here. Such a
    // transaction has an id as soon as it writes, so a claim made inside one returns nothing.
    // The sub-select makes the check a one-time filter, evaluated before any row is read or locked.
    const result = await this.#run(() =>
      this.#db.query(
        `WITH claimable AS (${claim})
SELECT * FROM claimable WHERE (SELECT pg_current_xact_id_if_assigned() IS NULL) ORDER BY id`,
      ),
    )
    const messages = (result.rows as Record<string, unknown>[]).map(toMessage)
    this.#claimLost = false
    this.#claimed = messages.length > 0
    return messages
  }

  async complete(acknowledged: readonly string[], failures?: readonly FailedDelivery[]): Promise<void> {
    if (!this.#claimed) throw noOpenClaim('complete()', this.#claimLost)
    try {
      // Two independent facts, each one atomic statement: a crash between them leaves the
      // acknowledged rows in place, which are then sent again, never lost.
      if (failures !== undefined && failures.length > 0) {
        const statement = failuresStatement(this.#table, failures)
        await this.#run(() => this.#db.query(statement.text, statement.values))
      }
      if (acknowledged.length > 0) {
        await this.#run(() => this.#db.query(deleteSql(this.#table, acknowledged)))
      }
    } finally {
      this.#claimed = false
    }
  }

  async abandon(): Promise<void> {
    this.#claimed = false
  }

  /** The late answer for held rows (see `RelayStore.completeHeld`), outside any claim. */
  async completeHeld(acknowledged: readonly string[], failures?: readonly FailedDelivery[]): Promise<void> {
    if (this.#claimed) throw internalError('completeHeld() while a claim is open on this relay store')
    if (failures !== undefined && failures.length > 0) {
      const statement = failuresStatement(this.#table, failures)
      await this.#run(() => this.#db.query(statement.text, statement.values))
    }
    if (acknowledged.length > 0) await this.#run(() => this.#db.query(deleteSql(this.#table, acknowledged)))
  }

  waitForWork(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted || this.#notified) {
        this.#notified = false
        return resolve()
      }
      const done = () => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        this.#wake = undefined
        this.#notified = false
        resolve()
      }
      const timer = setTimeout(done, ms)
      signal.addEventListener('abort', done, { once: true })
      this.#wake = done
    })
  }

  async close(): Promise<void> {
    if (connectedStores.get(this.#db) === this) connectedStores.delete(this.#db)
    this.#connected = false
    this.#claimLost ||= this.#claimed
    this.#claimed = false
    const unlisten = this.#unlisten
    this.#unlisten = undefined
    if (unlisten !== undefined && !this.#db.closed) await unlisten().catch(() => {})
  }

  async #run<R>(query: () => Promise<R>): Promise<R> {
    if (!this.healthy) {
      throw new KEntityError(ErrorCodes.STORE_FAILED, 'the relay has no usable PGlite database', {
        retryable: true,
      })
    }
    try {
      return await query()
    } catch (error) {
      throw relayStoreError(error, classifyFailure, `"${this.#table.schema}"."${this.#table.table}"`)
    }
  }
}

function toBuffer(value: unknown): Buffer | null {
  if (value === null || value === undefined) return null
  const bytes = value as Uint8Array
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

/** PGlite returns bytea as Uint8Array and bigint as number (or BigInt beyond 2^53). */
function toMessage(row: Record<string, unknown>): StoredMessage {
  return {
    id: String(row.id),
    topic: row.topic as string,
    key: toBuffer(row.key),
    value: toBuffer(row.value),
    headers: decodeHeaders(row.headers),
    orderingHash: (row.ordering_hash as number | null) ?? null,
    attempts: row.attempts as number,
  }
}
