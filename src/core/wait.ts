import { setTimeout as delay } from 'node:timers/promises'

/** Resolves after `ms`, or as soon as `signal` aborts; never rejects. */
export function waitOrAbort(ms: number, signal: AbortSignal): Promise<void> {
  return delay(ms, undefined, { signal }).catch(() => {})
}
