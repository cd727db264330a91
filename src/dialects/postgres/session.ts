import { ErrorCodes, KEntityError } from '../../core/errors.ts'
import { waitAtMost } from '../../core/wait.ts'

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
  if (last === undefined) throw new Error('the query returned no result')
  return last
}

/**
 * Longest a relay query may go unanswered before the relay gives its session up (ms). The
 * server's own `statement_timeout` cannot help when the network is gone (its error never
 * arrives), and neither can TCP, which keeps a connection whose peer went silent open for many
 * minutes. The relay's statements take milliseconds; a server whose `statement_timeout` allows
 * longer gets that plus a margin (see `relayQueryTimeout`).
 */
export const RELAY_QUERY_TIMEOUT_MS = 10_000

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
 * answered as long as its data keeps arriving, however large the batch): otherwise the
 * connection is destroyed (the pending query and every later one reject with a retryable
 * `KE_STORE_FAILED`, the session's error listeners hear it), so the relay drops it, stops
 * relaying what it claimed on it, and reconnects. `end()` never hangs.
 */
export function withQueryTimeout(session: PgSession, timeoutMs: () => number): PgSession {
  let dead: Error | undefined
  const errorListeners: ((error: Error) => void)[] = []
  const kill = (error: Error) => {
    if (dead !== undefined) return
    dead = error
    if (session.destroy) session.destroy()
    else void session.end().catch(() => {})
    for (const listener of errorListeners) listener(error)
  }
  /** `start` may call `touch` whenever data arrives: a long COPY that keeps streaming is alive. */
  const guard = <R>(start: (touch: () => void) => Promise<R>): Promise<R> => {
    if (dead !== undefined) return Promise.reject(dead)
    const ms = timeoutMs()
    let heard = performance.now()
    const work = start(() => {
      heard = performance.now()
    })
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<never>((_, reject) => {
      const check = () => {
        const silent = performance.now() - heard
        if (silent < ms) {
          timer = setTimeout(check, ms - silent)
          return
        }
        const error = new KEntityError(
          ErrorCodes.STORE_FAILED,
          `the database did not answer a relay query within ${ms} ms (network partition, proxy or server stall?); the connection was closed and the relay reconnects`,
          { retryable: true },
        )
        kill(error)
        reject(error)
      }
      timer = setTimeout(check, ms)
    })
    // The driver rejects the query once its socket is destroyed: already reported above.
    work.catch(() => {})
    return Promise.race([work, expired]).finally(() => clearTimeout(timer))
  }
  const guarded: PgSession = {
    query: ((textOrConfig: never, values?: unknown[]) =>
      guard(() =>
        values === undefined ? session.query(textOrConfig) : session.query(textOrConfig, values),
      )) as PgSession['query'],
    async end() {
      if (dead !== undefined) return
      dead = new KEntityError(ErrorCodes.STORE_FAILED, 'the relay database session was ended', {
        retryable: true,
      })
      await waitAtMost(session.end(), 1000)
      session.destroy?.()
    },
    destroy() {
      kill(
        new KEntityError(ErrorCodes.STORE_FAILED, 'the relay database session was closed', {
          retryable: true,
        }),
      )
    },
    on(event: 'error' | 'notification', listener: (value: never) => void) {
      if (event === 'error') errorListeners.push(listener as (error: Error) => void)
      session.on(event as 'error', listener as (error: Error) => void)
      return guarded
    },
  }
  if (session.copyOut !== undefined) {
    const copyOut = session.copyOut.bind(session)
    guarded.copyOut = (text, onData) =>
      guard((touch) =>
        copyOut(text, (chunk) => {
          touch()
          onData(chunk)
        }),
      )
  }
  return guarded
}

/**
 * Longest a relay session may sit silent inside a claim before the server ends it (ms), when
 * `claimTimeout` is longer: a relay cut off from the database mid-claim (a partition, a frozen
 * process) then loses its rows and its leader lock after this, not after `claimTimeout`, so a
 * standby takes over in about 10 s. Below the client's query timeout, so the server has ended
 * the session before the relay notices and reconnects. A healthy relay whose batch takes longer
 * in Kafka keeps its claim with `CLAIM_HEARTBEAT_MS` pings, up to `claimTimeout`.
 */
export const CLAIM_SILENCE_MS = 8000
export const CLAIM_HEARTBEAT_MS = 2000

/** The server's `idle_in_transaction_session_timeout` for a relay with this `claimTimeout`. */
export function claimSilence(claimTimeout: number): number {
  return Math.trunc(Math.min(claimTimeout, CLAIM_SILENCE_MS))
}

/**
 * Pings an open claim every `CLAIM_HEARTBEAT_MS` while `open()` holds (at most until
 * `claimTimeout - silence` after it started, so the server still ends a claim about
 * `claimTimeout` after it began), skipping a beat while another query is on its way.
 */
export function keepClaimAlive(
  claimTimeout: number,
  open: () => boolean,
  idle: () => boolean,
  ping: () => Promise<unknown>,
): void {
  const until = performance.now() + claimTimeout - claimSilence(claimTimeout)
  const beat = () => {
    if (!open() || performance.now() + CLAIM_HEARTBEAT_MS > until) return
    if (idle()) void ping().catch(() => {})
    setTimeout(beat, CLAIM_HEARTBEAT_MS).unref()
  }
  if (performance.now() + CLAIM_HEARTBEAT_MS <= until) setTimeout(beat, CLAIM_HEARTBEAT_MS).unref()
}
