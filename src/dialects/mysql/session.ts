import { waitAtMost } from '../../core/wait.ts'
import { CLAIM_SILENCE_MS, SessionDeadline } from '../relay-session.ts'

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
  /**
   * Tears the connection down at once, without the goodbye `end()` waits for (which a server
   * behind a dead network never sends). Optional: without it a timed-out session is ended.
   */
  destroy?(): void
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

export function errorNumber(error: unknown): number | undefined {
  const errno = (error as { errno?: unknown } | null)?.errno
  return typeof errno === 'number' ? errno : undefined
}

/**
 * The session's `wait_timeout` (ms) for a relay with this `claimTimeout` that speaks at least
 * once per `idleMs` when it has nothing to do (three times that, so a slow poll is not cut off).
 */
export function relaySilence(claimTimeout: number, idleMs: number): number {
  return Math.max(Math.min(claimTimeout, CLAIM_SILENCE_MS), idleMs * 3)
}

/**
 * A relay session whose every statement must be answered within `timeoutMs` (see
 * `SessionDeadline`).
 */
export function withQueryTimeout(session: MysqlSession, timeoutMs: number): MysqlSession {
  const deadline = new SessionDeadline(() => {
    if (session.destroy) session.destroy()
    else void session.end().catch(() => {})
  })
  return {
    query: (text, values) => deadline.run(timeoutMs, 'statement', () => session.query(text, values)),
    async end() {
      deadline.ended()
      await session.end()
    },
    destroy: () => deadline.destroy(),
    onError(listener) {
      deadline.onDead(listener)
      session.onError(listener)
    },
  }
}
