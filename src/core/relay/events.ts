import type { RelayEvent } from '../relay.ts'
import type { RelayLog } from '../relay-log.ts'

export type Emit = (event: RelayEvent) => void

/**
 * Hands every event to the application's `onEvent` and to `publish` (the diagnostics channel),
 * and the ones that change state to the log.
 */
export function relayEmitter(onEvent: (event: RelayEvent) => void, log: RelayLog, publish: Emit): Emit {
  return (event) => {
    try {
      onEvent(event)
    } catch {
      // Observers must not be able to break delivery.
    }
    publish(event)
    // The log needs nothing from a delivery unless Kafka was failing: no work per batch otherwise.
    if (event.type === 'delivered') log.kafkaOk()
    else if (event.type === 'error') {
      if (event.fatal === true) log.fatal(event.stage, event.error)
      else log.failed(event.stage, event.error, event.retryInMs)
    } else if (event.type === 'message-failed') log.messageFailed(event)
    else if (event.type === 'held') log.held(event.ids.length, event.error, event.retryInMs)
  }
}
