import { describe, invalidArgument } from './errors.ts'

/**
 * Where k-entity writes what happens to it: the shape pino and bunyan loggers have (a context
 * object first, then the message), so an application passes its own logger as is. `console`
 * fits too. k-entity always calls `(context, message)`; `debug` is optional and, like
 * `isLevelEnabled`, is only consulted where per-batch detail would otherwise cost something.
 */
export interface Logger {
  error(context: object | string, message?: string): void
  warn(context: object | string, message?: string): void
  info(context: object | string, message?: string): void
  debug?(context: object | string, message?: string): void
  isLevelEnabled?(level: string): boolean
}

/** A logger, or `false` to log nothing (the relay's `onEvent` still gets every event). */
export type LoggerOption = Logger | false

export type LogLevel = 'error' | 'warn' | 'info' | 'debug'

/** Something to write lines to; `process.stderr` by default. */
export interface LineStream {
  write(line: string): unknown
}

/**
 * The logger used when none is given: warnings and errors only (and the info line that says one
 * of them is over), one line each on stderr, `k-entity <level>: <message> {context as compact JSON}`. Without it a relay that cannot reach
 * Kafka or its database would retry forever without a word; with info lines it would chat on
 * every start and stop of every process.
 */
export function defaultLogger(stream: LineStream = process.stderr): Logger {
  const write = (level: LogLevel) => (context: object | string, message?: string) => {
    stream.write(formatLine(level, context, message))
  }
  const info = write('info')
  return {
    error: write('error'),
    warn: write('warn'),
    // The all-clear for a warning or error this logger printed (`{ recovered: true }`) is the one
    // info line it shows: without it, "cannot reach Kafka" would look like it still held.
    info(context, message) {
      if (
        typeof context === 'object' &&
        context !== null &&
        (context as { recovered?: unknown }).recovered === true
      )
        info(context, message)
    },
    debug() {},
    isLevelEnabled: (level) => level === 'error' || level === 'warn',
  }
}

/** Logs nothing. */
export const silentLogger: Logger = Object.freeze({
  error() {},
  warn() {},
  info() {},
  debug() {},
  isLevelEnabled: () => false,
})

/** One line: `k-entity warn: message {"key":"value"}`; errors in the context are left out (the message says it). */
export function formatLine(level: LogLevel, context: object | string, message?: string): string {
  if (typeof context === 'string') return `k-entity ${level}: ${oneLine(context)}\n`
  const fields: Record<string, unknown> = {}
  let any = false
  for (const [key, value] of Object.entries(context)) {
    if (value === undefined || value instanceof Error) continue
    fields[key] = value
    any = true
  }
  let json = ''
  if (any) {
    try {
      json = ` ${JSON.stringify(fields)}`
    } catch {
      json = ''
    }
  }
  return `k-entity ${level}: ${oneLine(message ?? '')}${json}\n`
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ')
}

/**
 * The logger an option asks for: `undefined` → `fallback` (the default logger), `false` → none,
 * a logger object → itself, after checking it has the methods k-entity calls.
 */
export function resolveLogger(option: unknown, where: string, fallback?: Logger): Logger {
  if (option === undefined) return fallback ?? defaultLogger()
  if (option === false) return silentLogger
  if (typeof option !== 'object' || option === null) {
    throw invalidArgument(
      `${where}: 'logger' must be a logger object with info/warn/error methods (pino, bunyan, console) or false to log nothing, got ${describe(option)}`,
    )
  }
  const missing = (['error', 'warn', 'info'] as const).filter(
    (method) => typeof (option as Record<string, unknown>)[method] !== 'function',
  )
  if (missing.length > 0) {
    throw invalidArgument(
      `${where}: 'logger' has no ${missing.join('/')} method; pass a pino, bunyan or console-like logger, or false to log nothing`,
    )
  }
  return option as Logger
}

/** Whether `logger` wants `level`: its own `isLevelEnabled` if it has one, otherwise yes. */
export function levelEnabled(logger: Logger, level: LogLevel): boolean {
  if (logger === silentLogger) return false
  if (level === 'debug' && typeof logger.debug !== 'function') return false
  try {
    return typeof logger.isLevelEnabled === 'function' ? logger.isLevelEnabled(level) : true
  } catch {
    return true
  }
}

/**
 * Hides the credentials of a connection URL (`postgres://user:secret@host`) in a text that is
 * about to be logged: driver messages sometimes quote what they were given.
 */
export function redact(text: string): string {
  return text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/)[^\s/@]*@/gi, '$1***@')
}
