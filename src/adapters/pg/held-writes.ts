import type { HeldWrite } from '../../dialects/postgres/commit-buffer.ts'
import { Submittable } from './submittable.ts'

/** The parts of node-postgres's connection a submittable writes to (its extended-protocol messages). */
interface WireConnection {
  stream: { cork?: () => void; uncork?: () => void }
  close(message: { type: 'S'; name: string }): void
  parse(message: { name?: string; text: string; types?: number[] }): void
  bind(message: { statement?: string; values?: readonly unknown[] }): void
  execute(message: Record<string, never>): void
  sync(): void
}

/**
 * A node-postgres "submittable" that sends held outbox writes, and optionally the COMMIT behind
 * them, as one extended-protocol pipeline ending in one Sync: one round trip, one write to the
 * socket. Each write is a Bind/Execute of a named statement (with its Parse the first time on the
 * connection), so bytes travel as binary parameters and nothing is parsed as SQL text. After an
 * error the server skips everything up to the Sync, so a COMMIT behind a failed write never runs.
 *
 * Not for clients in node-postgres's pipeline mode, which refuses custom query objects.
 */
export class HeldWritesQuery extends Submittable {
  readonly #writes: readonly HeldWrite[]
  /** Per write, its values as protocol parameters: mapped up front, so `submit()` cannot fail half-way. */
  readonly #parameters: (string | Buffer | null)[][]
  readonly #commit: boolean

  constructor(writes: readonly HeldWrite[], commit: boolean) {
    super()
    this.#writes = writes
    this.#parameters = writes.map((write) => write.values.map(wireValue))
    this.#commit = commit
  }

  submit(connection: WireConnection): void {
    // Every message lands in one socket write, as node-postgres does for its own statements.
    connection.stream.cork?.()
    try {
      this.#writes.forEach((write, index) => {
        // Closing a statement that does not exist is no error, so an uncertain one can be closed.
        if (write.close) connection.close({ type: 'S', name: write.name })
        if (write.prepare) connection.parse({ name: write.name, text: write.text, types: [] })
        connection.bind({ statement: write.name, values: this.#parameters[index] })
        connection.execute({})
      })
      if (this.#commit) {
        connection.parse({ text: 'COMMIT', types: [] })
        connection.bind({})
        connection.execute({})
      }
      connection.sync()
    } finally {
      connection.stream.uncork?.()
    }
  }
}

/**
 * A statement value as a protocol parameter: bytes as binary, everything else as text. The
 * outbox's statements bind strings, integers, bytes, nulls and (for multi-row writes) arrays of
 * those, each cast in the statement text.
 */
function wireValue(value: unknown): string | Buffer | null {
  if (value === null || value === undefined) return null
  if (Buffer.isBuffer(value) || typeof value === 'string') return value
  if (typeof value === 'number') return String(value)
  if (Array.isArray(value)) return arrayLiteral(value)
  throw new TypeError(`cannot bind a value of type ${typeof value}`)
}

/** A PostgreSQL array literal: each element double-quoted, with `"` and `\` escaped; bytes as hex. */
function arrayLiteral(values: readonly unknown[]): string {
  let text = '{'
  for (let i = 0; i < values.length; i++) {
    if (i > 0) text += ','
    const value = values[i]
    if (value === null || value === undefined) {
      text += 'NULL'
      continue
    }
    const element = Buffer.isBuffer(value) ? `\\x${value.toString('hex')}` : String(value)
    text += `"${element.replace(/[\\"]/g, '\\$&')}"`
  }
  return `${text}}`
}
