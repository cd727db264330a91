import { errorChain } from './error-chain.ts'

/**
 * Every error k-entity throws on purpose is a `KEntityError` with a stable `code`, so callers can
 * branch on the code instead of parsing messages, and a `retryable` flag the relay uses to decide
 * between backing off and giving up.
 */
export const ErrorCodes = {
  INVALID_ARGUMENT: 'KE_INVALID_ARGUMENT',
  INVALID_TOPIC: 'KE_INVALID_TOPIC',
  INVALID_IDENTIFIER: 'KE_INVALID_IDENTIFIER',
  SERIALIZATION_FAILED: 'KE_SERIALIZATION_FAILED',
  NO_TRANSACTION: 'KE_NO_TRANSACTION',
  TRANSACTION_ABORTED: 'KE_TRANSACTION_ABORTED',
  NO_TRANSPORT: 'KE_NO_TRANSPORT',
  RELAY_STOPPED: 'KE_RELAY_STOPPED',
  RELAY_RUNNING: 'KE_RELAY_RUNNING',
  TRANSPORT_FAILED: 'KE_TRANSPORT_FAILED',
  STORE_FAILED: 'KE_STORE_FAILED',
  /**
   * The outbox tables are not there: `migrate()` was never run on this database (or schema).
   * Not retryable for a caller of `produce()`, `stats()` or `deadLetters()`; the relay keeps
   * retrying with its backoff anyway, since a migration may run later.
   */
  NOT_MIGRATED: 'KE_NOT_MIGRATED',
  MESSAGE_TOO_LARGE: 'KE_MESSAGE_TOO_LARGE',
  TOPIC_SETUP_FAILED: 'KE_TOPIC_SETUP_FAILED',
  /**
   * Kafka refused the client's credentials or permissions (SASL authentication, cluster
   * authorization). Retryable: the messages are not at fault, so the relay keeps them and backs
   * off until someone fixes the credentials, instead of dead-lettering them.
   */
  KAFKA_AUTH_FAILED: 'KE_KAFKA_AUTH_FAILED',
  /** An internal invariant failed: a bug in k-entity, never retried (a relay stops on it). */
  INTERNAL: 'KE_INTERNAL',
} as const

/**
 * Codes of the warnings k-entity logs or emits (never thrown): a closed list like `ErrorCodes`,
 * so log processors can match them.
 */
export const WarningCodes = {
  /** Another relay holds the outbox: a second `single` relay, or relays of mixed modes. */
  RELAY_STANDBY: 'KE_RELAY_STANDBY',
  /** An existing topic differs from its declaration (`ensureTopics`); it is never altered. */
  TOPIC_MISMATCH: 'KE_TOPIC_MISMATCH',
  /** SASL PLAIN or OAUTHBEARER without TLS: the secret crosses the network unencrypted. */
  SASL_WITHOUT_TLS: 'KE_SASL_WITHOUT_TLS',
} as const

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes]

export interface KEntityErrorOptions {
  cause?: unknown
  retryable?: boolean
}

export class KEntityError extends Error {
  readonly code: ErrorCode
  readonly retryable: boolean

  constructor(code: ErrorCode, message: string, options: KEntityErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'KEntityError'
    this.code = code
    this.retryable = options.retryable ?? false
  }
}

/**
 * An internal invariant failed. Not retryable: a bug stays a bug on every retry, and a relay that
 * retried it would loop forever; the relay stops on it instead (see `internalCause`).
 */
export function internalError(message: string, cause?: unknown): KEntityError {
  return new KEntityError(ErrorCodes.INTERNAL, message, { cause, retryable: false })
}

/** The `KE_INTERNAL` error in `error` or among its causes (a store may wrap it), if any. */
export function internalCause(error: unknown): KEntityError | undefined {
  return errorChain(error).find((link): link is Record<string, unknown> & KEntityError =>
    isKEntityError(link, ErrorCodes.INTERNAL),
  )
}

export function invalidArgument(message: string): KEntityError {
  return new KEntityError(ErrorCodes.INVALID_ARGUMENT, message)
}

/**
 * The outbox tables are missing. `table` is the qualified name when the caller knows it; `how`
 * says how to migrate in the caller's terms (the argument `migrate()` takes differs per dialect).
 */
export function notMigrated(
  table: string | undefined,
  cause: unknown,
  options: { how?: string; retryable?: boolean } = {},
): KEntityError {
  const which = table === undefined ? 'the outbox table' : `the outbox table ${table}`
  const driverSays = cause instanceof Error ? ` (${cause.message})` : ''
  return new KEntityError(
    ErrorCodes.NOT_MIGRATED,
    `${which} does not exist${driverSays}: the outbox was never migrated on this database; run ${options.how ?? 'outbox.migrate(connection)'} once (or apply outbox.migrationSql() with your migration tool)`,
    { cause, retryable: options.retryable ?? false },
  )
}

export function isKEntityError(error: unknown, code?: ErrorCode): error is KEntityError {
  return error instanceof KEntityError && (code === undefined || error.code === code)
}

/** A short, printable description of a value for error messages (never the whole payload). */
export function describe(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (Buffer.isBuffer(value)) return 'a Buffer'
  if (typeof value === 'string') {
    const shown = redactCredentials(value)
    return `the string ${JSON.stringify(shown.length > 40 ? `${shown.slice(0, 40)}…` : shown)}`
  }
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'Object'})`
  return `${typeof value} ${String(value)}`
}

/**
 * The text with the password of every `scheme://user:password@` in it replaced by `***`: a
 * connection URL in an error message must not carry it into logs.
 */
export function redactCredentials(text: string): string {
  return text.replace(/(\/\/[^/?#@\s:]*):[^/?#\s]*@/g, '$1:***@')
}
