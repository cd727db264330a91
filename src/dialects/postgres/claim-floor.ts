import type { OutboxTable } from '../../core/seams.ts'
import { qualified } from './names.ts'
import type { PgQueryResult } from './session.ts'
import { type BlockedRun, type ClaimStart, claimScan, RETRY_WAITING, scanStart, WAITING } from './sql.ts'

/**
 * A lower bound for the claim's scan of the primary key: every id below it is gone for good.
 *
 * Why: a deleted row's index entry stays until VACUUM, and autovacuum visits a database at most
 * once per `autovacuum_naptime` (a minute by default). Until then every claim, which reads the
 * index from its start, walked over every row the relay had deleted since: with a backlog being
 * drained, that walk (`_bt_first` stepping over dead leaf pages) was the largest single cost of
 * PostgreSQL in the relay, and after a bulk delete the first claims took half a second.
 *
 * Why a bound by id is safe only with care: an id is taken when a producer inserts, and the row
 * becomes visible when that transaction commits, possibly much later, so "below the lowest live
 * id" can still receive rows (the trap of cursor-based relays). The bound is therefore advanced
 * in two steps, at least `STEP_MS` apart:
 * 1. Read the sequence's last value S, then the virtual transaction ids V of every transaction
 *    running in this database. Any id up to S was taken before V was read, so by a transaction
 *    that had finished by then or is in V.
 * 2. Once no transaction of V runs any more (and no prepared transaction waits), every id up to
 *    S is final: committed, and so visible to any later snapshot, or rolled back. A later
 *    statement's lowest live id up to S (or S + 1 if there is none) is then the new bound.
 * A long transaction anywhere in the database holds step 2 back: claims then scan as before.
 * Requires sequence CACHE 1 (the identity's default): with a cache, a session could hand out an
 * id below S after V was read. Otherwise, or without the right to read the sequence, no bound.
 *
 * The same settled ids give a second, higher start while a retry holds rows back (`BlockedRun`):
 * a message waiting for its retry keeps the floor at its id, and every claim used to walk its
 * key's younger rows behind it, 100,000 rows of one key cost each claim 250 ms for the whole
 * backoff (bench/key-sweep.ts --only hol). A step after a retry walks them once, and claims start
 * past them for as long as each message that holds them back still waits. Only a few waiting
 * messages are worth a probe in every claim (`MAX_WAITING`): beyond that, claims walk as before.
 */
export class ClaimFloor {
  readonly #table: OutboxTable
  /** Lowest id a claim has to look at (decimal), once known. */
  #floor: string | undefined
  #pending: { last: string; running: string[] } | undefined
  #stepAt = Number.NEGATIVE_INFINITY
  /** Rows the relay deleted since the latest step. */
  #deletedSinceStep = 0
  /** Rows held back by a retry, past the floor (see `BlockedRun`). */
  #blocked: BlockedRun | undefined
  /**
   * Steps still taken `STEP_MS` apart while a blocked run may have formed that no settled step
   * has looked for. Armed two ways:
   * - the relay scheduled a retry (`EAGER_STEPS`);
   * - the relay starts (`STARTING_STEPS`), possibly behind an earlier relay's retries (the first
   *   claims of a relay started behind 100,000 rows of a waiting key took 1.2 s with its second
   *   step a second after the first). Those end at a step that finds no row waiting, so that a
   *   relay's start costs no more steps than before when nothing waits.
   * Bounded, so that a long transaction elsewhere, which keeps every step unsettled, does not keep
   * the relay stepping ten times a second.
   */
  #eager: { steps: number; whileWaiting: boolean } = { steps: STARTING_STEPS, whileWaiting: true }
  /** Every id up to it is final (see step 2 above), the bound of a blocked run's walk. */
  #settledLast: string | undefined
  #walkAt = Number.NEGATIVE_INFINITY
  /** Rows the relay deleted since the blocked run was last walked: its end can move. */
  #deletedSinceWalk = 0
  /** The last walk stopped at its `WALK_IDS` before the first row a claim could take. */
  #walkOpen = false
  /** The sequence's last value at the latest step: ids going back (a restarted sequence) drop the floor. */
  #lastSeen: bigint | undefined
  #busy = false
  /** The sequence's quoted name, or null when no bound can be kept; undefined until probed. */
  #sequence: string | null | undefined

  constructor(table: OutboxTable) {
    this.#table = table
  }

  /** The bound for the next claim, if there is one. */
  get value(): string | undefined {
    return this.#floor
  }

  /** Where the next claim's scan starts: the floor, and the rows a retry holds back past it. */
  get start(): ClaimStart | undefined {
    const floor = this.#floor
    if (floor === undefined) return undefined
    const blocked = this.#blocked
    return blocked === undefined || BigInt(blocked.past) <= BigInt(floor) ? floor : { floor, blocked }
  }

  /** The relay deleted rows: the bound can move. */
  noteDeleted(rows: number): void {
    this.#deletedSinceStep += rows
    this.#deletedSinceWalk += rows
  }

  /** The relay scheduled retries: rows behind them may be held back, worth a step to find. */
  noteRetried(): void {
    this.#eager = { steps: EAGER_STEPS, whileWaiting: false }
  }

  /** Forgets the floor (a new session may face a recreated table); the next steps find it again. */
  reset(): void {
    this.#floor = undefined
    this.#blocked = undefined
    this.#walkOpen = false
    this.#settledLast = undefined
    // Steps a retry armed go on; they outlast the start's.
    if (this.#eager.whileWaiting || this.#eager.steps === 0)
      this.#eager = { steps: STARTING_STEPS, whileWaiting: true }
    this.#pending = undefined
    this.#lastSeen = undefined
  }

  /**
   * A step is due once the relay deleted enough rows for their dead index entries to cost its
   * claims something, or every second otherwise: until a floor is known (a relay restarted after
   * a large delete needs it most), and then to notice a sequence that went back (TRUNCATE ...
   * RESTART IDENTITY), whose new rows would all be below the floor.
   */
  due(now = performance.now()): boolean {
    if (this.#busy || this.#sequence === null) return false
    return this.#stepDue(now) || this.#walkDue(now)
  }

  #stepDue(now: number): boolean {
    const since = now - this.#stepAt
    const eager = this.#eager.steps > 0
    return since >= (this.#deletedSinceStep >= STEP_ROWS || eager ? STEP_MS : IDLE_STEP_MS)
  }

  /**
   * The end of a blocked run moves as the relay deletes the rows after it, which are settled
   * already: walked on between steps, or with interleaved keys every claim would walk the rows
   * deleted since the last step and the waiting key's rows among them.
   */
  #walkDue(now: number): boolean {
    return (
      this.#blocked !== undefined &&
      (this.#deletedSinceWalk > 0 || this.#walkOpen) &&
      now - this.#walkAt >= WALK_MS
    )
  }

  /**
   * Takes one step on `run`'s session, each statement as a query of its own (each gets its own
   * snapshot). They only read; the first step runs each of them, so a server that refuses one
   * turns the floor off at the first claim instead of failing claims later.
   */
  async step(run: RunQuery): Promise<void> {
    if (this.#busy || this.#sequence === null) return
    this.#busy = true
    try {
      await this.#step(run)
    } catch (error) {
      // Refused by the server (a missing right, an unknown function): it would fail every claim,
      // so no floor. A lost connection is the session's problem, not the floor's.
      const code = (error as { code?: unknown }).code
      if (typeof code === 'string' && (code.startsWith('42') || code.startsWith('0A'))) this.#sequence = null
      throw error
    } finally {
      this.#busy = false
    }
  }

  async #step(run: RunQuery): Promise<void> {
    if (this.#sequence === undefined) this.#sequence = await probeSequence(this.#table, run)
    const sequence = this.#sequence
    if (sequence === null) return
    // Only the walk, when that alone is due; a step otherwise (also when called while not due).
    const now = performance.now()
    if (!this.#stepDue(now) && this.#walkDue(now)) return this.#walk(run)
    this.#stepAt = now
    const moved = this.#deletedSinceStep > 0 || this.#floor === undefined || this.#eager.steps > 0
    this.#eager.steps = Math.max(0, this.#eager.steps - 1)
    this.#deletedSinceStep = 0
    if (!moved) {
      // Nothing deleted and a floor known: only check that the sequence did not go back.
      const read = await run(lastValueSql(sequence, 'NULL', 'false'))
      this.#noteLast(String(read.rows[0]?.last))
      return
    }
    const pending = this.#pending
    // Run even with nothing pending, so the first step (on a claim outside a transaction) tries
    // every statement a later step uses inside one.
    const running =
      pending === undefined || pending.running.length === 0 ? "'{}'" : `'{${pending.running.join(',')}}'`
    const busy = await run(
      `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'virtualxid' AND virtualxid = ANY(${running}::text[])) OR EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE database = current_database()) AS busy`,
    )
    const settled = pending !== undefined && busy.rows[0]?.busy === false
    const from = claimScan(this.#floor, 'id').condition
    // After the check, in a statement of its own: its snapshot sees every commit of V.
    const low = settled
      ? `(SELECT min(id) FROM ${qualified(this.#table)} WHERE ${from}id <= ${pending.last})`
      : 'NULL'
    // Also drops this transaction's cached view of pg_stat_activity, read next.
    // Whether any row waits for a retry, in the same statement: no walk (and no round trip for
    // it) when none does, the usual case.
    const waits = `EXISTS (SELECT 1 FROM ${qualified(this.#table)} AS w WHERE ${WAITING('w')})`
    const read = await run(lastValueSql(sequence, low, waits))
    if (read.rows[0]?.waits !== true && this.#eager.whileWaiting) this.#eager.steps = 0
    const last = String(read.rows[0]?.last)
    if (!this.#noteLast(last)) return
    if (settled) {
      const found = read.rows[0]?.low
      const next = typeof found === 'string' ? BigInt(found) : BigInt(pending.last) + 1n
      if (this.#floor === undefined || next > BigInt(this.#floor)) this.#floor = next.toString()
      this.#settledLast = pending.last
      this.#eager.steps = 0
      if (read.rows[0]?.waits === true || this.#blocked !== undefined) await this.#walk(run)
    }
    // Read after the sequence: whatever took an id up to `last` has finished or is listed here.
    // Autovacuum never inserts into the outbox, and vacuuming a large table must not hold it back.
    const listed = await run(
      `SELECT coalesce(array_agg(l.virtualxid), '{}')::text[] AS running FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid WHERE l.locktype = 'virtualxid' AND l.granted AND a.datname = current_database() AND a.backend_type <> 'autovacuum worker' AND l.pid <> pg_backend_pid()`,
    )
    const noted = parseRunning(listed.rows[0]?.running)
    this.#pending = noted === undefined ? undefined : { last, running: noted }
  }

  /** Finds the blocked run again: on from its end while it holds, from the floor otherwise. */
  async #walk(run: RunQuery): Promise<void> {
    const floor = this.#floor
    const last = this.#settledLast
    this.#walkAt = performance.now()
    this.#deletedSinceWalk = 0
    this.#blocked =
      floor === undefined || last === undefined ? undefined : await this.#blockedRun(run, floor, last)
  }

  /**
   * The rows from `floor` that a retry holds back, up to the first row a claim could take (or the
   * last settled id): one statement, so the walk and the waiting rows it passed share a snapshot
   * and a `now()`. It starts where the previous run ended while that run still holds (every row of
   * it still waits), so each row is walked about once, however long the retry waits.
   */
  async #blockedRun(run: RunQuery, floor: string, last: string): Promise<BlockedRun | undefined> {
    const outbox = qualified(this.#table)
    const start = scanStart(
      this.#blocked === undefined ? floor : { floor, blocked: this.#blocked },
      this.#table,
    )
    // At most `WALK_IDS` ids per walk, so a walk's time is bounded however many rows wait; the
    // next walk goes on from where this one stopped (`open`).
    const read = await run(`WITH s AS (SELECT ${start} AS id, least(${start} + ${WALK_IDS}, ${last}) AS upto),
f AS MATERIALIZED (
  SELECT min(o.id) AS found FROM ${outbox} AS o
  WHERE o.id >= (SELECT id FROM s) AND o.id <= (SELECT upto FROM s) AND NOT (${WAITING('o')}) AND ${RETRY_WAITING(outbox)}
), r AS (
  SELECT coalesce(f.found, s.upto + 1) AS past, f.found IS NULL AND s.upto < ${last} AS open FROM s, f
)
SELECT r.past::text AS past, r.open, w.ids AS waiting, w.hashes
FROM r, LATERAL (
  SELECT array_to_string(array_agg(w.id ORDER BY w.id), ',') AS ids, array_to_string(array_agg(DISTINCT w.ordering_hash), ',') AS hashes
  FROM (
    SELECT w.id, w.ordering_hash FROM ${outbox} AS w WHERE ${WAITING('w')} AND w.id >= ${floor} AND w.id < r.past LIMIT ${MAX_WAITING + 1}
  ) AS w
) AS w`)
    const row = read.rows[0]
    const past = row?.past
    const waiting = typeof row?.waiting === 'string' ? row.waiting.split(',') : []
    this.#walkOpen = row?.open === true
    if (typeof past !== 'string' || !/^\d+$/.test(past) || BigInt(past) <= BigInt(floor)) return undefined
    if (waiting.length === 0 || waiting.length > MAX_WAITING) return undefined
    const hashes =
      typeof row?.hashes === 'string' && row.hashes !== '' ? row.hashes.split(',').map(Number) : []
    return { past, waiting, hashes }
  }

  /** Records the sequence's last value; false (and no floor any more) if it went back. */
  #noteLast(last: string): boolean {
    if (!/^-?\d+$/.test(last)) return false
    const value = BigInt(last)
    const previous = this.#lastSeen
    if (previous !== undefined && value < previous) {
      this.reset()
      return false
    }
    this.#lastSeen = value
    return true
  }
}

/**
 * Deleted rows after which a step may come sooner than once a second, but not sooner than
 * `STEP_MS`: a claim then walks at most a few leaf pages of dead entries, and a relay at 1,000
 * messages a second pays three small queries a second for it, not thirty.
 */
const STEP_ROWS = 2000
const STEP_MS = 100
/**
 * Waiting messages a blocked run may hang on: each costs every claim a primary-key probe. A few
 * keys retrying is the case worth it; a broken topic with thousands is not helped.
 */
const MAX_WAITING = 64
/** Ids a walk of a blocked run reads at most: 0.2-0.4 s of this machine's PostgreSQL at most. */
const WALK_IDS = 200_000
/** Steps taken `STEP_MS` apart after a retry, at most, until one is settled. */
const EAGER_STEPS = 10
/** The same at the start: the first step and the one that can settle it. */
const STARTING_STEPS = 2
/** How often a blocked run's end may be walked on while the relay deletes rows (ms). */
const WALK_MS = 20
/** How often a step is taken otherwise (ms). */
const IDLE_STEP_MS = 1000

/** The sequence's last value handed out (`low` first, evaluated in the same snapshot). */
function lastValueSql(sequence: string, low: string, waits: string): string {
  return `SELECT ${low}::text AS low, ${waits} AS waits, CASE WHEN is_called THEN last_value ELSE last_value - 1 END::text AS last, pg_stat_clear_snapshot() IS NULL AS cleared FROM ${sequence}`
}

const VIRTUAL_XID = /^\d+\/\d+$/

/** node-postgres returns text[] as an array; other drivers may hand over its text form. */
function parseRunning(value: unknown): string[] | undefined {
  const items = Array.isArray(value)
    ? value.map(String)
    : typeof value === 'string'
      ? value
          .replace(/^\{|\}$/g, '')
          .split(',')
          .filter((item) => item.length > 0)
      : undefined
  if (items === undefined || !items.every((item) => VIRTUAL_XID.test(item))) return undefined
  return items
}

/** Runs one statement on the relay's session. */
type RunQuery = (text: string) => Promise<PgQueryResult>

/** The outbox's identity sequence, if it has CACHE 1 and this session may read it. */
async function probeSequence(table: OutboxTable, run: RunQuery): Promise<string | null> {
  const name = qualified(table).replace(/'/g, "''")
  const result = await run(
    `SELECT s.seqrelid::regclass::text AS sequence, s.seqcache = 1 AND has_sequence_privilege(s.seqrelid, 'SELECT') AS usable FROM pg_sequence AS s WHERE s.seqrelid = pg_get_serial_sequence('${name}', 'id')::regclass`,
  )
  const row = result.rows[0]
  return row?.usable === true && typeof row.sequence === 'string' ? row.sequence : null
}
