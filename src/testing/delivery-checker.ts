import { describe, invalidArgument } from '../core/errors.ts'

/**
 * Checks the outbox's promise on what a topic ended up holding: every committed message arrives
 * (at least once), nothing rolled back or foreign arrives, and per key the first copies of the
 * messages arrive in commit order on a single partition. Duplicates are reported but allowed:
 * at-least-once delivery may resend a batch whose acknowledgement was lost.
 *
 * Pure logic, no I/O: tests decode what they read (see `readTracking` and `readTopicForChecker`).
 */

/** A message the test produced: committed ones are expected, rolled back ones forbidden. */
export interface TrackedMessage {
  /** Unique across the whole check. */
  id: string
  /** Messages with a null key have no ordering guarantee and are only checked for loss. */
  key: string | null
  /** Position in the commit order of its key; only compared between messages of the same key. */
  seq: number
}

/** A message read back from Kafka, already decoded to its tracking id. */
export interface ObservedMessage {
  id: string
  /** The Kafka key as read, used to spot a key spread over several partitions. */
  key: string | null
  partition: number
  offset: bigint | number
}

export interface DeliveryCheckInput {
  /** What the test committed. */
  expected: Iterable<TrackedMessage>
  /** What the test rolled back; only the id matters. */
  forbidden?: Iterable<Pick<TrackedMessage, 'id'>>
  /** What was read, in the order read within each partition. */
  observed: Iterable<ObservedMessage>
}

/** One message whose first copy was read after the first copy of a later message of its key. */
export interface ReorderExample {
  id: string
  key: string
  seq: number
  partition: number
  offset: bigint
  /** The highest-seq message of the key already read at that point. */
  afterId: string
  afterSeq: number
}

export interface DeliverySamples {
  lost: string[]
  phantom: string[]
  unknown: string[]
  duplicates: string[]
  outOfOrder: string[]
  keysOnSeveralPartitions: string[]
}

export interface DeliveryReport {
  /** True when nothing was lost, nothing forbidden or foreign arrived, and per-key order held. */
  ok: boolean
  expected: number
  /** Records read, copies included. */
  observed: number
  /** Distinct expected ids read. */
  delivered: number
  /** Expected ids never read. */
  lost: number
  /** Distinct forbidden (rolled back) ids read. */
  phantom: number
  /** Distinct ids read that are neither expected nor forbidden. */
  unknown: number
  /** Copies of expected messages beyond the first one. */
  duplicates: number
  /** Expected messages whose first copy came after the first copy of a higher seq of their key. */
  outOfOrder: number
  /** Distinct keys read on more than one partition. */
  keysOnSeveralPartitions: number
  /** Up to `SAMPLE_SIZE` ids (keys for `keysOnSeveralPartitions`) per failure kind. */
  samples: DeliverySamples
  /** Up to `SAMPLE_SIZE` reorders with what they were read after. */
  reorders: ReorderExample[]
}

export const SAMPLE_SIZE = 10

interface Located {
  message: ObservedMessage
  offset: bigint
  index: number
}

export function checkDelivery(input: DeliveryCheckInput): DeliveryReport {
  const expected = new Map<string, TrackedMessage>()
  const seqsByKey = new Map<string, Map<number, string>>()
  for (const message of input.expected) {
    checkTracked(message)
    if (expected.has(message.id))
      throw invalidArgument(`expected message id ${JSON.stringify(message.id)} is listed twice`)
    expected.set(message.id, message)
    if (message.key === null) continue
    let seqs = seqsByKey.get(message.key)
    if (seqs === undefined) {
      seqs = new Map()
      seqsByKey.set(message.key, seqs)
    }
    const other = seqs.get(message.seq)
    // Two messages with one seq would make "in order" undecidable for that key.
    if (other !== undefined) {
      throw invalidArgument(
        `expected messages ${JSON.stringify(other)} and ${JSON.stringify(message.id)} share key ${JSON.stringify(message.key)} and seq ${message.seq}`,
      )
    }
    seqs.set(message.seq, message.id)
  }
  const forbidden = new Set<string>()
  for (const message of input.forbidden ?? []) {
    if (typeof message?.id !== 'string')
      throw invalidArgument(`forbidden message id must be a string, got ${describe(message?.id)}`)
    if (expected.has(message.id)) {
      throw invalidArgument(`message id ${JSON.stringify(message.id)} is both expected and forbidden`)
    }
    forbidden.add(message.id)
  }

  const copies = new Map<string, number>()
  const partitionsByKey = new Map<string, Set<number>>()
  const observedByKey = new Map<string, Located[]>()
  const samples: DeliverySamples = {
    lost: [],
    phantom: [],
    unknown: [],
    duplicates: [],
    outOfOrder: [],
    keysOnSeveralPartitions: [],
  }
  let observed = 0
  let phantom = 0
  let unknown = 0
  let duplicates = 0
  for (const message of input.observed) {
    checkObserved(message)
    const index = observed++
    const seen = (copies.get(message.id) ?? 0) + 1
    copies.set(message.id, seen)
    if (message.key !== null) {
      let partitions = partitionsByKey.get(message.key)
      if (partitions === undefined) {
        partitions = new Set()
        partitionsByKey.set(message.key, partitions)
      }
      partitions.add(message.partition)
    }
    const tracked = expected.get(message.id)
    if (tracked === undefined) {
      if (seen > 1) continue
      if (forbidden.has(message.id)) {
        phantom++
        sample(samples.phantom, message.id)
      } else {
        unknown++
        sample(samples.unknown, message.id)
      }
      continue
    }
    if (seen === 2) sample(samples.duplicates, message.id)
    if (seen > 1) duplicates++
    // Ordering is checked under the key the test committed with, since seq is defined per that key.
    if (tracked.key === null) continue
    let located = observedByKey.get(tracked.key)
    if (located === undefined) {
      located = []
      observedByKey.set(tracked.key, located)
    }
    located.push({ message, offset: BigInt(message.offset), index })
  }

  let delivered = 0
  let lost = 0
  for (const id of expected.keys()) {
    if (copies.has(id)) {
      delivered++
    } else {
      lost++
      sample(samples.lost, id)
    }
  }

  let keysOnSeveralPartitions = 0
  for (const [key, partitions] of partitionsByKey) {
    if (partitions.size < 2) continue
    keysOnSeveralPartitions++
    sample(samples.keysOnSeveralPartitions, key)
  }

  let outOfOrder = 0
  const reorders: ReorderExample[] = []
  for (const [key, located] of observedByKey) {
    // Kafka orders records only inside a partition, so that is the order a consumer would see.
    located.sort(
      (a, b) =>
        a.message.partition - b.message.partition ||
        (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0) ||
        a.index - b.index,
    )
    const firstSeen = new Set<string>()
    let highest: TrackedMessage | undefined
    for (const { message, offset } of located) {
      // A later copy of an already-read message is a redelivery, already counted as a duplicate.
      if (firstSeen.has(message.id)) continue
      firstSeen.add(message.id)
      const tracked = expected.get(message.id) as TrackedMessage
      if (highest === undefined || tracked.seq > highest.seq) {
        highest = tracked
        continue
      }
      outOfOrder++
      sample(samples.outOfOrder, message.id)
      if (reorders.length < SAMPLE_SIZE) {
        reorders.push({
          id: message.id,
          key,
          seq: tracked.seq,
          partition: message.partition,
          offset,
          afterId: highest.id,
          afterSeq: highest.seq,
        })
      }
    }
  }

  return {
    ok: lost === 0 && phantom === 0 && unknown === 0 && outOfOrder === 0 && keysOnSeveralPartitions === 0,
    expected: expected.size,
    observed,
    delivered,
    lost,
    phantom,
    unknown,
    duplicates,
    outOfOrder,
    keysOnSeveralPartitions,
    samples,
    reorders,
  }
}

/** A multi-line summary, meant to be printed or used as an assertion message. */
export function formatReport(report: DeliveryReport): string {
  const lines = [
    `delivery check ${report.ok ? 'OK' : 'FAILED'}: ${report.delivered}/${report.expected} expected messages delivered, ${report.observed} records read`,
    line('lost', report.lost, report.samples.lost),
    line('duplicates (allowed)', report.duplicates, report.samples.duplicates),
    line('phantom (rolled back but delivered)', report.phantom, report.samples.phantom),
    line('unknown (neither expected nor rolled back)', report.unknown, report.samples.unknown),
    line('out of order', report.outOfOrder, report.samples.outOfOrder),
    line(
      'keys on several partitions',
      report.keysOnSeveralPartitions,
      report.samples.keysOnSeveralPartitions,
    ),
  ]
  for (const reorder of report.reorders) {
    lines.push(
      `    ${reorder.id} (key ${JSON.stringify(reorder.key)}, seq ${reorder.seq}) at partition ${reorder.partition} offset ${reorder.offset}, after ${reorder.afterId} (seq ${reorder.afterSeq})`,
    )
  }
  return lines.join('\n')
}

function line(label: string, count: number, ids: string[]): string {
  if (count === 0) return `  ${label}: 0`
  const shown = ids.map((id) => JSON.stringify(id)).join(', ')
  return `  ${label}: ${count} (${count > ids.length ? `first ${ids.length}: ` : ''}${shown})`
}

function sample(list: string[], id: string): void {
  if (list.length < SAMPLE_SIZE) list.push(id)
}

function checkTracked(message: TrackedMessage): void {
  if (typeof message?.id !== 'string')
    throw invalidArgument(`expected message id must be a string, got ${describe(message?.id)}`)
  if (message.key !== null && typeof message.key !== 'string') {
    throw invalidArgument(
      `expected message ${JSON.stringify(message.id)} key must be a string or null, got ${describe(message.key)}`,
    )
  }
  if (typeof message.seq !== 'number' || !Number.isFinite(message.seq)) {
    throw invalidArgument(
      `expected message ${JSON.stringify(message.id)} seq must be a finite number, got ${describe(message.seq)}`,
    )
  }
}

function checkObserved(message: ObservedMessage): void {
  if (typeof message?.id !== 'string')
    throw invalidArgument(`observed message id must be a string, got ${describe(message?.id)}`)
  if (!Number.isInteger(message.partition) || message.partition < 0) {
    throw invalidArgument(
      `observed message ${JSON.stringify(message.id)} partition must be a non-negative integer`,
    )
  }
  if (typeof message.offset !== 'bigint' && !Number.isInteger(message.offset)) {
    throw invalidArgument(
      `observed message ${JSON.stringify(message.id)} offset must be a bigint or an integer`,
    )
  }
}

export const TRACKING_ID_HEADER = 'ke-check-id'
export const TRACKING_SEQ_HEADER = 'ke-check-seq'

/** Tracking headers to attach to a produced message, as strings so they fit the outbox's `headers`. */
export function trackingHeaders(id: string, seq: number): { 'ke-check-id': string; 'ke-check-seq': string } {
  if (typeof id !== 'string' || id.length === 0)
    throw invalidArgument(`tracking id must be a non-empty string, got ${describe(id)}`)
  if (!Number.isSafeInteger(seq))
    throw invalidArgument(`tracking seq must be a safe integer, got ${describe(seq)}`)
  return { [TRACKING_ID_HEADER]: id, [TRACKING_SEQ_HEADER]: String(seq) } as {
    'ke-check-id': string
    'ke-check-seq': string
  }
}

type HeaderBytes = string | Uint8Array | null | undefined

/** Headers as consumed (`[name, value]` pairs in wire order), a Map, or a plain object. */
export type HeadersLike =
  | Iterable<readonly [string | Uint8Array, HeaderBytes]>
  | Readonly<Record<string, HeaderBytes>>

/**
 * The tracking id and seq carried by `trackingHeaders`, or null when either is missing or
 * malformed. When a header is repeated the last value wins, as in a Map built from the wire.
 */
export function readTracking(headers: HeadersLike): { id: string; seq: number } | null {
  let id: string | undefined
  let seq: string | undefined
  const entries: Iterable<readonly [string | Uint8Array, HeaderBytes]> =
    Symbol.iterator in headers
      ? (headers as Iterable<readonly [string | Uint8Array, HeaderBytes]>)
      : Object.entries(headers as Record<string, HeaderBytes>)
  for (const [rawName, value] of entries) {
    const name = typeof rawName === 'string' ? rawName : Buffer.from(rawName).toString('utf8')
    if (name === TRACKING_ID_HEADER) id = text(value)
    else if (name === TRACKING_SEQ_HEADER) seq = text(value)
  }
  if (id === undefined || id.length === 0 || seq === undefined || !/^-?\d+$/.test(seq)) return null
  const parsed = Number(seq)
  return Number.isSafeInteger(parsed) ? { id, seq: parsed } : null
}

function text(value: HeaderBytes): string | undefined {
  if (value === null || value === undefined) return undefined
  return typeof value === 'string'
    ? value
    : Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8')
}
