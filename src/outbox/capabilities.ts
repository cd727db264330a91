import { describe, invalidArgument } from '../core/errors.ts'
import type { TopicMap } from '../core/outbox.ts'
import type { Capabilities, DialectRelayOption, Refusals, SqlRelayOptions } from './parts.ts'

/** Every relay option some dialect reads; a dialect refuses those it does not (see `Capabilities`). */
const DIALECT_RELAY_OPTIONS: readonly DialectRelayOption[] = [
  'connection',
  'claimTimeout',
  'listen',
  'busyTimeout',
  'leaderCheckInterval',
  'claimSlots',
]

interface Dialect {
  readonly database: string
  readonly capabilities: Capabilities
  readonly refusals: Refusals
}

/**
 * The outbox options a database cannot honour: `notify` where commits wake no relay, topics
 * sent straight to Kafka where producing is synchronous.
 */
export function refuseOutboxOptions(dialect: Dialect, options: { notify?: unknown }, topics: TopicMap): void {
  const { database, capabilities, refusals } = dialect
  if (options.notify !== undefined && typeof options.notify !== 'boolean') {
    throw invalidArgument(`'notify' must be true or false, got ${describe(options.notify)}`)
  }
  if (options.notify === true && !capabilities.listen) {
    throw invalidArgument(
      `outbox option 'notify' is not available on ${database}: it has no commit notifications, so relays find new messages by polling; drop the option (or lower the relay's pollingInterval)`,
    )
  }
  if (!capabilities.synchronous) return
  for (const topic of Object.values(topics)) {
    if (!topic.outbox) {
      throw invalidArgument(
        `topic '${topic.name}' is mapped with outbox: false (sent straight to Kafka), but ${refusals.direct ?? `${database} outboxes produce synchronously inside the database transaction and a Kafka send cannot`}; map it through the outbox or send it with your own Kafka producer`,
      )
    }
  }
}

/**
 * The relay options a database cannot honour: a mode it cannot fence, pipelining without a
 * companion session, LISTEN without notifications, and options of other databases. Values of
 * the wrong type are left to the checks that own them (the relay's, the dialect's).
 */
export function refuseRelayOptions(dialect: Dialect, options: SqlRelayOptions): void {
  const { database, capabilities, refusals } = dialect
  const { mode } = options
  if (
    (mode === 'single' || mode === 'exclusive' || mode === 'concurrent') &&
    !capabilities.modes.includes(mode)
  ) {
    throw invalidArgument(
      `relay mode '${mode}' is not available on ${database}: ${refusals.modes ?? `use mode ${capabilities.modes.map((m) => `'${m}'`).join(' or ')}`}`,
    )
  }
  if (options.pipeline === true && !capabilities.pipeline) {
    throw invalidArgument(
      `relay option 'pipeline' is not available on ${database}: its relay has no second session to claim the next batch while Kafka has the current one; drop the option (the relay sends one batch at a time)`,
    )
  }
  if ((options.listen === true || options.listen === 'eager') && !capabilities.listen) {
    throw invalidArgument(
      `relay option 'listen' is not available on ${database}: it has no commit notifications to listen for; drop the option (the relay polls every pollingInterval, and at once after outbox.transaction() commits in this process)`,
    )
  }
  const loose = options as Record<string, unknown>
  for (const option of DIALECT_RELAY_OPTIONS) {
    if (capabilities.relayOptions.includes(option)) continue
    // Without notifications, not listening is what the relay does anyway.
    if (option === 'listen' && !capabilities.listen && options.listen === false) continue
    if (loose[option] !== undefined) {
      throw invalidArgument(
        `relay option '${option}' does not apply to ${database}: ${refusals.options ?? `it reads only ${capabilities.relayOptions.map((o) => `'${o}'`).join(', ')} beyond the common relay options; drop '${option}'`}`,
      )
    }
  }
}
