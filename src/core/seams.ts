/**
 * The three seams of k-entity. Core code (topics, the relay loop) talks only to these
 * interfaces; SQL lives in dialects, driver calls in adapters, Kafka calls in transports.
 */
import type { DatabaseFailure } from './database-errors.ts'
import type { ErrorCode } from './errors.ts'
import type { OutboxRecord, StoredMessage } from './record.ts'

/** A parameterised statement in the dialect's placeholder syntax. */
export interface SqlStatement {
  text: string
  values: unknown[]
  /** Name for a server-side prepared statement, where the driver supports it. */
  name?: string
  /**
   * Its answer tells whether a transaction is open (MySQL: an OK packet with the server's status
   * flags), and run outside one it leaves nothing behind: `TransactionAdapter.executeChecked` may
   * run it in place of the separate check.
   */
  checksTransaction?: true
}

/**
 * Adapter seam: the application's own open transaction, from whatever data layer it uses.
 * An adapter only checks that a transaction is open and runs statements inside it.
 */
export interface TransactionAdapter {
  /** Which dialect's SQL this connection speaks (must match the outbox's dialect). */
  readonly dialect: string
  /** Throws `KE_NO_TRANSACTION` (or `KE_TRANSACTION_ABORTED`) when no usable transaction is open. */
  assertInTransaction(): void | Promise<void>
  execute(statement: SqlStatement): Promise<void>
  /**
   * Optional: runs a statement marked `checksTransaction` and then fails as `assertInTransaction`
   * would, from that statement's answer: the check costs no round trip of its own.
   */
  executeChecked?(statement: SqlStatement): Promise<void>
}

/**
 * Adapter seam for synchronous drivers (SQLite): the same as `TransactionAdapter`, but the
 * statement runs before `execute` returns, so a producer can throw inside the app's transaction.
 */
export interface SyncTransactionAdapter {
  readonly dialect: string
  /** Throws `KE_NO_TRANSACTION` when no transaction is open on the handle. */
  assertInTransaction(): void
  execute(statement: SqlStatement): void
}

/** Where the outbox lives; both names are validated identifiers. */
export interface OutboxTable {
  schema: string
  table: string
}

export interface Migration {
  version: number
  name: string
  statements: string[]
}

/** Dialect seam, producer side: the SQL a transaction runs to store messages, and the DDL. */
export interface OutboxDialect {
  readonly name: string
  insert(table: OutboxTable, records: readonly OutboxRecord[]): SqlStatement[]
  migrations(table: OutboxTable): Migration[]
  /** The k-entity code for a driver's error (its table in the dialect's errors.ts), if any. */
  classifyError?(error: unknown): ErrorCode | undefined
  /** The same, with `retryable` and what to tell the user (see `DatabaseFailure`). */
  classifyFailure?(error: unknown): DatabaseFailure | undefined
}

export interface FailedDelivery {
  ids: string[]
  error: string
  /**
   * How long from now to wait before trying again, in ms (ignored for dead letters). A delay,
   * not a time: the store adds it to the database's own clock, which the claim compares with, so
   * a relay whose clock is off (an hour ahead, say) still retries after the backoff.
   */
  retryInMs: number
  /** Move the messages to the dead-letter table (with their error history) instead. */
  deadLetter?: boolean
  /**
   * `false`: the failure is not the messages' own (a partition whose leader is moving, a broker
   * that died): they wait `retryInMs` and keep their key blocked, but their attempts are not
   * used up. The store marks such a row with `HELD_ATTEMPTS` added to its attempts (so the
   * claim's "an older message of this key waits" test, which looks at attempts > 0, holds the
   * key) and a claim reads `attempts % HELD_ATTEMPTS` as the count. Default true.
   */
  countAttempt?: boolean
}

/**
 * Added to a row's attempts while it waits after a failure that does not count (see
 * `FailedDelivery.countAttempt`); counted attempts are the remainder (policies allow at most 1000).
 */
export const HELD_ATTEMPTS = 1_000_000_000

/** The attempts that count against a retry policy, from a row's `attempts` column. */
export function countedAttempts(attempts: number): number {
  return attempts % HELD_ATTEMPTS
}

/**
 * Dialect seam, relay side: one database session owned by one relay. A claim holds the claimed
 * rows (in an open transaction: row locks, or, where the leader lock already keeps other relays
 * out, ids the relay's other session leaves out, as PostgreSQL's single/exclusive claim does)
 * until `complete` or `abandon`; if the session dies, the database releases them, so a relay
 * that lost its session can never delete rows.
 */
export interface RelayStore {
  connect(): Promise<void>
  /**
   * Takes or confirms this relay's right to claim, answering from memory while it holds it (no
   * round trip per claim). Single and exclusive mode: the leader lock on this session.
   * Concurrent mode: a share of the outbox that no leader holds. False while another relay's
   * mode excludes this one; `heldBy` then says which.
   */
  tryAcquireLeadership(): Promise<boolean>
  /**
   * Why the last `tryAcquireLeadership()` returned false: another single/exclusive relay leads
   * (`'leader'`), concurrent relays run (`'concurrent'`), or concurrent relays whose claims lock
   * another kind of lock (keys, or slots of another count) run (`'claim-locks'`). Undefined when
   * unknown.
   */
  readonly heldBy?: 'leader' | 'concurrent' | 'claim-locks'
  /**
   * Opens a claim on up to `limit` rows; a claim that finds none leaves no claim open.
   * `maxBytes`: the rows are taken oldest first until the next one would bring the batch's key,
   * value and headers bytes (as stored) past it, so the batch's memory is bounded; the first row
   * is always taken, so a message larger than the budget goes alone instead of never. Like the
   * row limit, it only shortens the batch's tail, so per-key order is unchanged. Undefined: no
   * byte budget.
   */
  claim(limit: number, maxBytes?: number): Promise<StoredMessage[]>
  /** Deletes exactly `acknowledged`, records failures (or dead-letters them), and ends the claim. */
  complete(acknowledged: readonly string[], failures?: readonly FailedDelivery[]): Promise<void>
  /**
   * `complete(acknowledged)`, then `claim(limit, maxBytes)`, in one round trip where the database allows.
   * Optional: the pipelined relay falls back to the two calls.
   */
  completeAndClaim?(
    acknowledged: readonly string[],
    limit: number,
    maxBytes?: number,
  ): Promise<StoredMessage[]>
  /** Ends the claim leaving every claimed row as it was. */
  abandon(): Promise<void>
  /**
   * The late answer for rows the relay held while their send was still on its way (see
   * `MessageTransport.landsWithinMs`): deletes `acknowledged` and records `failures` as
   * `complete` does, outside any claim; called only while no claim is open. Optional: without it
   * the relay waits for every send to settle as a whole.
   */
  completeHeld?(acknowledged: readonly string[], failures?: readonly FailedDelivery[]): Promise<void>
  /**
   * Resolves after `ms`, or earlier when the store learns new messages were committed. `found`:
   * how many messages the batch before this wait dealt with (0 after an empty claim or a
   * failure); a store that knows commits are flowing may poll again at once after a non-empty one.
   */
  waitForWork(ms: number, signal: AbortSignal, found?: number): Promise<void>
  /** Closes the session; an open claim is rolled back by the database. */
  close(): Promise<void>
  /** True while the session is usable; false after the connection failed. */
  readonly healthy: boolean
  /**
   * A second, independent session of the same relay, used to claim the next batch while this
   * session's batch is on its way to Kafka. Its claims must skip rows this session holds, and in
   * exclusive mode it must keep a new leader from claiming until it is gone. Optional: without
   * it the relay works one batch at a time.
   */
  companion?(): RelayStore
}

/** Transport seam: a Kafka producer. */
export interface MessageTransport {
  /**
   * Sends the records in order (acks=all) and resolves only when the broker acknowledged every
   * one of them. Otherwise it rejects, optionally saying per record what Kafka answered (see
   * `SendRejection`); without that the caller treats every record as unsent, so a partial
   * success shows up as duplicates, never as loss. A wrapper that awaits another transport
   * passes its rejection on and so stays safe.
   */
  send(records: readonly OutboxRecord[], progress?: SendProgress): Promise<void>
  close(): Promise<void>
  /**
   * The longest time, in ms from the call to `send`, after which Kafka can no longer write one
   * of its records (the client's last retry and the broker's wait for in-sync replicas
   * included). With `progress`, it lets the relay settle a send early: it deletes what Kafka
   * acknowledged, holds the rest (no claim, no resend, later messages of their keys wait) until
   * this time has passed by the database's clock, and deletes them if their acknowledgement comes
   * late. Undefined: the relay waits for every send as a whole.
   */
  readonly landsWithinMs?: number
}

/** What a transport reports while a send is on its way (see `MessageTransport.landsWithinMs`). */
export interface SendProgress {
  /**
   * Kafka acknowledged these records (indexes into the batch passed to `send`), before the send
   * as a whole settled. Each index at most once; the send still resolves or rejects as usual.
   */
  acknowledged(indexes: readonly number[]): void
}

/**
 * What a rejected send may carry on the error, as `failed`: the records Kafka did not acknowledge
 * and why, when Kafka answered per record (the others were acknowledged). The relay then deletes
 * the acknowledged ones and deals with each failed one by its `SendFailure`. A rejection without
 * it means no record was acknowledged.
 */
export interface SendRejection {
  failed: SendFailure[]
}

export interface SendFailure {
  /** Index of the record in the batch passed to `send`. */
  index: number
  error: unknown
  /** False when no retry can help (too large, invalid): the record goes to the dead letters. */
  retryable: boolean
  /**
   * Whether the failure is the record's (or its topic's) own and uses up one of its attempts
   * (a missing topic, a refused topic ACL). False for the cluster's own trouble on a partition
   * (leader moving, not enough in-sync replicas, a dead broker): the record waits a short while
   * without losing an attempt.
   */
  countsAsAttempt: boolean
  /**
   * True when a broker answered for the record's partition (not enough in-sync replicas, leader
   * moving): Kafka is up and this partition waits, so a batch that failed whole on such answers
   * is held, partition by partition, instead of being taken for an outage. Otherwise (no answer,
   * or a transport that does not say) a batch that failed whole is an outage.
   */
  kafkaAnswered?: boolean
}
