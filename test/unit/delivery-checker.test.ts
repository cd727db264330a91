import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { isKEntityError } from '../../src/core/errors.ts'
import {
  checkDelivery,
  formatReport,
  type ObservedMessage,
  readTracking,
  type TrackedMessage,
  trackingHeaders,
} from '../../src/testing/delivery-checker.ts'
import { type ConsumedMessage, observedFromConsumed } from '../../src/testing/read-topic.ts'

/** `count` messages per key, ids `<key>-<seq>`, seq 0.. in commit order. */
function committed(keys: string[], count: number): TrackedMessage[] {
  const messages: TrackedMessage[] = []
  for (let seq = 0; seq < count; seq++) {
    for (const key of keys) messages.push({ id: `${key}-${seq}`, key, seq })
  }
  return messages
}

/** Reads them back in commit order, one partition per key, offsets counting per partition. */
function delivered(
  messages: TrackedMessage[],
  partitionOf: (key: string | null) => number = partitionByKey,
): ObservedMessage[] {
  const offsets = new Map<number, number>()
  return messages.map((message) => {
    const partition = partitionOf(message.key)
    const offset = offsets.get(partition) ?? 0
    offsets.set(partition, offset + 1)
    return { id: message.id, key: message.key, partition, offset: BigInt(offset) }
  })
}

function partitionByKey(key: string | null): number {
  return key === null ? 0 : key.charCodeAt(key.length - 1) % 3
}

describe('checkDelivery', () => {
  test('everything delivered once, in order: ok', () => {
    const expected = committed(['a', 'b', 'c'], 5)
    const report = checkDelivery({ expected, observed: delivered(expected) })
    assert.equal(report.ok, true, formatReport(report))
    assert.equal(report.expected, 15)
    assert.equal(report.observed, 15)
    assert.equal(report.delivered, 15)
    for (const field of [
      'lost',
      'phantom',
      'unknown',
      'duplicates',
      'outOfOrder',
      'keysOnSeveralPartitions',
    ] as const) {
      assert.equal(report[field], 0, field)
    }
    assert.deepEqual(report.samples.lost, [])
  })

  test('lost messages are counted and sampled (at most 10)', () => {
    const expected = committed(['a', 'b'], 20)
    const missing = new Set(expected.filter((m) => m.key === 'b' && m.seq >= 5).map((m) => m.id))
    const report = checkDelivery({
      expected,
      observed: delivered(expected.filter((m) => !missing.has(m.id))),
    })
    assert.equal(report.ok, false)
    assert.equal(report.lost, 15)
    assert.equal(report.delivered, 25)
    assert.deepEqual(report.samples.lost, [
      'b-5',
      'b-6',
      'b-7',
      'b-8',
      'b-9',
      'b-10',
      'b-11',
      'b-12',
      'b-13',
      'b-14',
    ])
    // A gap is not a reorder: what did arrive is still in commit order.
    assert.equal(report.outOfOrder, 0)
  })

  test('rolled back messages that arrive are phantoms, copies counted once', () => {
    const expected = committed(['a'], 3)
    const forbidden = [{ id: 'rolled-back-1' }, { id: 'rolled-back-2', key: 'a', seq: 99 }]
    const observed = delivered(expected)
    observed.push({ id: 'rolled-back-1', key: 'a', partition: 1, offset: 3n })
    observed.push({ id: 'rolled-back-1', key: 'a', partition: 1, offset: 4n })
    const report = checkDelivery({ expected, forbidden, observed })
    assert.equal(report.ok, false)
    assert.equal(report.phantom, 1)
    assert.equal(report.unknown, 0)
    assert.deepEqual(report.samples.phantom, ['rolled-back-1'])
    assert.equal(report.duplicates, 0, 'copies of a phantom are not at-least-once duplicates')
    assert.equal(report.outOfOrder, 0, 'phantoms have no place in the commit order')
  })

  test('ids neither expected nor forbidden are unknown', () => {
    const expected = committed(['a'], 2)
    const observed = [...delivered(expected), { id: 'stranger', key: 'zz', partition: 2, offset: 0n }]
    const report = checkDelivery({ expected, forbidden: [{ id: 'rolled-back' }], observed })
    assert.equal(report.ok, false)
    assert.equal(report.unknown, 1)
    assert.equal(report.phantom, 0)
    assert.deepEqual(report.samples.unknown, ['stranger'])
  })

  test('a redelivered batch is duplicates, not a reorder', () => {
    const expected = committed(['a'], 6)
    // The relay sent a-0..a-3, lost the ack, resent a-2..a-3 and went on: a-0 a-1 a-2 a-3 a-2 a-3 a-4 a-5.
    const order = ['a-0', 'a-1', 'a-2', 'a-3', 'a-2', 'a-3', 'a-4', 'a-5']
    const observed = order.map((id, offset) => ({ id, key: 'a', partition: 0, offset: BigInt(offset) }))
    const report = checkDelivery({ expected, observed })
    assert.equal(report.ok, true, formatReport(report))
    assert.equal(report.duplicates, 2)
    assert.deepEqual(report.samples.duplicates, ['a-2', 'a-3'])
    assert.equal(report.outOfOrder, 0)
    assert.equal(report.delivered, 6)
    assert.equal(report.observed, 8)
  })

  test('a message whose first copy comes after a later one of its key is out of order', () => {
    const expected = committed(['a', 'b'], 4)
    // a-1 overtakes a-0; b stays in order and is interleaved on another partition.
    const observed: ObservedMessage[] = [
      { id: 'a-1', key: 'a', partition: 0, offset: 10n },
      { id: 'a-0', key: 'a', partition: 0, offset: 11n },
      { id: 'a-2', key: 'a', partition: 0, offset: 12n },
      { id: 'a-3', key: 'a', partition: 0, offset: 13n },
      ...['b-0', 'b-1', 'b-2', 'b-3'].map((id, i) => ({ id, key: 'b', partition: 1, offset: BigInt(i) })),
    ]
    const report = checkDelivery({ expected, observed })
    assert.equal(report.ok, false)
    assert.equal(report.outOfOrder, 1)
    assert.deepEqual(report.samples.outOfOrder, ['a-0'])
    assert.deepEqual(report.reorders, [
      { id: 'a-0', key: 'a', seq: 0, partition: 0, offset: 11n, afterId: 'a-1', afterSeq: 1 },
    ])
    assert.equal(report.duplicates, 0)
    assert.equal(report.lost, 0)
  })

  test('order is judged by offset, not by the order the observed list was assembled in', () => {
    const expected = committed(['a'], 3)
    const observed: ObservedMessage[] = [
      { id: 'a-2', key: 'a', partition: 0, offset: 2n },
      { id: 'a-0', key: 'a', partition: 0, offset: 0 },
      { id: 'a-1', key: 'a', partition: 0, offset: 1n },
    ]
    const report = checkDelivery({ expected, observed })
    assert.equal(report.ok, true, formatReport(report))
  })

  test('a key read on two partitions is reported', () => {
    const expected = committed(['a', 'b'], 2)
    const observed = delivered(expected)
    const moved = observed.find((m) => m.id === 'b-1')
    assert.ok(moved)
    moved.partition = (moved.partition + 1) % 3
    moved.offset = 100n
    const report = checkDelivery({ expected, observed })
    assert.equal(report.ok, false)
    assert.equal(report.keysOnSeveralPartitions, 1)
    assert.deepEqual(report.samples.keysOnSeveralPartitions, ['b'])
    assert.equal(report.lost, 0)
  })

  test('keyless messages are only checked for loss and foreign ids', () => {
    const expected: TrackedMessage[] = [
      { id: 'n-0', key: null, seq: 0 },
      { id: 'n-1', key: null, seq: 1 },
    ]
    const observed: ObservedMessage[] = [
      { id: 'n-1', key: null, partition: 0, offset: 0n },
      { id: 'n-0', key: null, partition: 2, offset: 0n },
    ]
    const report = checkDelivery({ expected, observed })
    assert.equal(report.ok, true, formatReport(report))
  })

  test('inconsistent input is rejected', () => {
    const invalid = (error: unknown) => isKEntityError(error, 'KE_INVALID_ARGUMENT')
    assert.throws(
      () =>
        checkDelivery({
          expected: [
            { id: 'x', key: 'a', seq: 0 },
            { id: 'x', key: 'a', seq: 1 },
          ],
          observed: [],
        }),
      invalid,
    )
    assert.throws(
      () =>
        checkDelivery({
          expected: [
            { id: 'x', key: 'a', seq: 0 },
            { id: 'y', key: 'a', seq: 0 },
          ],
          observed: [],
        }),
      invalid,
    )
    assert.throws(
      () =>
        checkDelivery({ expected: [{ id: 'x', key: 'a', seq: 0 }], forbidden: [{ id: 'x' }], observed: [] }),
      invalid,
    )
  })
})

describe('formatReport', () => {
  test('a passing report says OK and shows the counts', () => {
    const expected = committed(['a', 'b'], 3)
    const observed = delivered(expected)
    observed.push({ ...(observed[0] as ObservedMessage), offset: 50n })
    const text = formatReport(checkDelivery({ expected, observed }))
    assert.match(text, /^delivery check OK: 6\/6 expected messages delivered, 7 records read/)
    assert.match(text, /duplicates \(allowed\): 1 \("a-0"\)/)
    assert.match(text, /lost: 0/)
    assert.ok(text.split('\n').length >= 7)
  })

  test('a failing report lists counts, samples and reorders', () => {
    const expected = committed(['k'], 15)
    const observed: ObservedMessage[] = [
      { id: 'k-1', key: 'k', partition: 0, offset: 0n },
      { id: 'k-0', key: 'k', partition: 0, offset: 1n },
      { id: 'ghost', key: 'k', partition: 0, offset: 2n },
      { id: 'who', key: 'k', partition: 1, offset: 0n },
    ]
    const report = checkDelivery({ expected, forbidden: [{ id: 'ghost' }], observed })
    const text = formatReport(report)
    assert.match(text, /^delivery check FAILED: 2\/15 expected messages delivered, 4 records read/)
    assert.match(text, /lost: 13 \(first 10: "k-2", /)
    assert.match(text, /phantom \(rolled back but delivered\): 1 \("ghost"\)/)
    assert.match(text, /unknown \(neither expected nor rolled back\): 1 \("who"\)/)
    assert.match(text, /out of order: 1 \("k-0"\)/)
    assert.match(text, /keys on several partitions: 1 \("k"\)/)
    assert.match(text, /k-0 \(key "k", seq 0\) at partition 0 offset 1, after k-1 \(seq 1\)/)
  })
})

describe('tracking headers', () => {
  test('round-trip through the shapes headers come in', () => {
    const headers = trackingHeaders('order-42', 7)
    assert.deepEqual(headers, { 'ke-check-id': 'order-42', 'ke-check-seq': '7' })
    assert.deepEqual(readTracking(headers), { id: 'order-42', seq: 7 })
    const wire: [string, Buffer | null][] = [
      ['trace', Buffer.from('x')],
      ...Object.entries(headers).map(([name, value]): [string, Buffer] => [name, Buffer.from(value)]),
    ]
    assert.deepEqual(readTracking(wire), { id: 'order-42', seq: 7 })
    assert.deepEqual(readTracking(new Map(wire)), { id: 'order-42', seq: 7 })
    assert.deepEqual(readTracking(wire.map(([name, value]) => [Buffer.from(name), value] as const)), {
      id: 'order-42',
      seq: 7,
    })
  })

  test('missing or malformed tracking reads as null', () => {
    assert.equal(readTracking([]), null)
    assert.equal(readTracking({ 'ke-check-id': 'x' }), null)
    assert.equal(readTracking({ 'ke-check-id': 'x', 'ke-check-seq': 'seven' }), null)
    assert.equal(readTracking({ 'ke-check-id': null, 'ke-check-seq': '1' }), null)
    assert.throws(() => trackingHeaders('', 1))
    assert.throws(() => trackingHeaders('x', 1.5))
  })

  test('consumed records map to observed messages, untracked ones as unknown or ignored', () => {
    const record = (offset: bigint, headers: ConsumedMessage['headers']): ConsumedMessage => ({
      topic: 't',
      partition: 2,
      offset,
      key: Buffer.from('k'),
      value: null,
      headers,
      timestamp: 0n,
    })
    const consumed = [
      record(0n, [
        ['ke-check-id', Buffer.from('m-1')],
        ['ke-check-seq', Buffer.from('0')],
      ]),
      record(1n, []),
    ]
    assert.deepEqual(observedFromConsumed(consumed), [
      { id: 'm-1', key: 'k', partition: 2, offset: 0n },
      { id: 'untracked:2@1', key: 'k', partition: 2, offset: 1n },
    ])
    assert.deepEqual(observedFromConsumed(consumed, { untracked: 'ignore' }), [
      { id: 'm-1', key: 'k', partition: 2, offset: 0n },
    ])
  })
})
