export interface BackoffOptions {
  /** First delay in ms. */
  initial: number
  /** Upper bound in ms. */
  max: number
}

/**
 * Exponential backoff with "equal jitter": half the delay is fixed so a failing relay never
 * spins, half is random so relays that failed together do not retry in lockstep.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions,
  random: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 30)
  const ceiling = Math.min(options.max, options.initial * 2 ** exponent)
  return Math.round(ceiling / 2 + random() * (ceiling / 2))
}
