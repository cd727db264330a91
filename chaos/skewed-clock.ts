/**
 * Preloaded (`node --import`) into a relay process by `--clock-skew`: the host's clock is off by
 * CHAOS_CLOCK_SKEW_MS. `Date.now()` and `new Date()` read the skewed wall clock, as every library
 * in the process would on such a host; `performance.now()` and timers stay monotonic, as they are.
 */
const skewMs = Number(process.env.CHAOS_CLOCK_SKEW_MS ?? '0')
if (!Number.isFinite(skewMs)) throw new Error(`CHAOS_CLOCK_SKEW_MS must be a number, got ${skewMs}`)

if (skewMs !== 0) {
  const RealDate = Date
  class SkewedDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(RealDate.now() + skewMs)
      else super(...(args as [string | number]))
    }
    static override now(): number {
      return RealDate.now() + skewMs
    }
  }
  globalThis.Date = SkewedDate as DateConstructor
}
