/**
 * The slice of a node-postgres `Client` the PostgreSQL dialect uses. Structural, so the dialect
 * has no runtime dependency on `pg`; the `k-entity/pg` adapter supplies real clients.
 */
export interface PgQueryResult {
  rows: Record<string, unknown>[]
  rowCount: number | null
}

export interface PgSession {
  query(text: string, values?: unknown[]): Promise<PgQueryResult | PgQueryResult[]>
  /**
   * `rowMode` and `types` are node-postgres's: rows as arrays, each column's text run through
   * `types`. Other drivers ignore both and return rows as objects of parsed values.
   */
  query(config: {
    text: string
    values?: unknown[]
    name?: string
    rowMode?: 'array'
    types?: { getTypeParser: () => (text: string) => unknown }
  }): Promise<PgQueryResult>
  /**
   * Runs a simple query whose last statement is a `COPY ... TO STDOUT` and hands each CopyData
   * message to `onData` (valid only during the call). Optional: the relay reads its claims this
   * way where the driver offers it (node-postgres sessions opened by k-entity), and as rows
   * otherwise.
   */
  copyOut?(text: string, onData: (chunk: Buffer) => void): Promise<void>
  end(): Promise<void>
  on(event: 'error', listener: (error: Error) => void): unknown
  on(event: 'notification', listener: (message: { channel: string; payload?: string }) => void): unknown
}

/** Results of a multi-statement simple query, whatever the driver returns for one statement. */
export function lastResult(result: PgQueryResult | PgQueryResult[]): PgQueryResult {
  if (!Array.isArray(result)) return result
  const last = result.at(-1)
  if (last === undefined) throw new Error('the query returned no result')
  return last
}
