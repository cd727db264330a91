/**
 * The slice of a synchronous SQLite driver the SQLite dialect uses. Structural, so the dialect
 * has no runtime dependency on a driver; the `k-entity/better-sqlite3` and `k-entity/node-sqlite`
 * adapters wrap their database handles in it.
 */
export interface SqliteConnection {
  /** The driver's database handle: two wrappers of one handle are the same database session. */
  readonly handle: object
  /** Absolute path of the database file; null for in-memory and temporary databases. */
  readonly filename: string | null
  /** True while a transaction is open on this handle (BEGIN without COMMIT/ROLLBACK yet). */
  readonly inTransaction: boolean
  /** Runs one statement that returns no rows; returns the number of rows it changed. Bytes are bound as Buffers. */
  run(sql: string, values?: readonly unknown[]): number
  /** Runs one statement and returns its rows (BLOBs as Buffers). */
  all(sql: string, values?: readonly unknown[]): Record<string, unknown>[]
  /** Runs SQL without parameters (transaction control, pragmas, DDL). */
  exec(sql: string): void
  /** True for SQLITE_BUSY / SQLITE_LOCKED: another connection holds a lock the statement needs. */
  isBusy(error: unknown): boolean
  close(): void
}
