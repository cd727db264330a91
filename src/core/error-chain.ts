/**
 * The errors an error wraps, outermost first: ORMs and query builders wrap the driver's error
 * (Drizzle's `cause`, aggregate errors' `errors`, Prisma's `meta.driverAdapterError`), the Kafka client nests a request's errors per
 * broker and partition, and the code that says what went wrong is often on an inner one.
 * Bounded, since causes can form cycles.
 */
export function errorChain(error: unknown, limit = 64): Array<Record<string, unknown>> {
  const chain: Array<Record<string, unknown>> = []
  const seen = new Set<unknown>()
  const queue: unknown[] = [error]
  while (queue.length > 0 && chain.length < limit) {
    const next = queue.shift()
    if (typeof next !== 'object' || next === null || seen.has(next)) continue
    seen.add(next)
    chain.push(next as Record<string, unknown>)
    const { cause, errors, originalError, meta } = next as {
      cause?: unknown
      errors?: unknown
      originalError?: unknown
      meta?: { driverAdapterError?: unknown }
    }
    // Prisma's driver adapters keep the database's error under meta.driverAdapterError, whose
    // cause holds the database's code as `originalCode` (see the dialects' classifyFailure).
    const adapterError = typeof meta === 'object' && meta !== null ? meta.driverAdapterError : undefined
    queue.push(cause, originalError, adapterError)
    if (Array.isArray(errors)) queue.push(...errors)
  }
  return chain
}

/** The first value of `field` along the chain that the table knows, mapped. */
export function lookUp<K extends string | number, V>(
  error: unknown,
  field: string,
  table: Readonly<Partial<Record<K, V>>>,
): V | undefined {
  for (const link of errorChain(error)) {
    const value = link[field]
    if ((typeof value === 'string' || typeof value === 'number') && Object.hasOwn(table, value)) {
      return table[value as K]
    }
  }
  return undefined
}
