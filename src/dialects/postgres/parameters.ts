/**
 * Array parameters as PostgreSQL array literals (text). Drivers disagree on arrays: postgres.js
 * declares an array of Buffers as a single `bytea` and JSON-encodes `jsonb[]` elements a second
 * time, while node-postgres gets both right. A text literal means the same thing to every
 * driver and the statement's own casts (`$2::bytea[]`) decide the type, so the adapters that may
 * sit on either driver pass every array this way.
 */
export function withArrayLiterals(values: readonly unknown[]): unknown[] {
  return values.map((value) => (Array.isArray(value) ? arrayLiteral(value) : value))
}

function arrayLiteral(elements: readonly unknown[]): string {
  return `{${elements.map(element).join(',')}}`
}

function element(value: unknown): string {
  if (value === null || value === undefined) return 'NULL'
  if (value instanceof Uint8Array)
    return `"\\\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}"`
  if (typeof value === 'number' || typeof value === 'bigint') return String(value)
  if (typeof value === 'boolean') return value ? 't' : 'f'
  if (value instanceof Date) return `"${value.toISOString()}"`
  if (typeof value === 'string') return `"${value.replace(/[\\"]/g, '\\$&')}"`
  throw new TypeError(`cannot pass ${typeof value} as an element of a PostgreSQL array parameter`)
}
