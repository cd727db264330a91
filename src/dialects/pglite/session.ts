import type { PGliteInterface, Results, Transaction } from '@electric-sql/pglite'
import { internalError } from '../../core/errors.ts'
import type { PgQueryResult, PgSession } from '../postgres/session.ts'

/**
 * A `PgSession` over a PGlite database, for `migrate()`.
 *
 * PGlite is one PostgreSQL session shared by every caller in the process, and only its
 * `transaction()` keeps other callers out while a transaction is open. So a `BEGIN` sent here
 * opens a PGlite transaction and holds it until `COMMIT` or `ROLLBACK`; statements in between run
 * in it. BEGIN, COMMIT and ROLLBACK must therefore be statements of their own.
 */
export class PgliteSession implements PgSession {
  readonly #db: PGliteInterface
  #transaction: Transaction | undefined
  #finish: ((commit: boolean) => void) | undefined
  #finished: Promise<void> | undefined

  constructor(db: PGliteInterface) {
    this.#db = db
  }

  query(text: string, values?: unknown[]): Promise<PgQueryResult | PgQueryResult[]>
  query(config: { text: string; values?: unknown[]; name?: string }): Promise<PgQueryResult>
  async query(
    textOrConfig: string | { text: string; values?: unknown[] },
    maybeValues?: unknown[],
  ): Promise<PgQueryResult | PgQueryResult[]> {
    const { text, values } =
      typeof textOrConfig === 'string' ? { text: textOrConfig, values: maybeValues } : textOrConfig
    const command = text.trim().replace(/;$/, '').toUpperCase()
    if (command === 'BEGIN') return this.#begin()
    if (command === 'COMMIT' || command === 'ROLLBACK') return this.#end(command === 'COMMIT')
    if (/^(BEGIN|START|COMMIT|ROLLBACK|END)\b/.test(command)) {
      throw internalError('PgliteSession runs BEGIN, COMMIT and ROLLBACK only as statements of their own')
    }
    const target = this.#transaction ?? this.#db
    if (values !== undefined) return toResult(await target.query(text, values))
    const results = (await target.exec(text)).map(toResult)
    return results.length === 1 ? (results[0] as PgQueryResult) : results
  }

  async #begin(): Promise<PgQueryResult> {
    if (this.#transaction !== undefined) throw internalError('BEGIN inside an open transaction')
    let opened: (tx: Transaction) => void = () => {}
    const started = new Promise<Transaction>((resolve) => {
      opened = resolve
    })
    const finished = this.#db.transaction(async (tx) => {
      const commit = new Promise<boolean>((resolve) => {
        this.#finish = resolve
      })
      opened(tx)
      if (!(await commit)) await tx.rollback()
    })
    this.#finished = finished
    // If PGlite cannot even start the transaction, `finished` rejects before `started` resolves.
    this.#transaction = await Promise.race([started, finished.then(() => started)])
    return EMPTY
  }

  async #end(commit: boolean): Promise<PgQueryResult> {
    const finish = this.#finish
    const finished = this.#finished
    this.#transaction = undefined
    this.#finish = undefined
    this.#finished = undefined
    if (finish === undefined || finished === undefined) return EMPTY
    finish(commit)
    await finished
    return EMPTY
  }

  async end(): Promise<void> {
    // The database belongs to the app; ending the session only ends an unfinished transaction.
    await this.#end(false).catch(() => {})
  }

  on(): this {
    return this
  }
}

const EMPTY: PgQueryResult = { rows: [], rowCount: 0 }

function toResult(results: Results): PgQueryResult {
  return {
    rows: results.rows as Record<string, unknown>[],
    rowCount: results.affectedRows ?? results.rows.length,
  }
}
