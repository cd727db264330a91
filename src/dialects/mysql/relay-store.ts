import { ErrorCodes, internalError, isKEntityError, KEntityError } from '../../core/errors.ts'
import type { StoredMessage } from '../../core/record.ts'
import type { FailedDelivery, OutboxTable, RelayStore } from '../../core/seams.ts'
import { waitOrAbort } from '../../core/wait.ts'
import { keepClaimAlive, RELAY_QUERY_TIMEOUT_MS } from '../relay-session.ts'
import { noOpenClaim, relayStoreError } from '../shared/relay-store-errors.ts'
import { classifyFailure } from './errors.ts'
import { keyLockSlot, lockName, qualified } from './names.ts'
import { type MysqlResult, type MysqlSession, withQueryTimeout } from './session.ts'
import {
  candidatesSql,
  claimIdsSql,
  claimSlotsSql,
  deleteSql,
  failureStatements,
  toMessage,
  withinBudget,
} from './sql.ts'

export interface MysqlRelayStoreOptions {
  table: OutboxTable
  /** Opens a new dedicated connection (never a pooled one: the leader lock lives on it). */
  connect: () => Promise<MysqlSession>
  /**
   * Longest the relay's session may stay silent, in ms, claim open or not. The server then ends
   * the session, which rolls back its claim and frees its leader lock, so a frozen relay can
   * hold neither messages nor leadership for longer than this.
   */
  sessionTimeout: number
  /**
   * Longest a claim may stay open, in ms. When it is longer than `sessionTimeout`, a healthy
   * relay pings its open claim so the server keeps it (see `keepClaimAlive`). Default: `sessionTimeout`.
   */
  claimTimeout?: number
  /** Several relays share the outbox: claims also take per-key claim locks (see `#claimConcurrent`). */
  concurrent: boolean
  /** A companion claims ahead for the relay's other session (see `companion()`), never leads. */
  role?: 'primary' | 'companion'
}

/**
 * Most concurrent relay sessions one outbox can run on MySQL (each holds one member lock): 32
 * relays, or 16 pipelined ones (a companion holds a member lock of its own).
 */
const MEMBER_LOCKS = 32

export function memberLocks(table: OutboxTable): string[] {
  return Array.from({ length: MEMBER_LOCKS }, (_, i) => lockName(table, `member${i}`))
}

/**
 * One relay's MySQL session. Everything the relay does, including holding the leader lock,
 * happens on this one connection: if it dies, its user lock and its open claim go with it, so
 * a deposed leader has no way left to delete rows (fencing by construction).
 */
export class MysqlRelayStore implements RelayStore {
  readonly #options: MysqlRelayStoreOptions
  #session: MysqlSession | undefined
  #healthy = false
  /** Single/exclusive: this session holds the leader lock. Concurrent: one of the member locks. */
  #leader = false
  #heldBy: 'leader' | 'concurrent' | undefined
  #inClaim = false
  /** The open claim ended with its session (see `noOpenClaim`); cleared by the next claim. */
  #claimLost = false
  /** Statements of this store on their way; a claim's heartbeat waits for none. */
  #busy = 0
  /** Counts claims, so a heartbeat stops with the claim it was started for. */
  #claims = 0
  /** The server's id of this session's connection, by which a companion checks that its primary leads. */
  #connectionId: number | undefined
  /** Set on a companion: the store whose leadership its claims rely on. */
  #primary: MysqlRelayStore | undefined
  /** The relay's other session (primary and companion know each other), whose rows claims leave out. */
  #sibling: MysqlRelayStore | undefined
  /** Ids of the open claim, until the statement that ends it has returned. */
  #held: readonly string[] = []
  /** Companion, single/exclusive: holds the fence on its session. */
  #fenced = false

  constructor(options: MysqlRelayStoreOptions) {
    this.#options = options
  }

  get healthy(): boolean {
    return this.#healthy
  }

  get heldBy(): 'leader' | 'concurrent' | undefined {
    return this.#heldBy
  }

  async connect(): Promise<void> {
    await this.close()
    // Every statement of the session must be answered in time, or the session is given up: a
    // relay behind a dead network would otherwise wait forever (see `withQueryTimeout`).
    const opened = await this.#options.connect().catch((error: unknown) => {
      throw relayStoreError(error, classifyFailure, qualified(this.#options.table))
    })
    const session = withQueryTimeout(opened, RELAY_QUERY_TIMEOUT_MS)
    session.onError(() => this.#markBroken(session))
    this.#session = session
    this.#healthy = true
    this.#leader = false
    const seconds = Math.max(1, Math.ceil(this.#options.sessionTimeout / 1000))
    // READ COMMITTED: the claim locks only the rows it returns (no gap or next-key locks that
    // would block producers' inserts for as long as Kafka takes), and holds no read view that
    // would keep InnoDB from purging the rows this relay deletes.
    await this.#run('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED')
    // MySQL has no portable "idle in transaction" timeout, so wait_timeout bounds every silence
    // of the session: a frozen relay (claim open or not) is disconnected, its claim rolled back,
    // its leader lock freed. net_read/net_write_timeout bound a relay that stalls in the middle
    // of a statement or of reading a result; the lock waits bound a relay queued behind someone
    // else's DDL (metadata lock) or row lock instead of waiting the default year.
    await this.#run(
      `SET SESSION wait_timeout = ${seconds}, net_read_timeout = ${seconds}, net_write_timeout = ${seconds}, innodb_lock_wait_timeout = ${seconds}, lock_wait_timeout = ${seconds}`,
    )
    const id = await this.#run('SELECT CONNECTION_ID() AS id')
    this.#connectionId = Number(id.rows[0]?.id)
  }

  async tryAcquireLeadership(): Promise<boolean> {
    if (this.#options.role === 'companion' && !this.#options.concurrent)
      throw internalError("a single/exclusive relay's companion never leads")
    if (this.#leader && this.#healthy) return true
    this.#leader = this.#options.concurrent ? await this.#joinConcurrent() : await this.#takeLeader()
    if (this.#leader) this.#heldBy = undefined
    return this.#leader
  }

  /**
   * MySQL's user locks are exclusive only, so the modes exclude each other the other way round
   * from PostgreSQL: a concurrent relay holds one of `MEMBER_LOCKS` member locks, and a leader
   * checks after taking the leader lock that none is held, while a concurrent relay checks after
   * taking its member lock that the leader lock is free. Whichever took its lock second sees the
   * other's and lets its own go, so the two can never both claim (at worst both retry).
   *
   * The fence counts as a member: a companion of a leader holds it (see `#enterFence`), so a new
   * leader waits until every session of the old one is gone. Its companion may hold rows of a
   * later batch that it could still send: a new leader resending the older batch after it would
   * put a key's messages out of order.
   */
  async #takeLeader(): Promise<boolean> {
    const leader = lockName(this.#options.table, 'leader')
    const taken = await this.#run('SELECT GET_LOCK(?, 0) AS leader', [leader])
    if (Number(taken.rows[0]?.leader) !== 1) {
      this.#heldBy = 'leader'
      return false
    }
    const members = memberLocks(this.#options.table)
    const used = await this.#run(
      `SELECT COALESCE(${members.map(() => 'IS_USED_LOCK(?)').join(', ')}) AS member, IS_USED_LOCK(?) AS fence`,
      [...members, lockName(this.#options.table, 'fence')],
    )
    const member = used.rows[0]?.member ?? null
    const fence = used.rows[0]?.fence ?? null
    if (member === null && fence === null) return true
    await this.#run('SELECT RELEASE_LOCK(?)', [leader])
    // The fence without a member: a session of the former leader (its companion) is still there.
    this.#heldBy = member === null ? 'leader' : 'concurrent'
    return false
  }

  /** Concurrent mode: a free member lock (tried from a random one on, in one statement), then the leader check. */
  async #joinConcurrent(): Promise<boolean> {
    const members = memberLocks(this.#options.table)
    const start = Math.floor(Math.random() * members.length)
    const order = members.map((_, i) => members[(start + i) % members.length] as string)
    const joined = await this.#run(
      `SELECT CASE ${order.map(() => 'WHEN GET_LOCK(?, 0) = 1 THEN ?').join(' ')} END AS member`,
      order.flatMap((name) => [name, name]),
    )
    const member = joined.rows[0]?.member
    if (typeof member !== 'string') {
      this.#heldBy = 'concurrent'
      return false
    }
    const free = await this.#run('SELECT IS_FREE_LOCK(?) AS free', [lockName(this.#options.table, 'leader')])
    if (Number(free.rows[0]?.free) === 1) return true
    await this.#run('SELECT RELEASE_LOCK(?)', [member])
    this.#heldBy = 'leader'
    return false
  }

  /**
   * A second session of this relay, for claiming ahead (`pipeline`). Its claims leave out the rows
   * this session holds, by id; the relay sends them only after this session's batch was
   * acknowledged by Kafka, and releases them if it was not, so per-key order holds.
   */
  companion(): MysqlRelayStore {
    if (this.#options.role === 'companion') throw internalError('a companion has no companion')
    const companion = new MysqlRelayStore({ ...this.#options, role: 'companion' })
    companion.#primary = this
    companion.#sibling = this
    this.#sibling = companion
    return companion
  }

  /**
   * Single/exclusive, companion: takes the fence, then checks that its primary's session still
   * holds the leader lock. In that order, a leader elected after the check finds the fence taken
   * (see `#takeLeader`) and waits for this session. If the primary no longer leads (its session
   * died before the relay noticed), the fence is let go and nothing is claimed.
   */
  async #enterFence(): Promise<boolean> {
    const fence = lockName(this.#options.table, 'fence')
    const result = await this.#run('SELECT GET_LOCK(?, 0) AS fenced, IS_USED_LOCK(?) AS leader', [
      fence,
      lockName(this.#options.table, 'leader'),
    ])
    const row = result.rows[0]
    const fenced = Number(row?.fenced) === 1
    const leading = this.#primary === undefined ? false : this.#primary.#holdsLock(row?.leader)
    if (fenced && leading) return true
    if (fenced) await this.#run('SELECT RELEASE_LOCK(?)', [fence])
    return false
  }

  /** This healthy session is the one `holder` (IS_USED_LOCK's answer) names. */
  #holdsLock(holder: unknown): boolean {
    return this.#healthy && this.#connectionId !== undefined && Number(holder) === this.#connectionId
  }

  /** A companion claims only once it holds what its mode requires on its own session (see above). */
  async #admitCompanion(): Promise<boolean> {
    if (this.#options.concurrent) return this.#leader || this.tryAcquireLeadership()
    if (!this.#fenced) this.#fenced = await this.#enterFence()
    return this.#fenced
  }

  /** The rows the relay's other session holds, left out of this session's claims. */
  #siblingHeld(): readonly string[] {
    const sibling = this.#sibling
    return sibling === undefined || !sibling.#healthy ? [] : sibling.#held
  }

  async claim(limit: number, maxBytes?: number): Promise<StoredMessage[]> {
    if (this.#inClaim) throw internalError('a claim is already open on this relay session')
    if (this.#options.role === 'companion' && !(await this.#admitCompanion())) return []
    await this.#run('START TRANSACTION')
    this.#inClaim = true
    this.#claimLost = false
    let rows: Record<string, unknown>[]
    try {
      const ids = this.#options.concurrent
        ? await this.#concurrentCandidates(limit, maxBytes)
        : withinBudget(
            (await this.#run(candidatesSql(this.#options.table, limit, this.#siblingHeld()))).rows,
            maxBytes,
          ).map((row) => String(row.id))
      rows =
        ids.length === 0
          ? []
          : (await this.#run(claimIdsSql(this.#options.table, ids, this.#options.concurrent))).rows
    } catch (error) {
      await this.abandon().catch(() => {})
      throw error
    }
    if (rows.length === 0) {
      await this.#endClaim('COMMIT')
      return []
    }
    this.#held = rows.map((row) => String(row.id))
    // The server ends a session silent for `sessionTimeout`; a healthy relay whose batch is slow
    // in Kafka keeps its claim (see `keepClaimAlive`).
    const claim = ++this.#claims
    keepClaimAlive(
      this.#options.claimTimeout ?? this.#options.sessionTimeout,
      this.#options.sessionTimeout,
      () => this.#inClaim && this.#healthy && this.#claims === claim,
      () => this.#busy === 0,
      () => this.#run('SELECT 1'),
    )
    return rows.map(toMessage)
  }

  /**
   * A key's messages must only ever be held by one relay, or a relay could send a younger message
   * of a key while another still holds an older one. So the claim reads the oldest candidates,
   * locks the claim slot of each of their keys that no other relay holds (once per key, for the
   * whole claim), and takes only rows of keys it won, plus keyless rows. A row another relay
   * deleted or failed since the candidates were read drops out when it is locked; rows committed
   * since have higher ids than every candidate of their key (producers serialise per key), so
   * what this relay takes is always the oldest unsent part of each key it holds.
   */
  async #concurrentCandidates(limit: number, maxBytes: number | undefined): Promise<string[]> {
    const table = this.#options.table
    const candidates = (await this.#run(candidatesSql(table, limit * 2, this.#siblingHeld()))).rows
    const slots = new Set<number>()
    for (const row of candidates) {
      if (row.ordering_hash !== null) slots.add(keyLockSlot(Number(row.ordering_hash)))
    }
    const won = new Set<number>()
    if (slots.size > 0) {
      const sorted = [...slots].sort((a, b) => a - b)
      for (const row of (await this.#run(claimSlotsSql(table, sorted))).rows) won.add(Number(row.slot))
    }
    // A prefix of the candidates in id order, so what is taken of each key is its oldest part.
    const mine = candidates
      .filter((row) => row.ordering_hash === null || won.has(keyLockSlot(Number(row.ordering_hash))))
      .slice(0, limit)
    return withinBudget(mine, maxBytes).map((row) => String(row.id))
  }

  async complete(acknowledged: readonly string[], failures?: readonly FailedDelivery[]): Promise<void> {
    if (!this.#inClaim) throw noOpenClaim('complete()', this.#claimLost)
    for (const statement of failureStatements(this.#options.table, failures ?? [])) {
      await this.#run(statement.text, statement.values)
    }
    if (acknowledged.length > 0) await this.#run(deleteSql(this.#options.table, acknowledged))
    await this.#endClaim('COMMIT')
  }

  async abandon(): Promise<void> {
    if (!this.#inClaim) return
    await this.#endClaim('ROLLBACK')
  }

  /** The late answer for held rows (see `RelayStore.completeHeld`), outside any claim. */
  async completeHeld(acknowledged: readonly string[], failures?: readonly FailedDelivery[]): Promise<void> {
    if (this.#inClaim) throw internalError('completeHeld() while a claim is open on this relay session')
    for (const statement of failureStatements(this.#options.table, failures ?? [])) {
      await this.#run(statement.text, statement.values)
    }
    if (acknowledged.length > 0) await this.#run(deleteSql(this.#options.table, acknowledged))
  }

  waitForWork(ms: number, signal: AbortSignal): Promise<void> {
    return waitOrAbort(ms, signal)
  }

  async close(): Promise<void> {
    const session = this.#session
    this.#session = undefined
    this.#healthy = false
    this.#leader = false
    this.#fenced = false
    this.#loseClaim()
    if (session) await session.end().catch(() => {})
  }

  async #endClaim(sql: string): Promise<void> {
    try {
      await this.#run(sql)
    } finally {
      this.#inClaim = false
      this.#held = []
    }
  }

  async #run(text: string, values?: unknown[]): Promise<MysqlResult> {
    const session = this.#session
    if (!session || !this.#healthy) {
      throw new KEntityError(ErrorCodes.STORE_FAILED, 'the relay has no usable database session', {
        retryable: true,
      })
    }
    this.#busy++
    try {
      return await session.query(text, values)
    } catch (error) {
      const explained = relayStoreError(error, classifyFailure, qualified(this.#options.table))
      if (isKEntityError(explained, ErrorCodes.NOT_MIGRATED)) throw explained
      // After any other failure the session's state (open transaction, lock) is uncertain: drop
      // it and let the relay reconnect, rather than guess.
      this.#markBroken(session)
      await session.end().catch(() => {})
      throw explained
    } finally {
      this.#busy--
    }
  }

  #markBroken(session: MysqlSession): void {
    if (this.#session !== session) return
    this.#healthy = false
    this.#leader = false
    this.#fenced = false
    this.#loseClaim()
  }

  #loseClaim(): void {
    this.#claimLost ||= this.#inClaim
    this.#inClaim = false
    this.#held = []
  }
}
