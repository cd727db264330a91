import { ErrorCodes, KEntityError } from '../../core/errors.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'

/**
 * Outbox writes held back until the app's next statement or COMMIT, then sent in the same round
 * trip as it: a transaction helper that owns the connection can store messages produced last in
 * the transaction without a round trip of their own (node-postgres has no pipelining, but a
 * simple query may carry several statements). The server runs them before that statement, in
 * the transaction, so atomicity and savepoints behave as if they had been sent at `produce()`:
 * if a write fails, the COMMIT in the same query never runs.
 *
 * A simple query carries no parameters, so each write is an EXECUTE of a session-level prepared
 * statement (planning the INSERT every time cost more than the round trip it saves) with its
 * values inlined as literals (see `literal`) that no message content can end, whatever the
 * server's `standard_conforming_strings`.
 */
export class CommitBuffer {
  readonly #prepared: Set<string>
  /** Prepared by statements held here: counted as prepared once sent. */
  readonly #preparing = new Set<string>()
  #statements: string[] = []
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
        const call = preparedCall(statement)
        if (!this.#prepared.has(call.name) && !this.#preparing.has(call.name)) {
          this.#preparing.add(call.name)
          this.#statements.push(call.prepare)
        }
        this.#statements.push(call.execute)
      },
    }
  }

  /** The held statements as one multi-statement query text (undefined if none), emptying the buffer. */
  drain(): string | undefined {
    if (this.#statements.length === 0) return undefined
    const text = this.#statements.join(';\n')
    this.#statements = []
    // Counted as prepared once sent; the caller resynchronises the set if the query fails.
    for (const name of this.#preparing) this.#prepared.add(name)
    this.#preparing.clear()
    return text
  }

  /** The held statements followed by COMMIT; later writes are refused. */
  commitSql(): string {
    this.#ended = true
    const held = this.drain()
    return held === undefined ? 'COMMIT' : `${held};\nCOMMIT`
  }

  /** Refuses later writes (after a ROLLBACK). */
  end(): void {
    this.#ended = true
    this.#statements = []
    this.#preparing.clear()
  }
}

/**
 * The query that tells which of `names` this session has prepared: run after a failed flush,
 * which may have stopped before or after its PREPARE.
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
    "the outbox's prepared statement on this connection was not in the state k-entity recorded (dropped by a pooler or DISCARD ALL, or created elsewhere), so the transaction was rolled back and nothing was stored; retry it. A transaction-mode pooler (PgBouncer) does not keep SQL prepared statements: behind one, create the outbox with writeWithCommit: false",
    { cause, retryable: true },
  )
}

function transactionEnded(): KEntityError {
  return new KEntityError(
    ErrorCodes.NO_TRANSACTION,
    'this transaction() has already ended: produce with the topics of a running transaction; nothing was stored',
  )
}

/** A statement as SQL-level PREPARE and EXECUTE texts, its values inlined as literals. */
export function preparedCall(statement: SqlStatement): { name: string; prepare: string; execute: string } {
  const { name, types } = shapeOf(statement.text)
  const args = statement.values.map((value, index) => {
    const type = types[index]
    if (type === undefined) {
      throw new Error(
        `parameter $${index + 1} has no cast to read its type from: ${statement.text.slice(0, 80)}`,
      )
    }
    return `${literal(value)}::${type}`
  })
  return {
    name,
    prepare: `PREPARE ${name} AS ${statement.text}`,
    execute: args.length === 0 ? `EXECUTE ${name}` : `EXECUTE ${name}(${args.join(', ')})`,
  }
}

interface StatementShape {
  name: string
  types: string[]
}

/** Per statement text: an outbox has a handful of texts, each used for every message. */
const shapes = new Map<string, StatementShape>()
const MAX_SHAPES = 256

function shapeOf(text: string): StatementShape {
  let shape = shapes.get(text)
  if (shape === undefined) {
    shape = { name: preparedName(text), types: parameterTypes(text) }
    if (shapes.size >= MAX_SHAPES) shapes.clear()
    shapes.set(text, shape)
  }
  return shape
}

/** A name derived from the text (two 32-bit FNV-1a hashes), so a changed text never reuses an old name. */
function preparedName(text: string): string {
  let a = 0x811c9dc5
  let b = 0x01000193
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    a = Math.imul(a ^ code, 0x01000193)
    b = Math.imul(b ^ code, 0x811c9dc5) ^ (b >>> 15)
  }
  return `ke_commit_${(a >>> 0).toString(16).padStart(8, '0')}${(b >>> 0).toString(16).padStart(8, '0')}`
}

/**
 * The type of each parameter, from its first cast (`$4::text::jsonb` gives text). EXECUTE only
 * applies assignment casts to its arguments, so each literal is cast to its parameter's type.
 */
function parameterTypes(text: string): string[] {
  const types: string[] = []
  for (const match of text.matchAll(/\$(\d+)::([a-z]+(?:\[\])?)/g)) {
    const index = Number(match[1]) - 1
    types[index] ??= match[2] as string
  }
  return types
}

/**
 * Escape-string literals: E'' reads backslashes as escapes whatever `standard_conforming_strings`
 * says, so doubling backslashes and quotes leaves nothing that can end the literal early.
 */
function literal(value: unknown): string {
  if (value === null || value === undefined) return 'NULL'
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new Error(`cannot inline the number ${value}`)
    return `(${value})`
  }
  if (typeof value === 'boolean') return value ? 'TRUE' : 'FALSE'
  if (typeof value === 'string') {
    if (value.includes('\0')) throw new Error('PostgreSQL text cannot hold a NUL character')
    return `E'${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`
  }
  if (Buffer.isBuffer(value)) return `E'\\\\x${value.toString('hex')}'`
  if (Array.isArray(value)) return value.length === 0 ? `'{}'` : `ARRAY[${value.map(literal).join(', ')}]`
  throw new Error(`cannot inline a value of type ${typeof value}`)
}
