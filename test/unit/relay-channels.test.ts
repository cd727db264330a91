// The relay's events and lifecycle on node:diagnostics_channel: what an APM subscriber sees
// without any reference to the relay or any option set.
import assert from 'node:assert/strict'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { describe, it } from 'node:test'
import {
  OutboxRelay,
  RELAY_EVENT_CHANNEL,
  RELAY_LIFECYCLE_CHANNEL,
  type RelayEventMessage,
  type RelayLifecycleMessage,
} from '../../src/index.ts'
import { FakeKafka, FakeOutbox, singleStore, until } from './fakes.ts'

describe('relay on node:diagnostics_channel', () => {
  it('publishes every event and the lifecycle of each relay, naming the relay and its mode', async (t) => {
    const events: RelayEventMessage[] = []
    const states: RelayLifecycleMessage[] = []
    const onEvent = (message: unknown) => events.push(message as RelayEventMessage)
    const onState = (message: unknown) => states.push(message as RelayLifecycleMessage)
    subscribe(RELAY_EVENT_CHANNEL, onEvent)
    subscribe(RELAY_LIFECYCLE_CHANNEL, onState)
    t.after(() => {
      unsubscribe(RELAY_EVENT_CHANNEL, onEvent)
      unsubscribe(RELAY_LIFECYCLE_CHANNEL, onState)
    })
    const outbox = new FakeOutbox()
    outbox.add([0, 1, 2], 10)
    const seenByOnEvent: string[] = []
    const relay = new OutboxRelay(singleStore(outbox), new FakeKafka(), {
      maxMessagesPerPoll: 10,
      pollingInterval: 5,
      logger: false,
      onEvent: (event) => seenByOnEvent.push(event.type),
    })
    await relay.start()
    await until(() => outbox.rows.length === 0)
    await relay.stop()

    const ours = events.filter((m) => m.relay === relay)
    assert.deepEqual(
      ours.map((m) => m.event.type),
      seenByOnEvent,
      'the channel carries exactly what onEvent got, in order',
    )
    const delivered = ours.filter((m) => m.event.type === 'delivered')
    assert.equal(
      delivered.reduce((sum, m) => sum + (m.event.type === 'delivered' ? m.event.count : 0), 0),
      30,
    )
    assert.ok(ours.every((m) => m.mode === 'single'))
    assert.deepEqual(
      states.filter((m) => m.relay === relay).map((m) => m.state),
      ['started', 'stopping', 'stopped'],
    )
  })
})
