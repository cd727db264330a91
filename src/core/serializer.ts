import { describe, ErrorCodes, KEntityError } from './errors.ts'

/**
 * Turns a message value into the bytes stored in the outbox and sent to Kafka.
 * `null` is reserved for Kafka tombstones and is never passed to a serializer.
 */
export interface Serializer<T> {
  readonly name: string
  serialize(value: T): Buffer
}

function toBuffer(value: Uint8Array): Buffer {
  return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength)
}

/**
 * The default: strings and bytes pass through untouched (so pre-encoded payloads are not
 * double-quoted), everything else is JSON. BigInt, cycles and `undefined` fail loudly here rather
 * than producing a payload the consumer cannot read.
 */
export const jsonSerializer: Serializer<unknown> = {
  name: 'json',
  serialize(value: unknown): Buffer {
    if (typeof value === 'string') return Buffer.from(value, 'utf8')
    if (value instanceof Uint8Array) return toBuffer(value)
    if (value === undefined || typeof value === 'function' || typeof value === 'symbol') {
      throw new KEntityError(
        ErrorCodes.SERIALIZATION_FAILED,
        `JSON cannot represent ${describe(value)}; produce an object, array, string, number, boolean, Buffer or null (tombstone)`,
      )
    }
    let text: string | undefined
    try {
      text = JSON.stringify(value)
    } catch (cause) {
      const reason = cause instanceof Error ? cause.message : String(cause)
      throw new KEntityError(
        ErrorCodes.SERIALIZATION_FAILED,
        `JSON serialization failed: ${reason}. Convert BigInt values to strings and remove circular references, or give the topic its own serializer`,
        { cause },
      )
    }
    return Buffer.from(text as string, 'utf8')
  },
}

export const stringSerializer: Serializer<string> = {
  name: 'string',
  serialize(value: string): Buffer {
    if (typeof value !== 'string') {
      throw new KEntityError(
        ErrorCodes.SERIALIZATION_FAILED,
        `the string serializer got ${describe(value)}; produce a string or choose another serializer`,
      )
    }
    return Buffer.from(value, 'utf8')
  },
}

export const bufferSerializer: Serializer<Uint8Array> = {
  name: 'buffer',
  serialize(value: Uint8Array): Buffer {
    if (!(value instanceof Uint8Array)) {
      throw new KEntityError(
        ErrorCodes.SERIALIZATION_FAILED,
        `the buffer serializer got ${describe(value)}; produce a Buffer or Uint8Array or choose another serializer`,
      )
    }
    return toBuffer(value)
  },
}

export function isSerializer(value: unknown): value is Serializer<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Serializer<unknown>).serialize === 'function' &&
    typeof (value as Serializer<unknown>).name === 'string'
  )
}

export function bytesOf(value: string | Uint8Array): Buffer {
  return typeof value === 'string' ? Buffer.from(value, 'utf8') : toBuffer(value)
}
