import { setTimeout as delay } from 'node:timers/promises'

/** Resolves after `ms`, or as soon as `signal` aborts; never rejects. */
export function waitOrAbort(ms: number, signal: AbortSignal): Promise<void> {
  return delay(ms, undefined, { signal }).catch(() => {})
}

/** Waits for `work` to settle, but no longer than `ms`; never rejects. */
export async function waitAtMost(work: Promise<unknown> | undefined, ms: number): Promise<void> {
  if (work === undefined) return
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms)
  })
  await Promise.race([work.catch(() => {}), expired])
  clearTimeout(timer)
}
