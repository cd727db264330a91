import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { backoffDelay } from '../../src/core/backoff.ts'
import { ErrorCodes, OutboxRelay, type RelayStore } from '../../src/index.ts'

const store = {} as RelayStore
const transport = { send: async () => {}, close: async () => {} }

describe('relay options', () => {
  for (const [options, message] of [
    [{ pollingInterval: 0 }, /'pollingInterval' must be an integer from 1/],
    [{ pollingInterval: 1.5 }, /'pollingInterval'/],
    [{ maxMessagesPerPoll: 20_000 }, /'maxMessagesPerPoll' must be an integer from 1 to 10000/],
    [{ maxBytesPerPoll: 0 }, /'maxBytesPerPoll' must be an integer from 1 to 1073741824, got number 0/],
    [{ maxBytesPerPoll: 1.5 }, /'maxBytesPerPoll' must be an integer/],
    [{ maxBytesPerPoll: '16MB' }, /'maxBytesPerPoll' must be an integer/],
    [{ maxBytesPerPoll: 2 ** 31 }, /'maxBytesPerPoll' must be an integer from 1 to 1073741824/],
    [{ mode: 'cluster' }, /'mode' must be 'single', 'exclusive' or 'concurrent'/],
    [{ retryBackoff: { initial: 500, max: 100 } }, /is below/],
    [{ onEvent: 'log' }, /'onEvent' must be a function/],
    [{ pipeline: 'yes' }, /'pipeline' must be true or false/],
  ] as const) {
    it(`rejects ${JSON.stringify(options)}`, () => {
      assert.throws(() => new OutboxRelay(store, transport, options as never), message)
    })
  }

  it('refuses to run after stop()', async () => {
    const relay = new OutboxRelay({ close: async () => {} } as RelayStore, transport)
    await relay.stop()
    await assert.rejects(
      relay.runOnce(),
      (error: { code?: string }) => error.code === ErrorCodes.RELAY_STOPPED,
    )
    await assert.rejects(relay.start(), (error: { code?: string }) => error.code === ErrorCodes.RELAY_STOPPED)
  })
})

describe('backoffDelay', () => {
  const options = { initial: 100, max: 1000 }
  it('grows exponentially up to the cap, never below half of it', () => {
    assert.equal(
      backoffDelay(1, options, () => 0),
      50,
    )
    assert.equal(
      backoffDelay(1, options, () => 1),
      100,
    )
    assert.equal(
      backoffDelay(3, options, () => 1),
      400,
    )
    assert.equal(
      backoffDelay(10, options, () => 0),
      500,
    )
    assert.equal(
      backoffDelay(100, options, () => 1),
      1000,
    )
  })
})
