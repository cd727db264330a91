import { describe, invalidArgument } from '../core/errors.ts'
import { RELAY_DEFAULTS, type RelayOptions } from '../core/relay.ts'

/**
 * Longest `claimTimeout` accepted, in ms (24 h). It becomes session timeouts on the database
 * (PostgreSQL's `idle_in_transaction_session_timeout` takes at most about 24.8 days, MySQL's
 * `wait_timeout` 365 days, and a value past those makes every connect fail, forever), and it is
 * how long a relay that stalls may keep the messages it claimed, and every later message of their
 * keys, from being sent: a day is already far more than any batch needs.
 */
export const MAX_CLAIM_TIMEOUT_MS = 24 * 3_600_000

/**
 * The options object of a dialect's `relay()` and its `claimTimeout`, checked the same way for
 * every database (the relay loop checks the rest of the options itself).
 */
export function checkedClaimTimeout(options: unknown, fallback = 60_000): number {
  if (typeof options !== 'object' || options === null)
    throw invalidArgument('relay options must be an object')
  const claimTimeout = (options as { claimTimeout?: unknown }).claimTimeout ?? fallback
  if (typeof claimTimeout !== 'number' || !Number.isInteger(claimTimeout) || claimTimeout < 1000) {
    throw invalidArgument(
      `relay option 'claimTimeout' must be an integer number of ms >= 1000, got ${describe(claimTimeout)}`,
    )
  }
  if (claimTimeout > MAX_CLAIM_TIMEOUT_MS) {
    throw invalidArgument(
      `relay option 'claimTimeout' must be at most ${MAX_CLAIM_TIMEOUT_MS} ms (24 h), got ${claimTimeout}: it is how long a stalled relay may hold the messages it claimed (and every later message of their keys), and the database session timeout it becomes has a ceiling (PostgreSQL's is about 24.8 days) past which every connection attempt would fail`,
    )
  }
  return claimTimeout
}

/**
 * The longest a healthy relay stays silent on its session, in ms: it polls once per
 * `pollingInterval`, and in every mode it may stand by, asking once per `leaderCheckInterval`.
 * Session timeouts are set well above it, so they end only relays that stalled.
 */
export function relayIdle(options: Pick<RelayOptions, 'pollingInterval' | 'leaderCheckInterval'>): number {
  return Math.max(
    options.pollingInterval ?? RELAY_DEFAULTS.pollingInterval,
    options.leaderCheckInterval ?? RELAY_DEFAULTS.leaderCheckInterval,
  )
}
