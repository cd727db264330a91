import type pg from 'pg'
import { describe, invalidArgument } from '../../core/errors.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { abortedTransaction } from '../../dialects/postgres/transaction.ts'
import {
  type HeldConnection,
  heldConnection,
  holdingAdapter,
  type TransactionHelper,
} from './held-connection.ts'

/**
 * The held-write state of a data layer's node-postgres client, undefined when the client is not
 * one that can hold writes: pipeline mode refuses the custom query object that carries them, and
 * a native client, PGlite or postgres.js has no wire connection to guard. Told by shape, not
 * `instanceof pg.Client`, so an adapter need not load `pg` (its app may run on MySQL), and a `pg`
 * copy of the data layer's own passes too.
 */
export function holdableConnection(client: unknown): HeldConnection | undefined {
  if (typeof client !== 'object' || client === null) return undefined
  const candidate = client as {
    query?: unknown
    getTransactionStatus?: unknown
    pipeline?: unknown
    connection?: { sync?: unknown; close?: unknown } | null
  }
  if (typeof candidate.query !== 'function' || typeof candidate.getTransactionStatus !== 'function') {
    return undefined
  }
  if (candidate.pipeline === true) return undefined
  const wire = candidate.connection
  // What a held write sends besides what `heldConnection` guards (see HeldWritesQuery).
  if (typeof wire?.sync !== 'function' || typeof wire.close !== 'function') return undefined
  return heldConnection(client as pg.ClientBase)
}

/**
 * A data layer's transaction helper holding its outbox writes on the node-postgres client
 * underneath until the layer's own COMMIT, which carries them in its round trip (see
 * `CommitBuffer`). The layer sends BEGIN, COMMIT and ROLLBACK through the client's `query`; the
 * scope lives from inside the layer's transaction callback (`open`) until the layer's
 * transaction has settled (`close`), its COMMIT or ROLLBACK included.
 */
export class HeldTransactionScope {
  readonly #helper: TransactionHelper = { flushes: [], endsThroughQuery: true }
  #state: HeldConnection | undefined
  #ended = false

  /**
   * The adapter the helper's topics write through: holding on `client` if it can hold and no
   * other helper holds on it, else `inner` (writes at produce()).
   */
  open(client: unknown, inner: TransactionAdapter): TransactionAdapter {
    const state = holdableConnection(client)
    if (state === undefined || state.helper !== undefined || this.#state !== undefined) return inner
    state.helper = this.#helper
    this.#state = state
    return holdingAdapter(
      state,
      abortAware(inner, client as Partial<pg.ClientBase>),
      () => {},
      () => this.#ended,
    )
  }

  /**
   * The callback resolved: a failed flush fails the transaction here, before the layer's COMMIT,
   * even if the app caught the error of the query it rode on (that COMMIT would have rolled back
   * silently). Nothing more may be produced: the COMMIT carries what is held.
   */
  async beforeCommit(): Promise<void> {
    try {
      for (const flush of this.#helper.flushes) await flush
    } finally {
      this.#ended = true
    }
  }

  /**
   * The error the layer's transaction rejected with, or the held writes' own when the layer
   * wrapped theirs (Drizzle's "Failed query: commit" carries it as its `cause`): that one says
   * why, and keeps its k-entity code and SQLSTATE for the app's retry logic.
   */
  explain(error: unknown): unknown {
    const failure = this.#helper.commitFailure
    if (failure === undefined || error === failure) return error
    return (error as { cause?: unknown } | null)?.cause === failure ? failure : error
  }

  /** The layer's transaction settled: whatever is still held belonged to a transaction that is over. */
  close(): void {
    this.#ended = true
    const state = this.#state
    if (state === undefined) return
    this.#state = undefined
    if (state.helper === this.#helper) state.helper = undefined
    state.buffer.discard()
    state.wake.clear()
    state.failedFlush = undefined
  }
}

/**
 * `inner`, refusing to hold a write in a transaction the server already aborted (the client has
 * read its state since the failed statement): the write fails at produce(), as when written there.
 */
function abortAware(inner: TransactionAdapter, client: Partial<pg.ClientBase>): TransactionAdapter {
  return {
    dialect: inner.dialect,
    assertInTransaction() {
      // The layer's own check first: a handle whose transaction ended may reach a client that
      // now runs another transaction, whose state says nothing of this one.
      const checkStatus = () => {
        if (client.getTransactionStatus?.() === 'E') throw abortedTransaction()
      }
      const checked = inner.assertInTransaction()
      if (checked instanceof Promise) return checked.then(checkStatus)
      checkStatus()
    },
    execute: (statement: SqlStatement) => inner.execute(statement),
  }
}

/**
 * `in(tx, { holdWrites: true })` of a data layer: writes held on the node-postgres client under
 * `tx` for the transaction's next query or the layer's COMMIT, as with `in(client, { holdWrites:
 * true })` of the pg adapter. The client is reached at the first write (a layer may hand it out
 * only asynchronously, as Knex does); one that cannot hold gets the writes at produce().
 * `onWrite` runs after each held write with the client's state (the COMMIT's wake-up).
 */
export function holdingOnLayer(
  inner: TransactionAdapter,
  client: () => unknown,
  onWrite: (state: HeldConnection) => void,
): TransactionAdapter {
  let adapter: Promise<TransactionAdapter> | undefined
  const resolve = () => {
    adapter ??= (async () => {
      const reached = await client()
      const state = holdableConnection(reached)
      if (state === undefined) return inner
      return holdingAdapter(state, abortAware(inner, reached as Partial<pg.ClientBase>), () => onWrite(state))
    })()
    return adapter
  }
  return {
    dialect: inner.dialect,
    assertInTransaction: async () => (await resolve()).assertInTransaction(),
    execute: async (statement: SqlStatement) => (await resolve()).execute(statement),
  }
}

/**
 * The `holdWrites` of `in(handle, options)`, checked: true only when given and allowed. `handle`
 * names the first argument in messages (`client` for node-postgres, `tx` for a data layer).
 */
export function holdWritesOption(options: unknown, writeWithCommit: boolean, handle: string): boolean {
  if (options === undefined) return false
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(
      `in(${handle}, options): options must be an object like { holdWrites: true }, got ${describe(options)}`,
    )
  }
  const { holdWrites } = options as { holdWrites?: unknown }
  if (holdWrites !== undefined && typeof holdWrites !== 'boolean') {
    throw invalidArgument(
      `in(${handle}, { holdWrites }): 'holdWrites' must be true or false, got ${describe(holdWrites)}`,
    )
  }
  if (holdWrites === true && !writeWithCommit) {
    throw invalidArgument(
      `in(${handle}, { holdWrites: true }) needs writeWithCommit, which this outbox was created without (held writes go through a prepared statement of the connection): drop holdWrites, or create the outbox without writeWithCommit: false`,
    )
  }
  return holdWrites === true
}
