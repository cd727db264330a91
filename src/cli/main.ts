import { explain, target } from './database.ts'
import { note, print } from './output.ts'
import { EXIT_FAILURE, EXIT_USAGE, UsageError } from './usage.ts'

export const HELP = `Usage: k-entity <command> [options]

Commands:
  migrate [--print]              create or upgrade the outbox tables, or print their SQL
  status [--json] [--watch]      pending, ready, retrying, dead letters, lag per topic; relays
  dlq list|show|replay|purge     inspect, replay and purge dead letters
  relay                          run a relay (--config ./outbox.config.js, or from the URL)
  kafka start|stop|status|run    a Kafka broker for development
  demo                           write, roll back, relay and verify, end to end
  dashboard [--port N]           a live web page: backlog, lag, relays, dead letters

The database comes from --url or DATABASE_URL (postgres://, mysql://, mariadb://, or a SQLite
file). k-entity <command> --help tells more. Exit codes: 0 ok, 1 failure, 2 usage error.`

/** Loaded on use: a command (or --help) does not pay for the others' drivers and Kafka client. */
const COMMANDS: Record<string, () => Promise<(args: string[]) => Promise<number>>> = {
  migrate: async () => (await import('./commands/migrate.ts')).migrate,
  status: async () => (await import('./commands/status.ts')).status,
  dlq: async () => (await import('./commands/dlq.ts')).dlq,
  relay: async () => (await import('./commands/relay.ts')).relay,
  kafka: async () => (await import('./commands/kafka.ts')).kafka,
  demo: async () => (await import('./commands/demo.ts')).demo,
  dashboard: async () => (await import('./commands/dashboard.ts')).dashboard,
}

/** Runs one command line and returns the exit code; errors are printed, never thrown. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv
  if (command === undefined) {
    print(HELP)
    return EXIT_USAGE
  }
  if (command === '--help' || command === '-h' || command === 'help') {
    print(HELP)
    return 0
  }
  const load = COMMANDS[command]
  if (load === undefined) {
    note(`k-entity: unknown command '${command}'; k-entity --help lists them`)
    return EXIT_USAGE
  }
  try {
    return await (await load())(args)
  } catch (error) {
    if (error instanceof UsageError) {
      note(`k-entity ${command}: ${error.message}`)
      return EXIT_USAGE
    }
    let where: ReturnType<typeof target> | undefined
    try {
      where = target(parseUrlOptions(args))
    } catch {
      where = undefined
    }
    note(`k-entity ${command}: ${explain(error, where)}`)
    if (process.env.K_ENTITY_DEBUG && error instanceof Error) note(String(error.stack))
    return EXIT_FAILURE
  }
}

/** --url/--schema/--table of a command line that already failed, to name the database in the error. */
function parseUrlOptions(args: string[]): { url?: string; schema?: string; table?: string } {
  const found: { url?: string; schema?: string; table?: string } = {}
  for (let i = 0; i < args.length; i++) {
    const match = /^--(url|schema|table)(?:=(.*))?$/.exec(args[i] ?? '')
    if (match) found[match[1] as 'url'] = match[2] ?? args[++i]
  }
  return found
}
