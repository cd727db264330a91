import { ErrorCodes, KEntityError } from '../core/errors.ts'

/**
 * Longest a relay statement may go unanswered before the relay gives its session up (ms): the
 * server's own timeouts cannot reach a relay when the network is gone, and TCP keeps a
 * connection whose peer went silent open for many minutes. The relay's statements take
 * milliseconds. Above `CLAIM_SILENCE_MS`, so the server has ended the session (rolling back its
 * claim, freeing its leader lock) before the relay notices and reconnects.
 */
export const RELAY_QUERY_TIMEOUT_MS = 10_000

/**
 * Longest a relay session may sit silent inside a claim before the server ends it (ms), when
 * `claimTimeout` is longer: a relay cut off from the database mid-claim (a partition, a frozen
 * process) then loses its rows and its leader lock after this, not after `claimTimeout`, so a
 * standby takes over in about 10 s. A healthy relay whose batch takes longer in Kafka keeps its
 * claim with `CLAIM_HEARTBEAT_MS` pings, up to `claimTimeout`.
 */
export const CLAIM_SILENCE_MS = 8000
export const CLAIM_HEARTBEAT_MS = 2000

/**
 * Pings an open claim every `CLAIM_HEARTBEAT_MS` while `open()` holds, at most until
 * `claimTimeout - silence` after it started (so the server, which ends a session silent for
 * `silence`, still ends a claim about `claimTimeout` after it began), skipping a beat while
 * another statement is on its way.
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
 * The deadline half of a relay session that must answer every statement in time: once a
 * statement goes unanswered, the connection is torn down (`close`), that statement and every
 * later one reject with a retryable `KE_STORE_FAILED`, and the listeners hear it, so the relay
 * drops the session, stops relaying what it claimed on it, and reconnects.
 */
export class SessionDeadline {
  #dead: Error | undefined
  readonly #listeners: ((error: Error) => void)[] = []
  readonly #close: () => void

  constructor(close: () => void) {
    this.#close = close
  }

  get dead(): Error | undefined {
    return this.#dead
  }

  onDead(listener: (error: Error) => void): void {
    this.#listeners.push(listener)
  }

  kill(error: Error): void {
    if (this.#dead !== undefined) return
    this.#dead = error
    this.#close()
    for (const listener of this.#listeners) listener(error)
  }

  /** Marks the session ended by its owner (later statements reject); returns whether it was alive. */
  ended(): boolean {
    if (this.#dead !== undefined) return false
    this.#dead = storeFailed('the relay database session was ended')
    return true
  }

  destroy(): void {
    this.kill(storeFailed('the relay database session was closed'))
  }

  /**
   * Runs `start` unless the session is dead, and kills the session if it stays silent for `ms`.
   * `start` may call `touch` whenever data arrives: a long COPY that keeps streaming is alive.
   */
  run<R>(ms: number, what: string, start: (touch: () => void) => Promise<R>): Promise<R> {
    if (this.#dead !== undefined) return Promise.reject(this.#dead)
    let heard = performance.now()
    const work = start(() => {
      heard = performance.now()
    })
    // The driver rejects the statement once its socket is torn down: already reported.
    work.catch(() => {})
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<never>((_, reject) => {
      const check = () => {
        const silent = performance.now() - heard
        if (silent < ms) {
          timer = setTimeout(check, ms - silent)
          return
        }
        const error = storeFailed(
          `the database did not answer a relay ${what} within ${ms} ms (network partition, proxy or server stall?); the connection was closed and the relay reconnects`,
        )
        this.kill(error)
        reject(error)
      }
      timer = setTimeout(check, ms)
    })
    return Promise.race([work, expired]).finally(() => clearTimeout(timer))
  }
}

function storeFailed(message: string): KEntityError {
  return new KEntityError(ErrorCodes.STORE_FAILED, message, { retryable: true })
}
