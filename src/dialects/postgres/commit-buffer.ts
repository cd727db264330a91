import { ErrorCodes, KEntityError } from '../../core/errors.ts'
import type { SqlStatement } from '../../core/seams.ts'

/**
 * Outbox writes held back until the app's next statement or COMMIT, then sent in the same round
 * trip as it: a driver that sees the session's queries can store messages produced last in the
 * transaction without a round trip of their own. The driver sends them ahead of that statement,
 * in the transaction, so atomicity and savepoints behave as if they had been sent at
 * `produce()`: if a write fails, the COMMIT sent behind it never runs.
 *
 * Each write runs as a named prepared statement of the session, with bound parameters (bytes go
 * as binary), so neither side parses the message as SQL text. One buffer per session: it also
 * keeps which statements that session has prepared.
 */
export class CommitBuffer {
  readonly #prepared = new Set<string>()
  /**
   * Statements a failed send may or may not have prepared (it can stop before or after its
   * Parse): closed before they are parsed again, which is no error when they do not exist.
   */
  readonly #uncertain = new Set<string>()
  #writes: SqlStatement[] = []

  get empty(): boolean {
    return this.#writes.length === 0
  }

  hold(statement: SqlStatement): void {
    this.#writes.push(statement)
  }

  /**
   * The held writes, in order (undefined if none), emptying the buffer. Their statements count
   * as prepared from here on; the caller reports a failed send with `failed()`.
   */
  drain(): HeldWrite[] | undefined {
    if (this.#writes.length === 0) return undefined
    const writes = this.#writes.map((statement): HeldWrite => {
      const name = preparedName(statement.text)
      const prepare = !this.#prepared.has(name)
      const close = prepare && this.#uncertain.delete(name)
      this.#prepared.add(name)
      return { name, text: statement.text, values: statement.values, prepare, close }
    })
    this.#writes = []
    return writes
  }

  /** Drops the held writes: their transaction is being rolled back. */
  discard(): void {
    this.#writes = []
  }

  /** A send of `writes` failed: whether the session still has their statements is unknown. */
  failed(writes: readonly HeldWrite[]): void {
    for (const { name } of writes) {
      if (this.#prepared.delete(name)) this.#uncertain.add(name)
    }
  }
}

/**
 * One write to send: `prepare` when this session has not prepared `name` yet, `close` when a
 * failed send may have left a statement of that name behind.
 */
export interface HeldWrite {
  name: string
  text: string
  values: readonly unknown[]
  prepare: boolean
  close: boolean
}

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
