// How the consumer narrows down a failed batch (src/consumer/failed-batch.ts), with a fake
// processor: pure logic. The real batches run against Kafka and databases in
// test/consumer-inbox-batch.test.ts.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ALONE, type BatchSteps, handleInParts } from '../../src/consumer/failed-batch.ts'

/**
 * A partition whose records are numbers: a batch fails if it holds a repeated record (at an
 * unknown place, as an inbox INSERT does) or a record whose handler fails (at its index); alone,
 * a repeated record is skipped and a failing one dead-lettered.
 */
function partition(options: { repeated?: number[]; failing?: number[]; stopAfter?: number }) {
  const repeated = new Set(options.repeated)
  const failing = new Set(options.failing)
  const log = { batches: 0, failedBatches: 0, alone: 0, handlerRuns: new Map<number, number>() }
  const done: number[] = []
  const dropped: number[] = []
  const run = (record: number) => log.handlerRuns.set(record, (log.handlerRuns.get(record) ?? 0) + 1)
  const steps: BatchSteps<number> = {
    async batch(records) {
      log.batches++
      if (records.some((r) => repeated.has(r))) {
        log.failedBatches++
        return { at: undefined }
      }
      for (let i = 0; i < records.length; i++) {
        run(records[i] as number)
        if (failing.has(records[i] as number)) {
          log.failedBatches++
          return { at: i }
        }
      }
      done.push(...records)
      return undefined
    },
    async alone(records) {
      for (const record of records) {
        if (options.stopAfter !== undefined && done.length >= options.stopAfter) {
          dropped.push(...records.slice(records.indexOf(record)))
          return false
        }
        log.alone++
        if (!repeated.has(record)) run(record)
        done.push(record)
      }
      return true
    },
    stopped: () => options.stopAfter !== undefined && done.length >= options.stopAfter,
    drop: (records) => dropped.push(...records),
  }
  return { steps, log, done, dropped }
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

describe('handleInParts', () => {
  it('one repeated record in 500: about log2(500 / ALONE) failed tries, every record once, in order', async () => {
    const { steps, log, done } = partition({ repeated: [321] })
    assert.equal(await handleInParts(range(500), undefined, steps), true)
    assert.deepEqual(done, range(500))
    assert.ok(log.failedBatches <= Math.ceil(Math.log2(500 / ALONE)) + 1, `${log.failedBatches} failed tries`)
    assert.ok(log.alone <= ALONE, `${log.alone} handled alone`)
    assert.ok(
      [...log.handlerRuns.values()].every((n) => n === 1),
      'a failed INSERT runs no handler',
    )
  })

  it('the first 40 of 500 redelivered (after a crash): those alone or in small parts, the rest in batches', async () => {
    const { steps, log, done } = partition({ repeated: range(40) })
    assert.equal(await handleInParts(range(500), undefined, steps), true)
    assert.deepEqual(done, range(500))
    assert.ok(
      log.batches - log.failedBatches <= 20,
      `${log.batches - log.failedBatches} batches that committed`,
    )
    assert.ok(log.alone <= 40 + ALONE, `${log.alone} handled alone`)
  })

  it('a handler failing at 250: the 250 before it again as one batch, it alone, the rest as one batch', async () => {
    const { steps, log, done } = partition({ failing: [250] })
    assert.equal(await handleInParts(range(500), 250, steps), true)
    assert.deepEqual(done, range(500))
    assert.equal(log.batches, 2)
    assert.equal(log.alone, 1)
    assert.equal(log.handlerRuns.get(250), 1, 'the failed record is tried alone once more')
    assert.equal(log.handlerRuns.get(0), 1, '(the fake counts runs from this call on)')
  })

  it('every record repeated: bounded failed tries (fewer than the records), all handled alone', async () => {
    const { steps, log, done } = partition({ repeated: range(64) })
    assert.equal(await handleInParts(range(64), undefined, steps), true)
    assert.deepEqual(done, range(64))
    assert.equal(log.alone, 64)
    assert.ok(log.failedBatches < 64, `${log.failedBatches} failed tries`)
  })

  it('small failed batches go alone at once', async () => {
    const { steps, log, done } = partition({ repeated: [1] })
    assert.equal(await handleInParts(range(ALONE), undefined, steps), true)
    assert.deepEqual(done, range(ALONE))
    assert.equal(log.batches, 0)
  })

  it('stopping mid-way hands every record not handled to drop or alone, none twice', async () => {
    const { steps, done, dropped } = partition({ repeated: [3, 100], stopAfter: 60 })
    assert.equal(await handleInParts(range(200), undefined, steps), false)
    assert.deepEqual(
      [...done, ...dropped].sort((a, b) => a - b),
      range(200),
    )
    assert.deepEqual(done, range(done.length), 'what was handled is a prefix, in order')
  })
})
