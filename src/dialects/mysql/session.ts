/**
 * The slice of a MySQL connection the MySQL dialect uses. Structural, so the dialect has no
 * runtime dependency on a driver; the `k-entity/mysql2` adapter supplies real connections.
 */
export interface MysqlResult {
  /** Rows of a statement that returns a result set, otherwise empty. */
  rows: Record<string, unknown>[]
  /** Rows a write statement changed, otherwise 0. */
  affectedRows: number
}

export interface MysqlSession {
  /** Runs one statement; `?` placeholders take `values` (bytes as Buffers). */
  query(text: string, values?: unknown[]): Promise<MysqlResult>
  /** Closes the connection; never hangs, even when the connection is already broken. */
  end(): Promise<void>
  /** Called once if the connection fails or the server ends it. */
  onError(listener: (error: Error) => void): void
}

/** MySQL error numbers the dialect reacts to. */
export const MysqlErrors = {
  BAD_DB: 1049,
  NO_SUCH_TABLE: 1146,
} as const

export function errorNumber(error: unknown): number | undefined {
  const errno = (error as { errno?: unknown } | null)?.errno
  return typeof errno === 'number' ? errno : undefined
}
