import { print } from '../output.ts'
import { UsageError } from '../usage.ts'

export const KAFKA_HELP = `Usage: k-entity kafka start|stop|status|run

A single-node Kafka broker (KRaft) for development, on 127.0.0.1:9092 (KAFKA_PORT to change;
the controller takes the next port). Needs Java 17+ (JAVA_HOME or java on PATH); the broker's
jars are fetched once with Maven (mvn on PATH) into .kafka/ of the package.
  start    start it and leave it running (prints KAFKA_BROKERS=...)
  stop     stop the broker that start left running
  status   tell whether a broker answers on that port (exit 1 if none does)
  run      start it in the foreground until Ctrl-C`

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
  // Loaded here: the launcher reads its pom.xml when loaded, which only this command needs.
  const { cli } = await import('../../dev/kafka/cli.ts')
  return cli(command)
}
