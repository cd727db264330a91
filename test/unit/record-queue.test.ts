// The consumer's per-partition queue and the size it charges a record against maxInFlightBytes,
// without Kafka (the backpressure itself runs against a real broker in test/consumer.test.ts).
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { RawRecord } from '../../src/consumer/message.ts'
import { RecordQueue, recordBytes } from '../../src/consumer/record-queue.ts'

function record(offset: number): RawRecord {
  return { offset: BigInt(offset), headerEntries: [] } as unknown as RawRecord
}

const offsets = (records: readonly (RawRecord | undefined)[]) => records.map((r) => Number(r?.offset))

describe('RecordQueue', () => {
  it('gives records back oldest first through shift(), take() and clear(), across compactions', () => {
    const queue = new RecordQueue()
    let next = 0
    let expected = 0
    // Deep enough for the front index to be cut off several times.
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 3000; i++) queue.push(record(next++))
      assert.equal(queue.length, next - expected)
      assert.equal(Number(queue.shift()?.offset), expected++)
      const taken = queue.take(1500)
      assert.deepEqual(
        offsets(taken),
        Array.from({ length: 1500 }, (_, i) => expected + i),
      )
      expected += 1500
    }
    assert.equal(queue.length, next - expected)
    assert.deepEqual(offsets(queue.take(3)), [expected, expected + 1, expected + 2])
    expected += 3
    const rest = queue.clear()
    assert.equal(rest.length, next - expected)
    assert.equal(Number(rest[0]?.offset), expected)
    assert.equal(Number(rest.at(-1)?.offset), next - 1)
    assert.equal(queue.length, 0)
    assert.equal(queue.shift(), undefined)
    assert.deepEqual(queue.take(10), [])
  })

  it('take() gives fewer when fewer wait, and the queue works on after being emptied', () => {
    const queue = new RecordQueue()
    queue.push(record(1))
    queue.push(record(2))
    assert.deepEqual(offsets(queue.take(5)), [1, 2])
    assert.equal(queue.length, 0)
    queue.push(record(3))
    assert.equal(queue.length, 1)
    assert.equal(Number(queue.shift()?.offset), 3)
  })
})

describe('recordBytes', () => {
  it('counts the key, the value and every header name and value; absent parts count 0', () => {
    const full = {
      key: Buffer.alloc(3),
      value: Buffer.alloc(100),
      headerEntries: [
        [Buffer.from('ke-message-id'), Buffer.alloc(36)],
        [Buffer.from('empty'), undefined],
      ],
    } as unknown as RawRecord
    assert.equal(recordBytes(full), 3 + 100 + 13 + 36 + 5)
    assert.equal(recordBytes({ headerEntries: [] } as unknown as RawRecord), 0)
  })
})
