import { waitAtMost } from '../../core/wait.ts'

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

/** What an outbox opens its own connection for. */
export type MysqlSessionPurpose = 'relay' | 'migrate' | 'admin'

/**
 * Ends a driver's connection without hanging: `end()` waits for the server's goodbye, which a
 * dead connection never sends, so after a second the socket is destroyed.
 */
export async function endConnection(connection: { end(): Promise<unknown>; destroy(): void }): Promise<void> {
  await waitAtMost(connection.end(), 1000)
  connection.destroy()
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
