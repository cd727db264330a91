import { describe, invalidArgument } from '../core/errors.ts'
import type { RecordHeader } from '../core/record.ts'
import { type RawRecord, readHeaders } from './message.ts'

/** A record as a filter sees it: before its value is deserialized. */
export interface FilterRecord {
  key: Buffer | null
  /** The value's bytes as they are on the wire, not deserialized; `null` for a tombstone. */
  value: Buffer | null
  /** Headers by name (when a name repeats, the last one). */
  headers: Readonly<Record<string, Buffer>>
  /** Every header in wire order, repeated names kept. */
  headerList: readonly RecordHeader[]
  topic: string
  partition: number
  offset: bigint
  timestamp: bigint
}

/** One accepted header value: a string is compared as its UTF-8 bytes. */
export type FilterHeaderValue = string | Uint8Array

/**
 * Which records reach the handler (or the `for await` loop); the others are skipped.
 *
 * - `{ headers: { 'event-type': 'OrderCreated' } }`: every header named must be present, and its
 *   value (the last one when the name repeats, as `message.headers` has it) must equal the given
 *   value byte for byte (a string as its UTF-8 bytes, so case and whitespace count). A list
 *   (`['OrderCreated', 'OrderPaid']`) accepts any of its values. A record without the header
 *   (or with a null value) does not match.
 * - `(record) => boolean`: a predicate on the record before deserialization (its value is raw
 *   bytes). It must return `true` (keep) or `false` (skip): anything else, or a throw, is a
 *   failure of that message, retried and then dead-lettered like a handler's.
 *
 * A skipped record is not handed to the handler, writes no inbox row and no dead letter, and its
 * offset is committed like a handled one's; it is counted in `counts.filtered`. Filters run
 * before the value is deserialized: a record with unreadable bytes that is filtered out is
 * skipped, not dead-lettered (one that is kept is dead-lettered as before).
 */
export type ConsumerFilter =
  | { headers: Readonly<Record<string, FilterHeaderValue | readonly FilterHeaderValue[]>> }
  | ((record: FilterRecord) => boolean)

/** Whether a raw record is kept; throws on a predicate's non-boolean answer. */
export type RecordFilter = (raw: RawRecord) => boolean

export function resolveFilter(filter: unknown, where: string): RecordFilter | undefined {
  if (filter === undefined) return undefined
  if (typeof filter === 'function') {
    const predicate = filter as (record: FilterRecord) => unknown
    return (raw) => {
      const answer = predicate(filterRecord(raw))
      if (typeof answer !== 'boolean') {
        throw invalidArgument(
          `${where}: 'filter' must return true (keep) or false (skip), got ${describe(answer)} for topic '${raw.topic}' partition ${raw.partition} offset ${raw.offset}`,
        )
      }
      return answer
    }
  }
  const example = `{ headers: { 'event-type': 'OrderCreated' } } or (record) => boolean`
  if (typeof filter !== 'object' || filter === null) {
    throw invalidArgument(`${where}: 'filter' must be ${example}, got ${describe(filter)}`)
  }
  const { headers, ...rest } = filter as { headers?: unknown }
  const unknownKeys = Object.keys(rest)
  if (unknownKeys.length > 0) {
    throw invalidArgument(
      `${where}: 'filter' takes only 'headers' (or is a function), got '${unknownKeys.join("', '")}'; use ${example}`,
    )
  }
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) {
    throw invalidArgument(
      `${where}: 'filter.headers' must be an object like { 'event-type': 'OrderCreated' }, got ${describe(headers)}`,
    )
  }
  const wanted: [string, Buffer[]][] = []
  for (const [name, value] of Object.entries(headers)) {
    if (name === '') throw invalidArgument(`${where}: 'filter.headers' has an empty header name`)
    const values = Array.isArray(value) ? value : [value]
    if (values.length === 0) {
      throw invalidArgument(
        `${where}: 'filter.headers.${name}' is an empty list, which no record could match; remove it or give values`,
      )
    }
    wanted.push([
      name,
      values.map((one: unknown) => {
        if (typeof one === 'string') return Buffer.from(one, 'utf8')
        if (one instanceof Uint8Array) return Buffer.from(one.buffer, one.byteOffset, one.byteLength)
        throw invalidArgument(
          `${where}: 'filter.headers.${name}' must be a string, a Buffer or a list of them, got ${describe(one)}`,
        )
      }),
    ])
  }
  if (wanted.length === 0) {
    throw invalidArgument(
      `${where}: 'filter.headers' is empty; name at least one header, or leave 'filter' out`,
    )
  }
  return (raw) => {
    const { headers: present } = readHeaders(raw)
    return wanted.every(([name, values]) => {
      const actual = present[name]
      return actual !== undefined && actual !== null && values.some((value) => value.equals(actual))
    })
  }
}

function filterRecord(raw: RawRecord): FilterRecord {
  const { headers, headerList } = readHeaders(raw)
  return {
    key: raw.key ?? null,
    value: raw.value ?? null,
    headers: Object.fromEntries(
      Object.entries(headers).map(([name, value]) => [name, value ?? Buffer.alloc(0)]),
    ),
    headerList,
    topic: raw.topic,
    partition: raw.partition,
    offset: raw.offset,
    timestamp: raw.timestamp,
  }
}
