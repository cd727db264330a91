/**
 * The relay's events and lifecycle on `node:diagnostics_channel`, so an APM agent or an app's own
 * instrumentation can subscribe by name, without a reference to the relay and without any
 * configuration. Nothing is built or published while a channel has no subscriber. As with any
 * diagnostics channel, `publish` never throws into the relay: Node reports a subscriber's error as
 * an uncaught exception of the subscriber.
 */
import { channel } from 'node:diagnostics_channel'
import type { OutboxRelay } from '../core/relay/lifecycle.ts'
import type { NodeMode, RelayEvent } from '../core/relay.ts'

/** Every `RelayEvent` of every relay in the process, as `RelayEventMessage`. */
export const RELAY_EVENT_CHANNEL = 'k-entity:relay:event'
/** A relay started, began to stop, or stopped, as `RelayLifecycleMessage`. */
export const RELAY_LIFECYCLE_CHANNEL = 'k-entity:relay:lifecycle'

export interface RelayEventMessage {
  relay: OutboxRelay
  mode: NodeMode
  event: RelayEvent
}

export interface RelayLifecycleMessage {
  relay: OutboxRelay
  mode: NodeMode
  state: 'started' | 'stopping' | 'stopped'
}

const events = channel(RELAY_EVENT_CHANNEL)
const lifecycle = channel(RELAY_LIFECYCLE_CHANNEL)

/** Whether anything listens to relay events now: the relay builds their optional figures only then. */
export function relayEventsObserved(): boolean {
  return events.hasSubscribers
}

export function publishRelayEvent(relay: OutboxRelay, mode: NodeMode, event: RelayEvent): void {
  if (events.hasSubscribers) events.publish({ relay, mode, event } satisfies RelayEventMessage)
}

export function publishRelayLifecycle(
  relay: OutboxRelay,
  mode: NodeMode,
  state: RelayLifecycleMessage['state'],
): void {
  if (lifecycle.hasSubscribers) lifecycle.publish({ relay, mode, state } satisfies RelayLifecycleMessage)
}
