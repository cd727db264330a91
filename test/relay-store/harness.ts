/**
 * What a database must provide to run the relay-store contract (`contract.ts`): how to make a
 * migrated outbox in a place of its own, how the app writes to it, how to look at it on a
 * separate connection, and which capabilities decide the cases that apply.
 *
 * Adding a database: write `harness-<database>.ts` implementing `StoreHarness`, and a test file
 * `test/relay-store-<database>.test.ts` that calls `runRelayStoreContract(harness)`.
 */
import type { DeadLetters, OutboxStats } from '../../src/core/dead-letters.ts'
import type { ErrorCode, OutboxRelay, RelayOptions, TopicMap, TopicProducers } from '../../src/index.ts'
import type { KafkaSetting } from '../../src/transports/kafka/index.ts'

export type RelayMode = 'single' | 'exclusive' | 'concurrent'

export interface StoreCapabilities {
  /** Modes the store runs; every other mode is refused with `KE_INVALID_ARGUMENT`. */
  modes: readonly RelayMode[]
  /** How a refused mode's message explains itself. */
  refusedModeMessage: RegExp
  /**
   * A second relay of the same outbox: `stands-by` (it waits on a session lock and takes over when
   * the first goes) or `refused` (it fails with `KE_RELAY_RUNNING` until the first stops).
   */
  secondRelay: 'stands-by' | 'refused'
  /** A relay's database session can be ended from outside (`killSession`): fencing and takeover cases. */
  fencing: boolean
  /** Several app transactions can be open at once on separate connections (`openTransaction`). */
  parallelTransactions: boolean
  /** A commit made through another outbox object (as by another process) wakes an idle relay. */
  listen: boolean
  /** `pipeline: true` claims on a second session; false: the option must be refused, never ignored. */
  pipeline: boolean
  /** Topics mapped with `outbox: false`: sent straight to Kafka, or refused when the outbox is created. */
  directTopics: 'sent' | 'refused'
  /** `migrationSql()` can run again over a migrated outbox (IF NOT EXISTS, INSERT IGNORE). */
  idempotentScript: boolean
  /** The driver runs synchronous transactions of its own (`syncTransaction`), sharing its handle with the relay. */
  syncTransactions: boolean
  /**
   * Deadlocks between parallel transactions: the driver's error code for the victim, and the
   * code `produce()` then fails with on the transaction the database ended.
   */
  deadlock?: { driverCode: string; produceFails: ErrorCode }
}

/** Sizes of the heavier cases, scaled to what the database does in a few seconds here. */
export interface StoreLoad {
  /** Atomicity case: transactions of one message, 20% rolled back. */
  atomicityTransactions: number
  /** Per-key order case: messages, in transactions of 50. */
  orderedMessages: number
}

export interface StoreSetupOptions<M extends TopicMap> {
  topics: M
  /** A fresh lower-case identifier unique to this test: schema, database or file name. */
  name: string
  brokers: string[]
  /** false: leave the outbox unmigrated (the business table `orders` is still created). */
  migrate?: boolean
  /** The tags the case will give relays (`StoreRelayOptions.tag`), so the harness can prepare them. */
  tags?: readonly string[]
  /** The bytes case asks for an in-memory database where the store has one. */
  inMemory?: boolean
}

/** What a transaction of the app can do: produce through the adapter, and write business rows. */
export interface OrderWrite<M extends TopicMap> {
  topics: TopicProducers<M>
  insertOrders(rows: readonly { id: string; customer: string }[]): Promise<void>
}

/** A transaction on a connection of its own, driven step by step by the case. */
export interface OpenTransaction<M extends TopicMap> extends OrderWrite<M> {
  /** `UPDATE orders SET customer = ? WHERE id = ?`; rejects with the driver's error (deadlocks). */
  updateOrder(id: string, customer: string): Promise<void>
  commit(): Promise<void>
  rollback(): Promise<void>
  /** Gives the connection back (after commit, rollback, or a failure). */
  release(): Promise<void>
}

/** A synchronous transaction the way an app using a synchronous driver writes one (SQLite). */
export interface SyncOrderWrite<M extends TopicMap> {
  produce<K extends keyof M & string>(accessor: K, message: unknown): void
  insertOrder(id: string, customer: string): void
}

export interface StoreRelayOptions extends RelayOptions {
  kafka?: KafkaSetting
  /**
   * Names the relay's session so `killSession(tag)` and `leaderTag()` can find it
   * (stores with `fencing` only).
   */
  tag?: string
  /** SQLite: relay on the app's own handle instead of a handle of its own on the file. */
  onAppHandle?: boolean
}

export interface StoreContext<M extends TopicMap> {
  /** The app's transaction through the adapter: commit if `fn` resolves, rollback if it throws. */
  transaction<R>(fn: (write: OrderWrite<M>) => Promise<R>): Promise<R>
  /** Only with `parallelTransactions`. */
  openTransaction?(): Promise<OpenTransaction<M>>
  /** Only on synchronous drivers: the driver's own transaction, while a relay shares the handle. */
  syncTransaction?(fn: (write: SyncOrderWrite<M>) => void): void
  /** Produces on `accessor` with the app's plain handle (no transaction): must fail. */
  produceOutsideTransaction(accessor: keyof M & string, message: unknown): Promise<void>
  /** `outbox.in(handle)` with whatever the case passes, to check argument validation. */
  inWith(handle: unknown): unknown
  /** Handles `inWith` must refuse with `KE_INVALID_ARGUMENT` (not a transaction of this driver). */
  invalidHandles: unknown[]
  /** A relay of this outbox; the case stops every relay it gets. */
  relay(options?: StoreRelayOptions): OutboxRelay
  /** `outbox.relay(options)` exactly as given (no connection filled in), for argument checks. */
  relayWith(options: unknown): OutboxRelay
  /** Relay options this store refuses with `KE_INVALID_ARGUMENT` (besides the modes it lacks). */
  invalidRelayOptions: unknown[]
  migrate(): Promise<{ applied: number[]; current: number }>
  migrationSql(): string
  /** Runs `migrationSql()` as a DBA would. */
  runMigrationScript(): Promise<void>
  /** Versions recorded in the store's migrations table. */
  migrationVersions(): Promise<number[]>
  /** Store-specific checks of a scripted outbox (e.g. MySQL's key-lock slots). */
  checkMigratedObjects?(): Promise<void>
  stats(): Promise<OutboxStats>
  deadLetters(): DeadLetters
  /** Rows in the outbox table, read on a separate connection. */
  countOutbox(): Promise<number>
  countOrders(): Promise<number>
  /** The outbox's values as text, in id order (the order the relay sends a key in). */
  outboxValues(): Promise<string[]>
  /**
   * The lock a producer of `orderingHash` waits on, when producers serialise per key (two keys
   * with the same lock wait for each other).
   */
  keyLock?(orderingHash: number): number
  /**
   * Ends the database session of the relay tagged `tag` from outside, as a failover or a DBA
   * would: the one holding the leader lock, or the one holding an open claim (waits for it).
   */
  killSession?(tag: string, holding: 'leader' | 'claim'): Promise<void>
  /** The tag of the relay whose session holds the leader lock, if any. */
  leaderTag?(): Promise<string | undefined>
  /** A second outbox object on the same place, as another process would have. */
  otherWriter?(): Promise<{
    transaction(fn: (write: OrderWrite<M>) => Promise<void>): Promise<void>
    close(): Promise<void>
  }>
  teardown(): Promise<void>
}

export interface StoreHarness {
  /** Shown in test names, e.g. `PostgreSQL (node-postgres)`. */
  name: string
  capabilities: StoreCapabilities
  load: StoreLoad
  /**
   * Cases that show a known bug of the library on this store: run and reported as `todo` with
   * the reason instead of failing, until the bug is fixed (then delete the entry).
   */
  knownBugs?: Partial<Record<'dead-letters', string>>
  /** Every migration version of the store, in order (what a first migrate() applies). */
  migrations: number[]
  setup<M extends TopicMap>(options: StoreSetupOptions<M>): Promise<StoreContext<M>>
}
