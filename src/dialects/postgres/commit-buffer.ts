import { ErrorCodes, KEntityError } from '../../core/errors.ts'
import type { TransactionAdapter } from '../../core/seams.ts'

/**
 * Outbox writes held back until the app's next statement or COMMIT, then sent in the same round
 * trip as it: a transaction helper that owns the connection can store messages produced last in
 * the transaction without a round trip of their own. The driver sends them ahead of that
 * statement, in the transaction, so atomicity and savepoints behave as if they had been sent at
 * `produce()`: if a write fails, the COMMIT sent behind it never runs.
 *
 * Each write runs as a named prepared statement of the session, with bound parameters (bytes go
 * as binary), so neither side parses the message as SQL text.
 */
export class CommitBuffer {
  readonly #prepared: Set<string>
  /** Prepared by statements held here: counted as prepared once sent. */
  readonly #preparing = new Set<string>()
  #writes: HeldWrite[] = []
  #ended = false

  /** `prepared`: names of the statements this connection has prepared (kept per connection). */
  constructor(prepared: Set<string>) {
    this.#prepared = prepared
  }

  /** Wraps `inner`: the same transaction checks, but statements wait for `drain()`. */
  adapter(inner: TransactionAdapter): TransactionAdapter {
    return {
      dialect: inner.dialect,
      assertInTransaction: () => inner.assertInTransaction(),
      execute: async (statement) => {
        // Once COMMIT was sent, a held write could never reach the database: refuse it loudly.
        if (this.#ended) throw transactionEnded()
        const name = preparedName(statement.text)
        const prepare = !this.#prepared.has(name) && !this.#preparing.has(name)
        if (prepare) this.#preparing.add(name)
        this.#writes.push({ name, text: statement.text, values: statement.values, prepare })
      },
    }
  }

  /** The held writes, in order (undefined if none), emptying the buffer. */
  drain(): HeldWrite[] | undefined {
    if (this.#writes.length === 0) return undefined
    const writes = this.#writes
    this.#writes = []
    // Counted as prepared once sent; the caller resynchronises the set if the query fails.
    for (const name of this.#preparing) this.#prepared.add(name)
    this.#preparing.clear()
    return writes
  }

  /** The held writes to send with the COMMIT (undefined if none); later writes are refused. */
  drainForCommit(): HeldWrite[] | undefined {
    this.#ended = true
    return this.drain()
  }

  /** Refuses later writes (after a ROLLBACK). */
  end(): void {
    this.#ended = true
    this.#writes = []
    this.#preparing.clear()
  }
}

/** One write to send: `prepare` when this connection has not prepared `name` yet. */
export interface HeldWrite {
  name: string
  text: string
  values: readonly unknown[]
  prepare: boolean
}

/**
 * The query that tells which of `names` this session has prepared (SQL-level or protocol-level):
 * run after a failed flush, which may have stopped before or after preparing its statement.
 */
export const PREPARED_STATEMENTS_SQL = 'SELECT name FROM pg_prepared_statements WHERE name = ANY($1::text[])'

/**
 * Whether `error` says the session's prepared statements are not what this process recorded:
 * one vanished (a transaction-mode pooler, DISCARD ALL) or already existed (prepared by code
 * that does not share this process's record).
 */
export function isPreparedStatementMismatch(error: unknown): boolean {
  const code = (error as { code?: string } | null)?.code
  return code === '26000' || code === '42P05'
}

export function preparedStatementMismatch(cause: unknown): KEntityError {
  return new KEntityError(
    ErrorCodes.STORE_FAILED,
    "the outbox's prepared statement on this connection was not in the state k-entity recorded (dropped by a pooler or DISCARD ALL, or created elsewhere), so the transaction was rolled back and nothing was stored; retry it. Behind a transaction-mode pooler that does not keep prepared statements per client (PgBouncer before 1.21, or with max_prepared_statements = 0), create the outbox with writeWithCommit: false",
    { cause, retryable: true },
  )
}

function transactionEnded(): KEntityError {
  return new KEntityError(
    ErrorCodes.NO_TRANSACTION,
    'this transaction() has already ended: produce with the topics of a running transaction; nothing was stored',
  )
}

/** Names per statement text: an outbox has a handful of texts, each used for every message. */
const names = new Map<string, string>()
const MAX_NAMES = 256

/** A name derived from the text (two 32-bit FNV-1a hashes), so a changed text never reuses an old name. */
function preparedName(text: string): string {
  let name = names.get(text)
  if (name === undefined) {
    let a = 0x811c9dc5
    let b = 0x01000193
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i)
      a = Math.imul(a ^ code, 0x01000193)
      b = Math.imul(b ^ code, 0x811c9dc5) ^ (b >>> 15)
    }
    name = `ke_commit_${(a >>> 0).toString(16).padStart(8, '0')}${(b >>> 0).toString(16).padStart(8, '0')}`
    if (names.size >= MAX_NAMES) names.clear()
    names.set(text, name)
  }
  return name
}
