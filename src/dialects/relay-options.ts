import { describe, invalidArgument } from '../core/errors.ts'

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
  return claimTimeout
}
