import type pg from 'pg'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import {
  CommitBuffer,
  type HeldWrite,
  isPreparedStatementMismatch,
  preparedStatementMismatch,
} from '../../dialects/postgres/commit-buffer.ts'
import { classifyFailure } from '../../dialects/postgres/errors.ts'
import {
  abortedTransaction,
  IN_FAILED_SQL_TRANSACTION,
  sqlState,
} from '../../dialects/postgres/transaction.ts'
import { transactionEnded } from '../../dialects/shared/transaction-errors.ts'
import { explainMissingTable } from '../../outbox/not-migrated.ts'
import { HeldWritesQuery } from './held-writes.ts'

type Query = (...args: unknown[]) => unknown

/**
 * A node-postgres client whose outbox writes wait for its next query or COMMIT (see
 * `CommitBuffer`). Installed once per client object: a pool hands out the same clients again and
 * again, and the statements a connection has prepared outlive every transaction on it.
 */
export interface HeldConnection {
  readonly client: pg.ClientBase
  /** The client's own query method, which never flushes. */
  readonly query: Query
  readonly buffer: CommitBuffer
  /** Called once the app's own COMMIT of held writes succeeds (the outboxes' in-process wake-up). */
  readonly wake: Set<() => void>
  /**
   * Set while a transaction helper owns the client: it awaits the flushes before its COMMIT, so a
   * failed one fails the transaction even if the app caught the error of the query it rode on.
   */
  helper: TransactionHelper | undefined
  /**
   * The error of held writes that failed ahead of an app's query in the current transaction. The
   * server then answers the app's plain COMMIT with a rollback and no error; if the app caught
   * that query's error and commits anyway, its COMMIT is made to reject with this one.
   */
  failedFlush: unknown
}

export interface TransactionHelper {
  flushes: Promise<void>[]
  /**
   * The data layer underneath sends BEGIN, COMMIT and ROLLBACK through the client's `query`
   * (Knex, Drizzle...): its plain COMMIT carries the held writes and its ROLLBACK drops them, as
   * the app's own do without a helper. Unset, the helper sends them itself past that `query`.
   */
  endsThroughQuery?: boolean
  /** The error of held writes that failed with the COMMIT, which the layer may wrap in its own. */
  commitFailure?: unknown
}

const connections = new WeakMap<object, HeldConnection>()

/**
 * The client's held-write state, installing (once, never removed: deleting a property would
 * slow every later access to the client) a `query` that sends held writes just ahead of the
 * app's next query. node-postgres runs a client's queries in the order they were issued, so the
 * writes run before that query, in the same transaction, and the app's call returns what it
 * always did. Without a `transaction()` helper, the app's own plain `COMMIT` carries the held
 * writes in its round trip and its plain `ROLLBACK` drops them.
 *
 * A statement can also reach the server without passing through that `query` (through a
 * reference to the method taken before, or the client's prototype), so the client's wire
 * connection is guarded too (see `guardConnection`). Undefined when it cannot be: writes must
 * then go at produce().
 */
export function heldConnection(client: pg.ClientBase): HeldConnection | undefined {
  const known = connections.get(client)
  if (known !== undefined) return known
  const state: HeldConnection = {
    client,
    query: client.query as Query,
    buffer: new CommitBuffer(),
    wake: new Set(),
    helper: undefined,
    failedFlush: undefined,
  }
  if (!guardConnection(state)) return undefined
  Object.defineProperty(client, 'query', {
    value: (...args: unknown[]) => intercept(state, args),
    configurable: true,
    writable: true,
  })
  connections.set(client, state)
  return state
}

/** The parts of node-postgres's `Connection` every statement of the client goes through. */
interface GuardedConnection {
  query(text: string): void
  parse(message: { name?: string; text: string; types?: number[] }): void
  bind(message: { statement?: string; [key: string]: unknown }): void
  execute(message: Record<string, unknown>): void
  parsedStatements?: Record<string, string>
  submittedNamedStatements?: Record<string, string>
}

/**
 * Sees every statement the client sends while writes are held, whatever reference to `query`
 * sent it (the simple protocol's Query message, the extended protocol's Parse/Bind, named
 * statements included). Through the wrapped `query` held writes are always sent ahead of the
 * app's statement, so a statement that finds them still held bypassed it. If it ends the
 * transaction, or moves its savepoints (which would put the held writes on the wrong side of
 * one), it is replaced by a ROLLBACK and an error: the business rows must never commit without
 * their messages. A bypassing plain ROLLBACK drops them with their transaction. The check is one
 * property read while nothing is held.
 */
function guardConnection(state: HeldConnection): boolean {
  const connection = (state.client as { connection?: Partial<GuardedConnection> }).connection
  if (
    typeof connection !== 'object' ||
    connection === null ||
    typeof connection.query !== 'function' ||
    typeof connection.parse !== 'function' ||
    typeof connection.bind !== 'function' ||
    typeof connection.execute !== 'function'
  ) {
    return false
  }
  const wire = connection as GuardedConnection
  const { query, parse, bind, execute } = wire
  const { buffer } = state
  /** Text of the unnamed statement last parsed (a Bind without a name runs it). */
  let unnamed: string | undefined
  wire.query = function (this: GuardedConnection, text: string) {
    if (!buffer.empty) {
      const verdict = bypassVerdict(text)
      if (verdict === 'refuse') {
        dropHeld(state)
        return query.call(this, `ROLLBACK; ${BYPASS_REFUSAL}`)
      }
      if (verdict === 'rollback') dropHeld(state)
    }
    return query.call(this, text)
  }
  wire.parse = function (this: GuardedConnection, message) {
    if (!message.name) unnamed = message.text
    return parse.call(this, message)
  }
  wire.bind = function (this: GuardedConnection, message) {
    if (!buffer.empty) {
      const name = message.statement
      const text = name ? (this.parsedStatements?.[name] ?? this.submittedNamedStatements?.[name]) : unnamed
      const verdict = text === undefined ? undefined : bypassVerdict(text)
      if (verdict === 'rollback') dropHeld(state)
      else if (verdict === 'refuse') {
        dropHeld(state)
        // Ahead of the app's Bind: the server runs these, then skips everything after the error
        // up to the app's Sync, so its statement never runs and the query rejects with the error.
        unnamed = undefined
        for (const text of ['ROLLBACK', BYPASS_REFUSAL]) {
          parse.call(this, { text, types: [] })
          bind.call(this, {})
          execute.call(this, {})
        }
      }
    }
    return bind.call(this, message)
  }
  return true
}

/** The held writes' transaction ends (rolled back, or refused): they go with it. */
function dropHeld(state: HeldConnection): void {
  state.buffer.discard()
  state.wake.clear()
  state.failedFlush = undefined
}

/**
 * Statements that end a transaction or move its savepoints, at the start of the text or after a
 * semicolon (a multi-statement simple query), comments allowed ahead. A semicolon inside a
 * literal can only make this refuse more, never less.
 */
const TRANSACTION_CONTROL =
  /(?:^|;)(?:\s+|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*(?:commit|end|abort|rollback|savepoint|release|prepare\s+transaction)\b/i

function bypassVerdict(text: string): 'refuse' | 'rollback' | undefined {
  if (typeof text !== 'string' || !TRANSACTION_CONTROL.test(text)) return undefined
  return ROLLBACK.test(text) ? 'rollback' : 'refuse'
}

export const BYPASS_REFUSAL_CODE = 'KE001'

const BYPASS_REFUSAL = `DO $ke$BEGIN RAISE EXCEPTION USING ERRCODE = '${BYPASS_REFUSAL_CODE}', MESSAGE = 'k-entity refused this statement and rolled the transaction back, so nothing of it was committed: outbox messages produced with outbox.in(client, { holdWrites: true }) were waiting to be written, and this COMMIT (or savepoint command) bypassed the client query method that writes them (it was called through a reference to query taken before outbox.in(client))', HINT = 'Send COMMIT, SAVEPOINT, RELEASE and ROLLBACK TO with client.query(...) after outbox.in(client), or produce without holdWrites (the default), which writes at produce()'; END$ke$`

/**
 * A transaction adapter that holds writes in the connection's buffer. `ended` refuses writes
 * once the transaction they belong to is over: they could never reach the database.
 */
export function holdingAdapter(
  state: HeldConnection,
  inner: TransactionAdapter,
  onWrite: () => void,
  ended: () => boolean = () => false,
): TransactionAdapter {
  const checkOpen = () => {
    if (ended()) throw transactionEnded()
  }
  return {
    dialect: inner.dialect,
    assertInTransaction() {
      checkOpen()
      return inner.assertInTransaction()
    },
    async execute(statement: SqlStatement) {
      checkOpen()
      state.buffer.hold(statement)
      onWrite()
    },
  }
}

/** Writes at once through `inner`; `onWrite` after each write (the COMMIT's wake-up). */
export function wakingAdapter(inner: TransactionAdapter, onWrite: () => void): TransactionAdapter {
  return {
    dialect: inner.dialect,
    assertInTransaction: () => inner.assertInTransaction(),
    async execute(statement: SqlStatement) {
      await inner.execute(statement)
      onWrite()
    },
  }
}

/** Sends held writes (and the COMMIT behind them) through the client's own query queue. */
export function sendHeld(state: HeldConnection, writes: HeldWrite[], commit: boolean): Promise<void> {
  let submittable: HeldWritesQuery
  try {
    submittable = new HeldWritesQuery(writes, commit)
    state.query.call(state.client, submittable)
  } catch (error) {
    state.buffer.failed(writes)
    return Promise.reject(error)
  }
  return submittable.done.catch((error: unknown) => {
    state.buffer.failed(writes)
    if (isPreparedStatementMismatch(error)) throw preparedStatementMismatch(error)
    // A write produced after a failed statement: node-postgres may report the transaction as
    // open until its next answer, so the refusal comes from the server, when the write is sent.
    if (sqlState(error) === IN_FAILED_SQL_TRANSACTION) throw abortedTransaction(error)
    // The app's COMMIT: its error stays the driver's (see Outbox.#explain), a missing table aside.
    throw explainMissingTable(error, classifyFailure, undefined)
  })
}

function intercept(state: HeldConnection, args: unknown[]): unknown {
  const { client, query, buffer, helper } = state
  if (helper === undefined || helper.endsThroughQuery === true) {
    const end = transactionEnd(args)
    if (end?.kind === 'rollback') {
      dropHeld(state)
      return query.apply(client, args)
    }
    if (end?.kind === 'commit' && (!buffer.empty || state.wake.size > 0 || state.failedFlush !== undefined)) {
      return reply(args, commit(state, end.text))
    }
  }
  const held = buffer.drain()
  if (held === undefined) return query.apply(client, args)
  const flush = sendHeld(state, held, false)
  // The app's query reports a failed flush (and so does its COMMIT, see `commit`).
  flush.catch((error: unknown) => {
    state.failedFlush = error
  })
  state.helper?.flushes.push(flush)
  return afterFlush(state, args, flush)
}

/**
 * The app's own COMMIT, with the held writes ahead of it in one round trip. If a write fails,
 * the server skips the COMMIT: the transaction is rolled back here, as a failed COMMIT leaves
 * no transaction open, and the app's COMMIT rejects with the write's error. So it does after
 * held writes failed earlier in the transaction, which the server would otherwise answer with
 * a rollback and no error.
 */
async function commit(state: HeldConnection, text: string): Promise<pg.QueryResult> {
  const failed = state.failedFlush
  state.failedFlush = undefined
  // Still aborted by that failure (no ROLLBACK TO SAVEPOINT since): this COMMIT would roll back.
  if (failed !== undefined && state.client.getTransactionStatus?.() === 'E') {
    dropHeld(state)
    await (state.query.call(state.client, 'ROLLBACK') as Promise<unknown>).catch(() => {})
    throw failed
  }
  const held = state.buffer.drain()
  const wakes = [...state.wake]
  state.wake.clear()
  if (held === undefined) {
    const result = (await state.query.call(state.client, text)) as pg.QueryResult
    for (const wake of wakes) wake()
    return result
  }
  try {
    await sendHeld(state, held, true)
  } catch (error) {
    if (state.helper !== undefined) state.helper.commitFailure = error
    await (state.query.call(state.client, 'ROLLBACK') as Promise<unknown>).catch(() => {})
    throw error
  }
  for (const wake of wakes) wake()
  // What node-postgres answers for a COMMIT (no row count, no oid).
  return { command: 'COMMIT', rowCount: null, oid: null as unknown as number, rows: [], fields: [] }
}

/** The app's query, after the flush ahead of it: a failed flush's error says why it failed. */
function afterFlush(state: HeldConnection, args: unknown[], flush: Promise<void>): unknown {
  const { client, query } = state
  const first = args[0] as { submit?: unknown } | null
  // A submittable (a cursor, a stream) is returned as it is: it reports the aborted transaction.
  if (typeof first === 'object' && first !== null && typeof first.submit === 'function') {
    return query.apply(client, args)
  }
  const callback = args.at(-1)
  if (typeof callback === 'function') {
    const wrapped = (error: unknown, result: unknown) =>
      flush.then(
        () => callback(error, result),
        (flushError: unknown) => callback(flushError),
      )
    return query.apply(client, [...args.slice(0, -1), wrapped])
  }
  const result = query.apply(client, args) as Promise<unknown>
  return result.then(
    (value) => flush.then(() => value),
    (error: unknown) =>
      flush.then(() => {
        throw error
      }),
  )
}

/** The app's result or callback from `promise`, in the form its call asked for. */
function reply(args: unknown[], promise: Promise<unknown>): unknown {
  const callback = args.at(-1)
  if (typeof callback !== 'function') return promise
  promise.then(
    (result) => callback(undefined, result),
    (error: unknown) => callback(error),
  )
  return undefined
}

const COMMIT = /^\s*(?:commit|end)(?:\s+(?:work|transaction))?\s*;?\s*$/i
const ROLLBACK = /^\s*(?:rollback|abort)(?:\s+(?:work|transaction))?\s*;?\s*$/i

/**
 * Whether the call is a plain COMMIT or ROLLBACK of the transaction, as text or as a query config
 * without values (data layers send `{ text: 'COMMIT;', values: [] }`). Anything else (values, a
 * statement name, `ROLLBACK TO SAVEPOINT`, `COMMIT AND CHAIN`) flushes ahead of itself like any
 * other query, which is always correct, only one round trip slower.
 */
function transactionEnd(args: unknown[]): { kind: 'commit' | 'rollback'; text: string } | undefined {
  const [first, ...rest] = args
  const text = typeof first === 'string' ? first : configText(first)
  if (text === undefined || text.length > 32) return undefined
  // Query wrappers often pass no values as an empty array or undefined: (text, []), (text,
  // undefined) and (text, [], callback).
  if (rest[0] === undefined || (Array.isArray(rest[0]) && rest[0].length === 0)) rest.shift()
  if (rest.length > 1 || (rest.length === 1 && typeof rest[0] !== 'function')) return undefined
  if (COMMIT.test(text)) return { kind: 'commit', text }
  if (ROLLBACK.test(text)) return { kind: 'rollback', text }
  return undefined
}

/** Config keys that only shape result rows, which a COMMIT or ROLLBACK has none of (Drizzle sets them). */
const ROW_SHAPING = new Set(['types', 'rowMode'])

/** The text of a query config that carries nothing but text, empty values and row shaping. */
function configText(config: unknown): string | undefined {
  if (typeof config !== 'object' || config === null || Object.getPrototypeOf(config) !== Object.prototype) {
    return undefined
  }
  const { text, values, ...others } = config as { text?: unknown; values?: unknown }
  if (typeof text !== 'string') return undefined
  if (values !== undefined && !(Array.isArray(values) && values.length === 0)) return undefined
  for (const [key, value] of Object.entries(others)) {
    if (value !== undefined && !ROW_SHAPING.has(key)) return undefined
  }
  return text
}
