import type { RecordHeader } from '../core/record.ts'
import type { OutboxTable, SqlStatement } from '../core/seams.ts'

/** One inbox row: the message `key` was handled by consumer group `group`. */
export interface InboxEntry {
  group: string
  key: string
  topic: string
  partition: number
  offset: bigint
  /** How long the row keeps the key from being handled again, in ms. */
  retentionMs: number
}

/** A message a consumer gave up on, as its dead-letter row stores it. */
export interface InboxDeadLetter {
  group: string
  topic: string
  partition: number
  offset: bigint
  key: Buffer | null
  value: Buffer | null
  headers: readonly RecordHeader[]
  error: string
  attempts: number
}

/**
 * Dialect part for the consumer's inbox (`SqlDialect.inbox`): the statements a consumer runs in
 * the app's transaction through the adapter's binding (which returns no results, so a repeat is
 * told by the primary key's violation, `isDuplicate`), and the DDL and purge it runs on the
 * outbox's own sessions.
 */
export interface InboxSql<Session> {
  /** A plain INSERT of the inbox row: it fails with a duplicate-key error if the key is there. */
  insert(table: OutboxTable, entry: InboxEntry): SqlStatement
  /**
   * The rows of a batch (one group, one retention) as one multi-row INSERT: it fails as a whole
   * if any key is there already (or repeats within the batch). `recurring`: a full batch, whose
   * statement runs again and again on the same sessions, so a dialect may have it prepared.
   */
  insertMany(table: OutboxTable, entries: readonly InboxEntry[], recurring?: boolean): SqlStatement
  deadLetter(table: OutboxTable, dead: InboxDeadLetter): SqlStatement
  /** Deletes at most `limit` expired rows. */
  purgeBatch(table: OutboxTable, limit: number): SqlStatement
  /** Whether `error` (or one it wraps) is the inbox key's duplicate-key violation. */
  isDuplicate(error: unknown): boolean
  /** Creates the inbox tables if missing (safe to run from several instances at once). */
  migrate(table: OutboxTable, open: () => Session): Promise<void>
  script(table: OutboxTable): string
  /** Deletes expired rows `batchSize` at a time until none is left; returns how many. */
  purge(table: OutboxTable, open: () => Session, batchSize: number): Promise<number>
}

/** DDL statements as one script, each ended by `;`. */
export function inboxScript(statements: readonly string[]): string {
  return `${statements.map((s) => `${s};`).join('\n')}\n`
}

/**
 * Runs `deleteBatch` (which deletes at most `batchSize` rows and says how many) until a batch comes
 * back short: then nothing expired is left. Returns the total.
 */
export async function purgeInBatches(batchSize: number, deleteBatch: () => Promise<number>): Promise<number> {
  let total = 0
  for (;;) {
    const deleted = await deleteBatch()
    total += deleted
    if (deleted < batchSize) return total
  }
}

/**
 * The database error codes one link of an error chain carries, as text: the driver's own
 * (`code`, `sqlState`, `errno`), a Prisma driver adapter's `originalCode`, and the `meta.code` of
 * Prisma's "raw query failed" error (P2010), which is how `$executeRawUnsafe` in an interactive
 * transaction reports a duplicate key: without it a redelivered message looked like a handler
 * failure on Prisma, and its dead letter (which inserts the same key) failed without end.
 */
export function databaseCodes(link: Record<string, unknown>): string[] {
  const meta = link.meta as { code?: unknown } | null | undefined
  const prismaRaw = link.code === 'P2010' && typeof meta === 'object' && meta !== null ? meta.code : undefined
  return [link.code, link.sqlState, link.errno, link.originalCode, prismaRaw]
    .filter((code) => typeof code === 'string' || typeof code === 'number')
    .map(String)
}
