import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { note, print } from '../output.ts'
import { UsageError } from '../usage.ts'

export const KAFKA_HELP = `Usage: k-entity kafka start|stop|status|run

A single-node Kafka broker for development, on 127.0.0.1:9092 (KAFKA_PORT to change; the
controller takes the next port). Needs Java 17+; the broker's jars are fetched once with Maven.
  start    start it and leave it running (prints KAFKA_BROKERS=...)
  stop     stop the broker that start left running
  status   tell whether a broker answers on that port
  run      start it in the foreground until Ctrl-C

Available in a clone of the k-entity repository (the launcher lives in scripts/kafka/); with an
installed package, run your own broker and set KAFKA_BROKERS.`

/** The repository's launcher, beside src/ (or dist/) in a clone. */
const LAUNCHER = fileURLToPath(new URL('../../../scripts/kafka/cli.ts', import.meta.url))

export async function kafka(args: string[]): Promise<number> {
  const [command, ...rest] = args
  if (command === undefined || command === '--help' || command === '-h') {
    print(KAFKA_HELP)
    return command === undefined ? 2 : 0
  }
  if (!['start', 'stop', 'status', 'run'].includes(command)) {
    throw new UsageError(`unknown kafka command '${command}': use start, stop, status or run`)
  }
  if (rest.length > 0) throw new UsageError(`unexpected argument '${rest[0]}'; see k-entity kafka --help`)
  if (!existsSync(LAUNCHER)) {
    note(
      'k-entity: the development broker launcher ships with the repository, not the package: clone k-entity and run npm run kafka start there, or run your own broker and set KAFKA_BROKERS',
    )
    return 1
  }
  const { cli } = (await import(LAUNCHER)) as { cli(command: string): Promise<number> }
  return cli(command)
}
