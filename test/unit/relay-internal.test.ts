// KE_INTERNAL: an internal invariant that fails is a bug, not a condition a retry fixes. The
// relay stops on it with one `error` event marked fatal and an error line saying why, instead of
// retrying it forever or dead-lettering the messages it was sending.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { internalCause, internalError } from '../../src/core/errors.ts'
import { isRetryable } from '../../src/core/retry.ts'
import { ErrorCodes, KEntityError, OutboxRelay, type RelayEvent, type SendFailure } from '../../src/index.ts'
import { Events, FakeKafka, FakeOutbox, FakeStore, memoryLogger, singleStore } from './fakes.ts'

const fast = { pollingInterval: 5, maxMessagesPerPoll: 10, retryBackoff: { initial: 1, max: 5 } }

/** Starts a relay and resolves once it stopped on its own (its onStop ran). */
async function runUntilStopped(store: FakeStore, transport: FakeKafka, pipeline = false) {
  const events = new Events()
  const log = memoryLogger()
  let stopped: () => void = () => {}
  const done = new Promise<void>((resolve) => {
    stopped = resolve
  })
  const relay = new OutboxRelay(store, transport, {
    ...fast,
    pipeline,
    onEvent: events.onEvent,
    logger: log.logger,
    onStop: () => stopped(),
  })
  await relay.start()
  await done
  return { relay, events, log }
}

function assertStoppedOnce(events: Events, stage: string): Extract<RelayEvent, { type: 'error' }> {
  const errors = events.of('error')
  assert.equal(errors.length, 1, `error events: ${errors.map((e) => String(e.error)).join('; ')}`)
  const [event] = errors
  assert.ok(event)
  assert.equal(event.stage, stage)
  assert.equal(event.fatal, true)
  assert.equal((event.error as KEntityError).code, ErrorCodes.INTERNAL)
  return event
}

describe('KE_INTERNAL', () => {
  it('is a KEntityError that is never retryable, found through causes', () => {
    const error = internalError('a claim is already open on this relay session')
    assert.ok(error instanceof KEntityError)
    assert.equal(error.code, 'KE_INTERNAL')
    assert.equal(error.retryable, false)
    assert.equal(isRetryable(error), false)
    const wrapped = new KEntityError(ErrorCodes.STORE_FAILED, 'the claim failed', {
      cause: error,
      retryable: true,
    })
    assert.equal(internalCause(wrapped), error)
    assert.equal(internalCause(new Error('ECONNRESET')), undefined)
  })

  it('from the store: the relay stops after one error event, no retry, and says why', async () => {
    const outbox = new FakeOutbox()
    outbox.add([0, 1], 3)
    const store = singleStore(outbox)
    let claims = 0
    store.failures.claim = () => {
      claims++
      return new KEntityError(ErrorCodes.STORE_FAILED, 'the relay claim failed', {
        cause: internalError('a claim is already open on this relay session'),
        retryable: true,
      })
    }
    const kafka = new FakeKafka()
    const { relay, events, log } = await runUntilStopped(store, kafka)
    assertStoppedOnce(events, 'claim')
    assert.equal(claims, 1, 'never retried')
    assert.equal(relay.isRunning, false)
    assert.equal(kafka.closed, true)
    assert.equal(outbox.rows.length, 6)
    const fatal = log.lines.find((l) => l.level === 'error')
    assert.match(
      fatal?.message ?? '',
      /the relay stops: an internal check failed during its claim .*a claim is already open.*bug in k-entity/,
    )
    assert.equal((fatal?.context as { code?: string } | undefined)?.code, 'KE_INTERNAL')
    assert.equal(log.lines[log.lines.length - 1]?.message, 'relay stopped')
    // Stopped for good: stop() is a no-op, start() says to create a new relay.
    await relay.stop()
    await assert.rejects(relay.start(), (e: KEntityError) => e.code === ErrorCodes.RELAY_STOPPED)
  })

  it('from the transport: nothing is dead-lettered or deleted, the claim is released', async () => {
    const outbox = new FakeOutbox()
    outbox.add([0, 1], 3)
    const store = singleStore(outbox)
    const kafka = new FakeKafka(() => {
      throw internalError('a record was encoded for no partition')
    })
    const { events } = await runUntilStopped(store, kafka)
    assertStoppedOnce(events, 'send')
    assert.equal(kafka.sends.length, 1, 'not isolated, not retried')
    assert.equal(outbox.rows.length, 6)
    assert.equal(outbox.deadLetters.length, 0)
    assert.ok(!store.calls.some((c) => c.op === 'complete'))
    assert.ok(store.calls.some((c) => c.op === 'abandon' && c.ids.length === 6))
  })

  it('in a per-record answer: the relay stops instead of dead-lettering the record', async () => {
    const outbox = new FakeOutbox()
    outbox.add([0, 1], 3)
    const kafka = new FakeKafka((records) =>
      records.map(
        (_, index): SendFailure => ({
          index,
          error: internalError('no partition for this record'),
          retryable: false,
          countsAsAttempt: true,
        }),
      ),
    )
    const { events } = await runUntilStopped(singleStore(outbox), kafka)
    assertStoppedOnce(events, 'send')
    assert.equal(outbox.deadLetters.length, 0)
    assert.equal(outbox.rows.length, 6)
  })

  it('while deleting: stage acknowledge; the rows stay (sent again later, never lost)', async () => {
    const outbox = new FakeOutbox()
    outbox.add([0], 2)
    const store = singleStore(outbox)
    store.failures.complete = () => internalError('complete() without an open claim')
    const { events } = await runUntilStopped(store, new FakeKafka())
    assertStoppedOnce(events, 'acknowledge')
    assert.equal(outbox.rows.length, 2)
  })

  it("from the companion's claim ahead: not skipped as session trouble, the relay stops", async () => {
    const outbox = new FakeOutbox()
    outbox.add([0, 1, 2, 3, 4], 10)
    const store = new FakeStore(outbox, { pipelined: true })
    const kafka = new FakeKafka()
    const events = new Events()
    const relay = new OutboxRelay(store, kafka, { ...fast, logger: false, onEvent: events.onEvent })
    const companion = store.other
    assert.ok(companion, 'the relay opened its companion session')
    let aheadClaims = 0
    companion.failures.claim = () => {
      aheadClaims++
      return internalError('the claim ahead overlaps the batch in flight')
    }
    await relay.start()
    await events.waitFor((e) => e.type === 'error')
    for (let i = 0; i < 200 && relay.isRunning; i++) await new Promise((r) => setTimeout(r, 5))
    assert.equal(relay.isRunning, false)
    assertStoppedOnce(events, 'claim')
    assert.equal(aheadClaims, 1)
    // The batch in flight was delivered and deleted; the relay stopped at the claim ahead.
    assert.equal(outbox.rows.length, 40)
    await relay.stop()
  })

  it('a plain error is still retried with backoff (a lost connection, not a bug)', async () => {
    const outbox = new FakeOutbox()
    outbox.add([0, 1], 3)
    const store = singleStore(outbox)
    let failing = 2
    store.failures.claim = () => (failing-- > 0 ? new Error('Connection terminated unexpectedly') : undefined)
    const events = new Events()
    const relay = new OutboxRelay(store, new FakeKafka(), { ...fast, logger: false, onEvent: events.onEvent })
    await relay.start()
    await events.waitFor((e) => e.type === 'delivered')
    await relay.stop()
    assert.equal(events.of('error').length, 2)
    assert.ok(events.of('error').every((e) => e.fatal === undefined && e.retryInMs > 0))
    assert.equal(outbox.rows.length, 0)
  })
})
