import { internalError } from '../../core/errors.ts'
import { waitAtMost } from '../../core/wait.ts'
import { CLAIM_SILENCE_MS, RELAY_QUERY_TIMEOUT_MS, SessionDeadline } from '../relay-session.ts'

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
  /**
   * Tears the connection down at once, without the goodbye `end()` waits for (which a peer
   * behind a dead network never sends). Optional: without it a timed-out session is ended.
   */
  destroy?(): void
  on(event: 'error', listener: (error: Error) => void): unknown
  on(event: 'notification', listener: (message: { channel: string; payload?: string }) => void): unknown
}

/** Results of a multi-statement simple query, whatever the driver returns for one statement. */
export function lastResult(result: PgQueryResult | PgQueryResult[]): PgQueryResult {
  if (!Array.isArray(result)) return result
  const last = result.at(-1)
  if (last === undefined) throw internalError('the query returned no result')
  return last
}

/** The client-side timeout for a session whose server-side `statement_timeout` is `statementTimeoutMs` (0: none). */
export function relayQueryTimeout(statementTimeoutMs: number): number {
  if (!Number.isFinite(statementTimeoutMs) || statementTimeoutMs <= 0) return RELAY_QUERY_TIMEOUT_MS
  return Math.max(RELAY_QUERY_TIMEOUT_MS, statementTimeoutMs + 2000)
}

/**
 * Set on relay sessions so that the SERVER notices a relay that vanished (a partition, a
 * crashed host) within about 11 s, not after the kernel's 2 hours of keepalive silence or 15
 * minutes of retransmissions: keepalive probes after 5 s of silence, every 2 s, 3 unanswered
 * end the session; data it sent that stays unacknowledged for 10 s ends it too. The session's
 * locks (the leader lock, an open claim) go with it, so a standby can take over. Ignored on a
 * Unix socket.
 */
export const RELAY_KEEPALIVE_SETTINGS =
  'SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000'

/**
 * A relay session whose every query must be answered within `timeoutMs()` (a claim's COPY is
 * answered as long as its data keeps arriving, however large the batch; see `SessionDeadline`).
 * `end()` never hangs.
 */
export function withQueryTimeout(session: PgSession, timeoutMs: () => number): PgSession {
  const deadline = new SessionDeadline(() => {
    if (session.destroy) session.destroy()
    else void session.end().catch(() => {})
  })
  const guarded: PgSession = {
    query: ((textOrConfig: never, values?: unknown[]) =>
      deadline.run(timeoutMs(), 'query', () =>
        values === undefined ? session.query(textOrConfig) : session.query(textOrConfig, values),
      )) as PgSession['query'],
    async end() {
      if (!deadline.ended()) return
      await waitAtMost(session.end(), 1000)
      session.destroy?.()
    },
    destroy: () => deadline.destroy(),
    on(event: 'error' | 'notification', listener: (value: never) => void) {
      if (event === 'error') deadline.onDead(listener as (error: Error) => void)
      session.on(event as 'error', listener as (error: Error) => void)
      return guarded
    },
  }
  if (session.copyOut !== undefined) {
    const copyOut = session.copyOut.bind(session)
    guarded.copyOut = (text, onData) =>
      deadline.run(timeoutMs(), 'query', (touch) =>
        copyOut(text, (chunk) => {
          touch()
          onData(chunk)
        }),
      )
  }
  return guarded
}

/** The server's `idle_in_transaction_session_timeout` for a relay with this `claimTimeout`. */
export function claimSilence(claimTimeout: number): number {
  return Math.trunc(Math.min(claimTimeout, CLAIM_SILENCE_MS))
}
