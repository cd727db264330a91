// Counts PostgreSQL round trips and statements made through node-postgres in this process.
//
// pg_stat_statements is not loaded on the benchmark machine (shared_preload_libraries is empty,
// and loading it needs a server restart), so the relay's own process counts instead: every
// `Client.prototype.query` call is one round trip (one simple-query or extended-query exchange),
// and every result set it returns is one statement (a multi-statement simple query such as
// `BEGIN; SELECT ...` is one round trip and two statements). Pools create `pg.Client`s, so this
// also covers pg-transactional-outbox's pools. Clients marked with `ignoreClient` (the
// benchmark's own bookkeeping) are not counted.
import pg from 'pg'

export interface QueryCounts {
  roundTrips: number
  statements: number
}

const IGNORED = Symbol('k-entity-bench-ignored')
const counts: QueryCounts = { roundTrips: 0, statements: 0 }
let installed = false

export function installQueryCounter(): void {
  if (installed) return
  installed = true
  const prototype = pg.Client.prototype as unknown as {
    query: (...args: unknown[]) => unknown
  }
  const original = prototype.query
  prototype.query = function countedQuery(this: Record<symbol, unknown>, ...args: unknown[]) {
    const result = original.apply(this, args)
    if (this[IGNORED] === true) return result
    counts.roundTrips++
    if (result instanceof Promise) {
      result.then(
        (value: unknown) => {
          counts.statements += Array.isArray(value) ? value.length : 1
        },
        () => {
          counts.statements += 1
        },
      )
    } else if (isCountedSubmittable(result)) {
      // The relay's COPY claim (k-entity's CopyOutQuery): it counts its completed statements.
      const settled = () => {
        counts.statements += result.completed
      }
      result.done.then(settled, settled)
    } else {
      // Callback or other Submittable style: count it as one statement.
      counts.statements += 1
    }
    return result
  }
}

function isCountedSubmittable(value: unknown): value is { done: Promise<void>; completed: number } {
  const candidate = value as { done?: unknown; completed?: unknown } | null
  return candidate?.done instanceof Promise && typeof candidate.completed === 'number'
}

export function ignoreClient(client: pg.Client): pg.Client {
  ;(client as unknown as Record<symbol, unknown>)[IGNORED] = true
  return client
}

export function queryCounts(): QueryCounts {
  return { ...counts }
}

export function resetQueryCounts(): void {
  counts.roundTrips = 0
  counts.statements = 0
}
