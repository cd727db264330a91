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

/**
 * Turns the bytes of a consumed Kafka record back into a message. `null` values (tombstones)
 * never reach it: the consumer hands them over as `null`.
 */
export interface Deserializer<T> {
  readonly name: string
  deserialize(bytes: Buffer): T
}

/** JSON text to a value; a record that is not JSON fails with `KE_SERIALIZATION_FAILED`. */
export const jsonDeserializer: Deserializer<unknown> = {
  name: 'json',
  deserialize(bytes: Buffer): unknown {
    try {
      return JSON.parse(bytes.toString('utf8'))
    } catch (cause) {
      throw new KEntityError(
        ErrorCodes.SERIALIZATION_FAILED,
        `the record is not JSON (${cause instanceof Error ? cause.message : String(cause)}); a topic whose producers send plain text needs stringDeserializer, raw bytes bufferDeserializer`,
        { cause },
      )
    }
  },
}

export const stringDeserializer: Deserializer<string> = {
  name: 'string',
  deserialize: (bytes: Buffer): string => bytes.toString('utf8'),
}

export const bufferDeserializer: Deserializer<Buffer> = {
  name: 'buffer',
  deserialize: (bytes: Buffer): Buffer => bytes,
}

export function isDeserializer(value: unknown): value is Deserializer<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Deserializer<unknown>).deserialize === 'function' &&
    typeof (value as Deserializer<unknown>).name === 'string'
  )
}

/** The provided deserializer matching a provided serializer; none for a custom one. */
export function deserializerFor(serializer: Serializer<unknown>): Deserializer<unknown> | undefined {
  if (serializer === jsonSerializer) return jsonDeserializer
  if (serializer === (stringSerializer as Serializer<unknown>)) return stringDeserializer
  if (serializer === (bufferSerializer as Serializer<unknown>)) return bufferDeserializer
  return undefined
}
