import { ErrorCodes, KEntityError } from '../../core/errors.ts'
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

/** MySQL error numbers the dialect reacts to. */
export const MysqlErrors = {
  BAD_DB: 1049,
  NO_SUCH_TABLE: 1146,
} as const

export function errorNumber(error: unknown): number | undefined {
  const errno = (error as { errno?: unknown } | null)?.errno
  return typeof errno === 'number' ? errno : undefined
}

/**
 * Longest a relay statement may go unanswered before the relay gives its session up (ms): the
 * server's own timeouts cannot reach a relay when the network is gone, and TCP keeps a
 * connection whose peer went silent open for many minutes. The relay's statements take
 * milliseconds. Above `RELAY_SILENCE_MS`, so the server has ended the session (rolling back its
 * claim, freeing its leader lock) before the relay reconnects.
 */
export const RELAY_QUERY_TIMEOUT_MS = 10_000

/**
 * Longest a relay session may stay silent before the server ends it (`wait_timeout`), when
 * neither `claimTimeout` nor the relay's polling asks for less or more: a relay cut off from the
 * database (a partition, a frozen process) then loses its claim and its leader lock after about
 * this, so a standby takes over in about 10 s. A healthy relay whose batch is slow in Kafka
 * keeps its claim with `CLAIM_HEARTBEAT_MS` pings, up to `claimTimeout`.
 */
export const RELAY_SILENCE_MS = 8000
export const CLAIM_HEARTBEAT_MS = 2000

/**
 * The session's `wait_timeout` (ms) for a relay with this `claimTimeout` that speaks at least
 * once per `idleMs` when it has nothing to do (three times that, so a slow poll is not cut off).
 */
export function relaySilence(claimTimeout: number, idleMs: number): number {
  return Math.max(Math.min(claimTimeout, RELAY_SILENCE_MS), idleMs * 3)
}

/**
 * Pings an open claim every `CLAIM_HEARTBEAT_MS` while `open()` holds, at most until
 * `claimTimeout - silence` after it started (so the server still ends a claim about
 * `claimTimeout` after it began), skipping a beat while another statement is on its way.
 */
export function keepClaimAlive(
  claimTimeout: number,
  silence: number,
  open: () => boolean,
  idle: () => boolean,
  ping: () => Promise<unknown>,
): void {
  const until = performance.now() + claimTimeout - silence
  const beat = () => {
    if (!open() || performance.now() + CLAIM_HEARTBEAT_MS > until) return
    if (idle()) void ping().catch(() => {})
    setTimeout(beat, CLAIM_HEARTBEAT_MS).unref()
  }
  if (performance.now() + CLAIM_HEARTBEAT_MS <= until) setTimeout(beat, CLAIM_HEARTBEAT_MS).unref()
}

/**
 * A relay session whose every statement must be answered within `timeoutMs`: otherwise the
 * connection is destroyed (the statement and every later one reject with a retryable
 * `KE_STORE_FAILED`, the session's error listeners hear it), so the relay drops it, stops
 * relaying what it claimed on it, and reconnects.
 */
export function withQueryTimeout(session: MysqlSession, timeoutMs: number): MysqlSession {
  let dead: Error | undefined
  const listeners: ((error: Error) => void)[] = []
  const kill = (error: Error) => {
    if (dead !== undefined) return
    dead = error
    if (session.destroy) session.destroy()
    else void session.end().catch(() => {})
    for (const listener of listeners) listener(error)
  }
  return {
    query(text, values) {
      if (dead !== undefined) return Promise.reject(dead)
      const work = session.query(text, values)
      // The driver rejects the statement once its socket is destroyed: already reported.
      work.catch(() => {})
      let timer: NodeJS.Timeout | undefined
      const expired = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const error = new KEntityError(
            ErrorCodes.STORE_FAILED,
            `the database did not answer a relay statement within ${timeoutMs} ms (network partition, proxy or server stall?); the connection was closed and the relay reconnects`,
            { retryable: true },
          )
          kill(error)
          reject(error)
        }, timeoutMs)
      })
      return Promise.race([work, expired]).finally(() => clearTimeout(timer))
    },
    async end() {
      dead ??= new KEntityError(ErrorCodes.STORE_FAILED, 'the relay database session was ended', {
        retryable: true,
      })
      await session.end()
    },
    destroy() {
      kill(
        new KEntityError(ErrorCodes.STORE_FAILED, 'the relay database session was closed', {
          retryable: true,
        }),
      )
    },
    onError(listener) {
      listeners.push(listener)
      session.onError(listener)
    },
  }
}
