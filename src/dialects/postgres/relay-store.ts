import { ErrorCodes, internalError, KEntityError } from '../../core/errors.ts'
import type { StoredMessage } from '../../core/record.ts'
import { messageBytes } from '../../core/relay/batch-size.ts'
import type { FailedDelivery, OutboxTable, RelayStore } from '../../core/seams.ts'
import { keepClaimAlive, RELAY_QUERY_TIMEOUT_MS } from '../relay-session.ts'
import { noOpenClaim, relayStoreError } from '../shared/relay-store-errors.ts'
import { decodeHeaders } from '../shared/stored-columns.ts'
import { BinaryClaimDecoder, binaryClaimSql } from './binary-claim.ts'
import { ClaimFloor } from './claim-floor.ts'
import { classifyFailure } from './errors.ts'
import { lockClass, qualified, wakeChannel } from './names.ts'
import {
  claimSilence,
  lastResult,
  type PgQueryResult,
  type PgSession,
  RELAY_KEEPALIVE_SETTINGS,
  relayQueryTimeout,
  withQueryTimeout,
} from './session.ts'
import { CLAIM_COLUMNS, claimSql, deleteSql, failuresStatement, type UnlockedClaim } from './sql.ts'

export interface PostgresRelayStoreOptions {
  table: OutboxTable
  /** Opens a new dedicated session (never a pooled one: the leader lock lives on it). */
  connect: () => Promise<PgSession>
  /**
   * Longest a claim may stay open, in ms. PostgreSQL itself ends a session that sits in a
   * claim longer than this, releasing its rows, so a stalled relay cannot hold messages forever.
   */
  claimTimeout: number
  /**
   * Exclusive mode: PostgreSQL ends the session of a relay that sends nothing for this long, so
   * a frozen leader loses its lock within a bounded time. 0 disables it.
   */
  sessionIdleTimeout: number
  /** Several relays share the outbox: claims also take per-key locks (see `claimSql`). */
  concurrent: boolean
  /** Concurrent mode: the claims' try-locks are per slot of this many, not per key (relay option `claimSlots`). */
  claimSlots?: number
  /** LISTEN for commit notifications so an idle relay wakes at once instead of at its next poll. */
  listen: boolean
  /**
   * With `listen`: while notifications come, a batch that found messages is followed by a claim
   * at once instead of after `NOTIFIED_POLL_MS` (relay option `listen: 'eager'`).
   */
  eagerClaims?: boolean
  /**
   * Single and exclusive mode: the relay leads through the leader lock, and its claims are fenced
   * so a new leader never overtakes its sessions.
   */
  exclusive: boolean
  /**
   * A second session claiming the next batch while the first one's batch is in Kafka's hands
   * (see `companion()`); never the one holding the leader lock.
   */
  role?: 'primary' | 'companion'
  /** Shared by a relay's sessions: the lowest id its claims look at (see `ClaimFloor`). */
  floor?: ClaimFloor
  /**
   * Single and exclusive mode: claims lock their rows (`FOR UPDATE SKIP LOCKED`) as concurrent
   * ones do. Default false: the leader lock and the fence already keep other relays out, and the
   * row locks cost as much WAL as the delete (see `UnlockedClaim`). Ignored in concurrent mode,
   * whose claims always lock.
   */
  rowLocks?: boolean
}

/**
 * After the batch a notification caused, the relay polls at least this often (ms) for
 * `NOTIFIED_FOR_MS`, and as long as notifications keep coming. Writers space their NOTIFYs
 * (`NOTIFY_SPACING_MS`), so a transaction may commit without one just after the poll its
 * neighbour's NOTIFY caused: these polls find it, instead of the next poll by the interval. That
 * covers every transaction that commits within `NOTIFIED_FOR_MS` of the one whose NOTIFY it
 * skipped; later ones (and those whose neighbour rolled back) wait for the polling interval.
 */
const NOTIFIED_POLL_MS = 5
/** The other session's rows are left out of a budget's sum by id once they weigh a quarter of it. */
const HELD_SHARE_WORTH_EXCLUDING = 4
const NOTIFIED_FOR_MS = 100

/**
 * Set on every relay session. A claim-floor statement needs a snapshot of its own, whatever the
 * server's default isolation. The claim must read the primary key in order, never scan the heap:
 * after a large backlog was drained and vacuumed, the table keeps its size with a few live rows,
 * and when the estimate of live rows comes close to the batch size the planner may prefer a
 * sequential scan and a sort, which reads the whole empty heap at every poll. Sequential scans
 * stay possible where nothing else is (PostgreSQL only discourages them, by a huge cost). And no
 * JIT: the relay's statements are small, but a large table's estimates (or that huge cost on the
 * unavoidable scan of a sequence) pass `jit_above_cost`, and compiling took 45-90 ms, at every
 * claim-floor step in bench scenario 3 (p99 at 1,000 msg/s 38-48 ms against 14-15 ms without).
 */
export const RELAY_PLANNER_SETTINGS =
  "SET default_transaction_isolation = 'read committed'; SET enable_seqscan = off; SET jit = off"

/**
 * One relay's PostgreSQL session. Everything the relay does, including holding the leader
 * lock, happens on this one session: if it dies, its locks and its open claim go with it, so a
 * deposed leader has no way left to delete rows (fencing by construction).
 */
export class PostgresRelayStore implements RelayStore {
  readonly #options: PostgresRelayStoreOptions
  #session: PgSession | undefined
  #healthy = false
  /** Single/exclusive: this session holds the leader lock. Concurrent: it holds its share of it. */
  #leader = false
  /** Why the last attempt to lead (or, concurrent, to join) failed. */
  #heldBy: 'leader' | 'concurrent' | 'claim-locks' | undefined
  #inClaim = false
  /** The open claim ended with its session (see `noOpenClaim`); cleared by the next claim. */
  #claimLost = false
  /** Companion in exclusive mode: holds the fence (shared) on this session. */
  #fenced = false
  /** The server process of this session, by which a companion checks that its primary leads. */
  #pid: number | undefined
  /** Set on a companion: the store whose leadership its claims rely on. */
  #primary: PostgresRelayStore | undefined
  /** The relay's other session (primary and companion know each other), whose rows a budgeted claim leaves out. */
  #sibling: PostgresRelayStore | undefined
  /** Ids of the open claim, for the sibling's budgeted claims (see `ClaimBudget.held`). */
  #held: readonly string[] = []
  /** Bytes of the open claim, counted as the budget counts them. */
  #heldBytes = 0
  /** A commit notification arrived since the last claim started. */
  #notified = false
  /** A commit notification arrived since the relay last began to wait. */
  #notifiedSinceWait = false
  /** Until when the relay polls every `NOTIFIED_POLL_MS`. */
  #activeUntil = Number.NEGATIVE_INFINITY
  #onNotify: (() => void) | undefined
  /** Client-side limit on each query of the session, in ms (see `withQueryTimeout`). */
  #queryTimeout = RELAY_QUERY_TIMEOUT_MS
  /** Queries of this store on their way; a claim's heartbeat waits for none. */
  #busy = 0
  /** Counts claims, so a heartbeat stops with the claim it was started for. */
  #claims = 0
  /** The claim on its way on this session (settled once its rows are in `#held`). */
  #claiming: Promise<void> | undefined

  readonly #floor: ClaimFloor

  constructor(options: PostgresRelayStoreOptions) {
    this.#floor = options.floor ?? new ClaimFloor(options.table)
    this.#options = { ...options, floor: this.#floor }
  }

  get healthy(): boolean {
    return this.#healthy
  }

  get heldBy(): 'leader' | 'concurrent' | 'claim-locks' | undefined {
    return this.#heldBy
  }

  async connect(): Promise<void> {
    await this.close()
    // Every query of the session must be answered in time, or the session is given up: a relay
    // behind a dead network would otherwise wait forever (see `withQueryTimeout`).
    this.#queryTimeout = RELAY_QUERY_TIMEOUT_MS
    const opened = await this.#options.connect().catch((error: unknown) => {
      throw relayStoreError(error, classifyFailure, qualified(this.#options.table))
    })
    const session = withQueryTimeout(opened, () => this.#queryTimeout)
    session.on('error', () => this.#markBroken(session))
    session.on('notification', () => {
      if (this.#session !== session) return
      this.#notified = true
      this.#notifiedSinceWait = true
      this.#onNotify?.()
    })
    this.#session = session
    // The table may have been dropped and created again while the relay was away. (A companion
    // connects while its primary relays: the floor they share stays.)
    if (this.#options.role !== 'companion') this.#floor.reset()
    this.#healthy = true
    this.#leader = false
    this.#fenced = false
    const listen = this.#options.listen ? `; LISTEN ${wakeChannel(this.#options.table)}` : ''
    const started = await this.#run(
      `${RELAY_PLANNER_SETTINGS}; SET idle_in_transaction_session_timeout = ${claimSilence(this.#options.claimTimeout)}; SET idle_session_timeout = ${Math.trunc(this.#options.sessionIdleTimeout)}; SET bytea_output = hex; ${RELAY_KEEPALIVE_SETTINGS}${listen}; SELECT pg_backend_pid() AS pid, (SELECT setting FROM pg_settings WHERE name = 'statement_timeout') AS statement_timeout`,
    )
    this.#pid = started.rows[0]?.pid as number | undefined
    this.#queryTimeout = relayQueryTimeout(Number(started.rows[0]?.statement_timeout ?? 0))
    // Whatever was committed while no one listened is found by the first claim.
    this.#notified = true
  }

  /**
   * The leader lock, then the fence. Every session of the leading relay holds the fence shared
   * (the companion takes it at its first claim), so a new leader, which needs the fence exclusive
   * for a moment, waits until every session of the old leader is gone: its companion may still
   * hold rows of a later batch, and skipping them would send a key's younger messages first.
   */
  async tryAcquireLeadership(): Promise<boolean> {
    if (this.#leader && this.#healthy) return true
    this.#leader = this.#options.concurrent ? await this.#joinConcurrent() : await this.#takeLeaderAndFence()
    if (this.#leader) this.#heldBy = undefined
    return this.#leader
  }

  /**
   * The leader lock is taken exclusively by a single/exclusive leader and shared by every
   * session of every concurrent relay, so the two kinds of relay exclude each other (a
   * concurrent relay's claims take per-key locks a leader's claims do not look at) while
   * concurrent relays share the outbox. Who holds it is read from pg_locks (which scans the
   * server's lock table) only at the first refusal of a wait, for the relay's one line about it:
   * a standby's later attempts cost one try-lock each.
   */
  async #takeLeaderAndFence(): Promise<boolean> {
    const leader = lockClass(this.#options.table, 'leader')
    const result = await this.#run(`SELECT pg_try_advisory_lock(${leader}, 0) AS leader`)
    if (result.rows[0]?.leader !== true) {
      if (this.#heldBy === undefined) {
        const holder = await this.#run(
          `SELECT CASE WHEN bool_or(mode = 'ExclusiveLock') THEN 'leader' WHEN bool_or(mode = 'ShareLock') THEN 'concurrent' ELSE 'leader' END AS holder FROM ${advisoryLocks(leader)}`,
        )
        this.#heldBy = holder.rows[0]?.holder === 'concurrent' ? 'concurrent' : 'leader'
      }
      return false
    }
    const fence = `${lockClass(this.#options.table, 'fence')}, 0`
    const free = await this.#run(
      `SELECT CASE WHEN pg_try_advisory_lock(${fence}) THEN pg_advisory_unlock(${fence}) ELSE false END AS free`,
    )
    if (free.rows[0]?.free !== true) {
      await this.#run(`SELECT pg_advisory_unlock(${leader}, 0)`)
      this.#heldBy = 'leader'
      return false
    }
    await this.#run(`SELECT pg_advisory_lock_shared(${fence})`)
    return true
  }

  /**
   * Concurrent mode: a share of the leader lock, on every session of the relay (a companion
   * too: it holds rows of its own, which a leader must not overtake). Once granted, no leader can
   * start until it is let go; a former leader's session that still holds the fence may still
   * hold claimed rows, so the relay waits for it to be gone, as a new leader would.
   *
   * Relays whose claims lock keys and relays whose claims lock slots (`claimSlots`), or slots of
   * another count, would not see each other's locks, so they exclude each other here. A relay
   * locking slots also holds a share of the leader lock's slot-count entry (objid = the count);
   * a relay locking keys holds none. After taking its own locks, each reads pg_locks: a relay
   * locking keys backs off if any slot-count entry is held, one locking slots if a concurrent
   * session holds the leader lock without its own slot count (a relay locking keys, of this
   * version or an earlier one) or another slot count is held. Each reads after its own
   * distinguishing lock is granted, so of two relays of different kinds joining at once at
   * least one sees the other. A relay of an earlier version that joins after a relay locking
   * slots does not read: every relay must run a version that knows `claimSlots` before any
   * uses it.
   */
  async #joinConcurrent(): Promise<boolean> {
    const leader = lockClass(this.#options.table, 'leader')
    const fence = lockClass(this.#options.table, 'fence')
    const slots = this.#options.claimSlots === undefined ? undefined : Math.trunc(this.#options.claimSlots)
    const entries = (objid: string) => `${advisoryLocks(leader, objid)} AND mode = 'ShareLock'`
    // Lock statements run in CASE so that they run in order, and the pg_locks reads (InitPlans,
    // run when first needed) after them.
    const state =
      slots === undefined
        ? `CASE WHEN NOT pg_try_advisory_lock_shared(${leader}, 0) THEN 'leader'
  WHEN EXISTS (SELECT 1 FROM ${advisoryLocks(fence)}) THEN CASE WHEN pg_advisory_unlock_shared(${leader}, 0) THEN 'fenced' END
  WHEN EXISTS (SELECT 1 FROM ${entries('<> 0')}) THEN CASE WHEN pg_advisory_unlock_shared(${leader}, 0) THEN 'claim-locks' END
  ELSE 'joined' END`
        : // The slot count's entry first: a session of a relay locking slots never holds the
          // leader lock's share without it, so two such relays joining at once never mistake
          // each other for a relay locking keys.
          `CASE WHEN NOT pg_try_advisory_lock_shared(${leader}, ${slots}) THEN 'leader'
  WHEN NOT pg_try_advisory_lock_shared(${leader}, 0) THEN CASE WHEN pg_advisory_unlock_shared(${leader}, ${slots}) THEN 'leader' END
  WHEN EXISTS (SELECT 1 FROM ${advisoryLocks(fence)}) THEN ${leaveSlots(leader, slots, 'fenced')}
  WHEN EXISTS (SELECT 1 FROM ${entries(`NOT IN (0, ${slots})`)})
    OR EXISTS (SELECT 1 FROM ${entries('= 0')} AND pid NOT IN (SELECT pid FROM ${entries(`= ${slots}`)}))
    THEN ${leaveSlots(leader, slots, 'claim-locks')}
  ELSE 'joined' END`
    const result = await this.#run(`SELECT ${state} AS state`)
    const joined = result.rows[0]?.state
    if (joined === 'joined') return true
    this.#heldBy = joined === 'claim-locks' ? 'claim-locks' : 'leader'
    return false
  }

  /**
   * A second session of this relay, for claiming ahead. Its claims skip the rows this session
   * holds; the relay sends them only after this session's batch was acknowledged by Kafka, and
   * drops them if it was not, so per-key order holds.
   */
  companion(): PostgresRelayStore {
    const companion = new PostgresRelayStore({ ...this.#options, listen: false, role: 'companion' })
    companion.#primary = this
    companion.#sibling = this
    this.#sibling = companion
    return companion
  }

  /**
   * Exclusive mode, companion: takes the fence (shared), then checks that its primary's session
   * still holds the leader lock. In that order, a leader elected after the check must pass the
   * fence after it, and so waits for this session. If the primary no longer leads (its session
   * died before the relay noticed), the fence is let go and nothing is claimed.
   */
  async #enterFence(): Promise<boolean> {
    const fence = `${lockClass(this.#options.table, 'fence')}, 0`
    const leader = lockClass(this.#options.table, 'leader') >>> 0
    const pid = (this.#primary === undefined ? undefined : this.#primary.#pid) ?? 0
    const result = await this.#run(
      `SELECT pg_advisory_lock_shared(${fence}); SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND mode = 'ExclusiveLock' AND pid = ${Math.trunc(pid)} AND classid::text::bigint = ${leader} AND objid::text::bigint = 0 AND objsubid = 2) AS leading`,
    )
    if (result.rows[0]?.leading === true) return true
    await this.#run(`SELECT pg_advisory_unlock_shared(${fence})`)
    return false
  }

  async claim(limit: number, maxBytes?: number): Promise<StoredMessage[]> {
    if (this.#inClaim) throw internalError('a claim is already open on this relay session')
    this.#notified = false
    if (this.#options.role === 'companion' && !(await this.#admitCompanion())) return []
    return this.#openClaim('BEGIN', limit, maxBytes)
  }

  /**
   * Runs `before` and then the claim in one query, and holds what it claimed (an empty claim is
   * committed). As binary COPY where the session can read it, as rows otherwise.
   */
  async #openClaim(before: string, limit: number, maxBytes?: number): Promise<StoredMessage[]> {
    // Without row locks nothing in the database keeps the two sessions' claims apart, only the
    // ids each leaves out: a claim must not start while the other session's is on its way (the
    // pipeline never overlaps them; this keeps it so whatever calls the store).
    // Awaited only when there is one: an await here would hold the query back until the caller's
    // send has encoded its batch (see `Pipeline.#claimAhead`).
    const other = this.#sibling === undefined ? undefined : this.#sibling.#claiming
    if (other !== undefined && this.#unlocked() !== undefined) await other
    const claiming = this.#claimNow(before, limit, maxBytes)
    const settled = claiming.then(
      () => {},
      () => {},
    )
    this.#claiming = settled
    void settled.then(() => {
      if (this.#claiming === settled) this.#claiming = undefined
    })
    return claiming
  }

  async #claimNow(before: string, limit: number, maxBytes?: number): Promise<StoredMessage[]> {
    if (this.#floor.due()) await this.#floor.step((text) => this.#run(text))
    const claim = this.#claimSql(limit, maxBytes)
    const messages = await this.#use((session) => readClaim(session, `${before}; `, claim))
    this.#inClaim = true
    this.#claimLost = false
    this.#held = messages.map((message) => message.id)
    this.#heldBytes = maxBytes === undefined ? 0 : messages.reduce((sum, m) => sum + messageBytes(m), 0)
    if (messages.length === 0) await this.#endClaim('COMMIT')
    else {
      // The server ends a claim that stays silent for `claimSilence`; a healthy relay whose batch
      // is slow in Kafka keeps it (see `keepClaimAlive`).
      const claim = ++this.#claims
      keepClaimAlive(
        this.#options.claimTimeout,
        claimSilence(this.#options.claimTimeout),
        () => this.#inClaim && this.#healthy && this.#claims === claim,
        () => this.#busy === 0,
        () => this.#run('SELECT 1'),
      )
    }
    return messages
  }

  /** A companion claims only once it holds what its mode requires on its own session (see above). */
  async #admitCompanion(): Promise<boolean> {
    if (this.#options.concurrent) return this.#leader || this.tryAcquireLeadership()
    if (!this.#options.exclusive || this.#fenced) return true
    this.#fenced = await this.#enterFence()
    return this.#fenced
  }

  #claimSql(limit: number, maxBytes: number | undefined): string {
    const unlocked = this.#unlocked()
    const budget = maxBytes === undefined ? undefined : { maxBytes, held: this.#siblingHeld(maxBytes) }
    return claimSql(
      this.#options.table,
      limit,
      this.#options.concurrent,
      this.#floor.start,
      budget,
      unlocked,
      this.#options.claimSlots,
    )
  }

  /**
   * A claim without row locks, which leaves out by id every row the relay's other session holds:
   * from its claim until the statement that ends it (delete and COMMIT) has returned, even while
   * that statement runs, since a row it deletes stays visible to a snapshot taken before its
   * COMMIT. Once that session is lost its rows are no longer left out, as its row locks would be
   * gone with it: a batch it claimed ahead is dropped unsent (see `Pipeline.relay`), one already
   * on its way to Kafka is sent again by the next claim, oldest first (duplicates, in key order,
   * as after any failed delete), and a delete its last statement may still commit on the server
   * removes only rows Kafka acknowledged.
   */
  #unlocked(): UnlockedClaim | undefined {
    if (this.#options.concurrent || !this.#options.exclusive || this.#options.rowLocks === true)
      return undefined
    const sibling = this.#sibling
    if (sibling === undefined || !sibling.#healthy) return { held: [] }
    return { held: sibling.#held }
  }

  /**
   * The ids the relay's other session holds in its open claim, when they are worth leaving out of
   * the budget's sum: only when they weigh a good part of the budget. Otherwise counting them
   * costs the batch little (the sum runs over twice the row limit, see `budgetedClaimSql`), while
   * a list of 500 ids costs every claim the parsing and probing of the list.
   */
  #siblingHeld(maxBytes: number): readonly string[] | undefined {
    const sibling = this.#sibling
    if (sibling === undefined || !sibling.#inClaim) return undefined
    return sibling.#heldBytes * HELD_SHARE_WORTH_EXCLUDING > maxBytes ? sibling.#held : undefined
  }

  async complete(acknowledged: readonly string[], failures?: readonly FailedDelivery[]): Promise<void> {
    if (!this.#inClaim) throw noOpenClaim('complete()', this.#claimLost)
    if (failures !== undefined && failures.length > 0) {
      const statement = failuresStatement(this.#options.table, failures)
      await this.#run(statement.text, statement.values)
      this.#floor.noteRetried()
    }
    await this.#endClaim(
      acknowledged.length > 0 ? `${deleteSql(this.#options.table, acknowledged)}; COMMIT` : 'COMMIT',
    )
    this.#floor.noteDeleted(acknowledged.length)
  }

  /**
   * The delete and COMMIT of the open claim, then BEGIN and the next claim, as one simple query:
   * the pipelined relay's steady state costs one round trip per batch on each session. If it
   * fails, the session is dropped: the delete either committed or is rolled back with the claim.
   */
  async completeAndClaim(
    acknowledged: readonly string[],
    limit: number,
    maxBytes?: number,
  ): Promise<StoredMessage[]> {
    if (!this.#inClaim) throw noOpenClaim('completeAndClaim()', this.#claimLost)
    const fenceFirst =
      this.#options.role === 'companion' &&
      (this.#options.concurrent ? !this.#leader : this.#options.exclusive && !this.#fenced)
    if (acknowledged.length === 0 || fenceFirst) {
      await this.complete(acknowledged)
      return this.claim(limit, maxBytes)
    }
    this.#notified = false
    // The open claim ends here: by the query's COMMIT, or with the session if the query fails.
    this.#inClaim = false
    const messages = await this.#openClaim(
      `${deleteSql(this.#options.table, acknowledged)}; COMMIT; BEGIN`,
      limit,
      maxBytes,
    )
    this.#floor.noteDeleted(acknowledged.length)
    return messages
  }

  async abandon(): Promise<void> {
    if (!this.#inClaim) return
    await this.#endClaim('ROLLBACK')
  }

  /** The late answer for held rows (see `RelayStore.completeHeld`), outside any claim. */
  async completeHeld(acknowledged: readonly string[], failures?: readonly FailedDelivery[]): Promise<void> {
    if (this.#inClaim) throw internalError('completeHeld() while a claim is open on this relay session')
    if (failures !== undefined && failures.length > 0) {
      const statement = failuresStatement(this.#options.table, failures)
      await this.#run(statement.text, statement.values)
      this.#floor.noteRetried()
    }
    if (acknowledged.length === 0) return
    await this.#run(deleteSql(this.#options.table, acknowledged))
    this.#floor.noteDeleted(acknowledged.length)
  }

  waitForWork(ms: number, signal: AbortSignal, found = 0): Promise<void> {
    // A standby waits only to try the leader lock again: commits are the leader's to relay, and
    // waking it for each would turn every NOTIFY into a lock attempt.
    const standby = !this.#leader
    const now = performance.now()
    // Counted from the end of the batch, not from the notification: the batch (its first send to
    // a topic can take 300 ms) must not use up the window in which neighbours commit.
    if (this.#notifiedSinceWait) this.#activeUntil = now + NOTIFIED_FOR_MS
    this.#notifiedSinceWait = false
    const active = now < this.#activeUntil && !standby
    if (active) ms = Math.min(ms, NOTIFIED_POLL_MS)
    return new Promise<void>((resolve) => {
      // Eager: while commits flow, a batch that found messages is followed by a claim at once, so
      // whatever committed during its claim and send waits for no timer: at 1,000 msg/s the 5 ms
      // poll was most of the wait between COMMIT and the claim. It ends with the first empty
      // claim, so an idle relay polls no more than without it.
      const eager = active && found > 0 && this.#options.eagerClaims === true
      if (signal.aborted || (this.#notified && !standby) || eager) return resolve()
      const timer = setTimeout(done, ms)
      signal.addEventListener('abort', done, { once: true })
      if (!standby) this.#onNotify = done
      // Notifications arriving while a batch runs are folded into one flag, so a burst of
      // commits costs one extra poll, not one per commit.
      function done() {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        resolve()
      }
    }).finally(() => {
      this.#onNotify = undefined
    })
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
      this.#heldBytes = 0
    }
  }

  async #run(text: string, values?: unknown[]): Promise<PgQueryResult> {
    return lastResult(
      await this.#use((session) =>
        values === undefined ? session.query(text) : session.query(text, values),
      ),
    )
  }

  /** Runs `work` on the session; any failure drops the session (see below). */
  async #use<R>(work: (session: PgSession) => Promise<R>): Promise<R> {
    const session = this.#session
    if (!session || !this.#healthy) {
      throw new KEntityError(ErrorCodes.STORE_FAILED, 'the relay has no usable database session', {
        retryable: true,
      })
    }
    this.#busy++
    try {
      return await work(session)
    } catch (error) {
      // After any failure the session's state (open transaction, lock) is uncertain: drop it and
      // let the relay reconnect, rather than guess.
      this.#markBroken(session)
      await session.end().catch(() => {})
      throw relayStoreError(error, classifyFailure, qualified(this.#options.table))
    } finally {
      this.#busy--
    }
  }

  #markBroken(session: PgSession): void {
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
    this.#heldBytes = 0
  }
}

/** The granted advisory locks `(lockClass, 0)` of this database, in any session. */
/** Lets go of both shares a relay locking `slots` slots joined with, answering `state`. */
function leaveSlots(leader: number, slots: number, state: string): string {
  return `CASE WHEN pg_advisory_unlock_shared(${leader}, 0) THEN CASE WHEN pg_advisory_unlock_shared(${leader}, ${slots}) THEN '${state}' END END`
}

/** The granted advisory locks of (`lockClass`, an objid matching `objid`) in this database. */
function advisoryLocks(lockClass: number, objid = '= 0'): string {
  return `pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND classid::text::bigint = ${lockClass >>> 0} AND objid::text::bigint ${objid} AND objsubid = 2`
}

/**
 * node-postgres returns the claim's rows as arrays of the columns' text, decoded below: building
 * a row object and running the generic type parsers for every row took about a fifth of the
 * relay's CPU time spent reading a claim. Other drivers ignore both fields and return objects.
 */
const columnText = (text: string) => text
const RAW_ARRAY_ROWS = { rowMode: 'array', types: { getTypeParser: () => columnText } } as const

/** Runs `before` (statements ending in "; ") and then `claim` in one query; returns the claimed messages. */
async function readClaim(session: PgSession, before: string, claim: string): Promise<StoredMessage[]> {
  if (session.copyOut !== undefined) {
    const decoder = new BinaryClaimDecoder()
    await session.copyOut(`${before}${binaryClaimSql(claim)}`, (chunk) => decoder.push(chunk))
    return decoder.messages
  }
  const result = lastResult(await session.query({ text: `${before}${claim}`, ...RAW_ARRAY_ROWS }))
  return (result.rows as unknown[] as (unknown[] | Record<string, unknown>)[]).map(toMessage)
}

/** A claimed row: an array of raw column text (node-postgres) or an object of parsed values. */
function toMessage(row: unknown[] | Record<string, unknown>): StoredMessage {
  const [id, topic, key, value, headers, orderingHash, attempts] = Array.isArray(row)
    ? row
    : CLAIM_COLUMNS.map((column) => row[column])
  return {
    id: String(id),
    topic: String(topic),
    key: bytes(key),
    value: bytes(value),
    headers: decodeHeaders(headers),
    orderingHash: orderingHash === null || orderingHash === undefined ? null : Number(orderingHash),
    attempts: Number(attempts),
  }
}

/** bytea as a driver returns it: a Buffer, or the text of the hex format (the session sets bytea_output). */
function bytes(value: unknown): Buffer | null {
  if (value === null || value === undefined) return null
  if (typeof value === 'string') {
    if (!value.startsWith('\\x'))
      throw internalError(`bytea in an unexpected text format: ${value.slice(0, 16)}`)
    return Buffer.from(value.slice(2), 'hex')
  }
  return value as Buffer
}
