import { type ParseArgsConfig, parseArgs } from 'node:util'
import { ErrorCodes, KEntityError } from '../core/errors.ts'

/** A command line the CLI cannot run as given: exit code 2, with the command's help hint. */
export class UsageError extends KEntityError {
  constructor(message: string) {
    super(ErrorCodes.INVALID_ARGUMENT, message)
    this.name = 'UsageError'
  }
}

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

/** Options every command that reads the outbox takes. */
export const CONNECTION_OPTIONS = {
  url: { type: 'string' },
  schema: { type: 'string' },
  table: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

export const CONNECTION_HELP = `Connection:
  --url URL        postgres://user@host:5432/db, mysql://... or mariadb://..., or a SQLite
                   file (path or file:/path); default DATABASE_URL
  --schema NAME    schema (MySQL: database) of the outbox table (default k_entity)
  --table NAME     outbox table name (default outbox)
  --json           machine-readable output
  -h, --help       this help`

/** parseArgs whose mistakes are usage errors naming the command's help. */
export function parse<T extends NonNullable<ParseArgsConfig['options']>>(
  command: string,
  args: string[],
  options: T,
  positionals = false,
) {
  try {
    return parseArgs({ args, options, allowPositionals: positionals, strict: true })
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    throw new UsageError(
      `${message.replace(/\. To specify a positional.*$/s, '')}; see k-entity ${command} --help`,
    )
  }
}

/** A whole positive number option. */
export function positiveInteger(
  value: string | undefined,
  option: string,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  if (value === undefined) return undefined
  const number = Number(value)
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(number) || number < 1 || number > max) {
    throw new UsageError(`--${option} must be a whole number from 1 to ${max}, got '${value}'`)
  }
  return number
}
