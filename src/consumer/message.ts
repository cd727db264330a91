import type { Message } from '@platformatic/kafka'
import { ErrorCodes, KEntityError } from '../core/errors.ts'
import type { RecordHeader } from '../core/record.ts'
import type { Topic } from '../core/topic.ts'

/** One Kafka record of a typed topic, as a consumer's handler (or loop) gets it. */
export interface ConsumedMessage<T> {
  /** The deserialized value; `null` for a tombstone (a record without a value). */
  value: T | null
  key: Buffer | null
  /** Headers by name (when a name repeats, the last one). */
  headers: Readonly<Record<string, Buffer>>
  /** Every header in wire order, repeated names kept. */
  headerList: readonly RecordHeader[]
  topic: string
  partition: number
  offset: bigint
  /** The record's timestamp, in ms since the epoch. */
  timestamp: bigint
  /** 1 on the first try, 2 on the first retry after a handler failure, ... */
  attempt: number
}

/** A record as the Kafka client delivers it (raw bytes: the consumer deserializes, see `toMessage`). */
export type RawRecord = Message<Buffer, Buffer, Buffer, Buffer>

export function partitionKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`
}

/** A record's headers: by name (the last one of a repeated name; null kept), and in wire order. */
export function readHeaders(raw: RawRecord): {
  headers: Record<string, Buffer | null>
  headerList: RecordHeader[]
} {
  const headerList: RecordHeader[] = []
  const headers: Record<string, Buffer | null> = {}
  for (const [name, value] of raw.headerEntries) {
    const text = name.toString('utf8')
    headerList.push([text, value ?? null])
    headers[text] = value ?? null
  }
  return { headers, headerList }
}

/**
 * The typed message of a raw record. A deserializer failure is `KE_SERIALIZATION_FAILED`, which
 * the consumer treats like a handler failure: retried, then dead-lettered, never skipped silently.
 */
export function toMessage<T>(topic: Topic<T>, raw: RawRecord, attempt: number): ConsumedMessage<T> {
  const { headerList } = readHeaders(raw)
  const headers: Record<string, Buffer> = {}
  for (const [name, value] of headerList) headers[name] = value ?? Buffer.alloc(0)
  let value: T | null = null
  if (raw.value !== undefined && raw.value !== null) {
    const deserializer = topic.deserializer
    if (deserializer === undefined) {
      throw new KEntityError(
        ErrorCodes.SERIALIZATION_FAILED,
        `topic '${topic.name}' has a custom serializer and no deserializer; give defineTopic() a deserializer`,
      )
    }
    try {
      value = deserializer.deserialize(raw.value)
    } catch (cause) {
      const reason = cause instanceof Error ? cause.message : String(cause)
      throw new KEntityError(
        ErrorCodes.SERIALIZATION_FAILED,
        `topic '${topic.name}' partition ${raw.partition} offset ${raw.offset}: deserializer '${deserializer.name}' failed: ${reason}`,
        { cause },
      )
    }
  }
  return {
    value,
    key: raw.key === undefined || raw.key === null ? null : raw.key,
    headers,
    headerList,
    topic: raw.topic,
    partition: raw.partition,
    offset: raw.offset,
    timestamp: raw.timestamp,
    attempt,
  }
}
