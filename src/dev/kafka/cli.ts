// `npm run kafka start|stop|status|run`: a broker for development on a fixed port.
import { existsSync, readFileSync } from 'node:fs'
import { rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { start } from './broker.ts'
import { brokerError, errorMessage, HOST, log, REPO_ROOT } from './common.ts'
import { isAlive, jvmGuard, terminate } from './jvm.ts'
import { queryClusterId } from './probe.ts'

function devSettings(): { port: number; controllerPort: number; dataDir: string; pidFile: string } {
  const port = process.env.KAFKA_PORT ? Number(process.env.KAFKA_PORT) : 9092
  if (!Number.isInteger(port) || port <= 0 || port > 65534) {
    throw brokerError(`KAFKA_PORT must be a TCP port number, got "${process.env.KAFKA_PORT}"`)
  }
  // Each port gets its own data dir: KRaft stores the controller's address with the data, so
  // reusing one dir on other ports would leave the quorum pointing at the old address.
  const dataDir = join(REPO_ROOT, '.kafka', port === 9092 ? 'dev' : `dev-${port}`)
  return { port, controllerPort: port + 1, dataDir, pidFile: join(dataDir, 'broker.pid') }
}

/** The pid in the pid file if it still names our broker JVM (pids get reused). */
function runningDevPid(pidFile: string, dataDir: string): number | undefined {
  if (!existsSync(pidFile)) return undefined
  const pid = Number(readFileSync(pidFile, 'utf8').trim())
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return undefined
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    return cmdline.includes('kafka.Kafka') && cmdline.includes(join(dataDir, 'server.properties'))
      ? pid
      : undefined
  } catch {
    return undefined
  }
}

export async function cli(command: string | undefined): Promise<number> {
  const dev = devSettings()
  const brokers = `${HOST}:${dev.port}`
  switch (command) {
    case 'start': {
      const existing = runningDevPid(dev.pidFile, dev.dataDir)
      if (existing !== undefined) {
        log(false, `already running (pid ${existing})`)
      } else {
        const { broker } = await start({
          port: dev.port,
          controllerPort: dev.controllerPort,
          dataDir: dev.dataDir,
        })
        await writeFile(dev.pidFile, `${broker.pid}\n`)
        // Killed with us while starting up; from here on it is meant to outlive this command.
        jvmGuard.delete(broker.pid)
      }
      console.log(`KAFKA_BROKERS=${brokers}`)
      return 0
    }
    case 'stop': {
      const pid = runningDevPid(dev.pidFile, dev.dataDir)
      await rm(dev.pidFile, { force: true })
      if (pid === undefined) {
        log(false, `no broker of ours is running for ${brokers}`)
        return 0
      }
      await terminate(pid)
      log(false, `stopped Kafka (pid ${pid})`)
      return 0
    }
    case 'status': {
      const pid = runningDevPid(dev.pidFile, dev.dataDir)
      try {
        const clusterId = await queryClusterId(brokers, 3_000)
        console.log(
          `Kafka answers at ${brokers} (cluster ${clusterId}${pid ? `, pid ${pid}` : ', not started by this script'})`,
        )
        return 0
      } catch (error) {
        console.log(
          `Kafka does not answer at ${brokers}${pid ? ` (pid ${pid} is running)` : ''}: ${errorMessage(error)}`,
        )
        return 1
      }
    }
    case 'run': {
      const started = await start({
        port: dev.port,
        controllerPort: dev.controllerPort,
        dataDir: dev.dataDir,
      })
      // Signal listeners do not keep Node alive; the JVM child is what this mode waits on.
      started.current().child.ref()
      console.log(`KAFKA_BROKERS=${brokers}`)
      log(false, 'running in the foreground; Ctrl-C stops it')
      const signal = await Promise.race([
        new Promise<string>((resolveSignal) => {
          process.once('SIGINT', () => resolveSignal('SIGINT'))
          process.once('SIGTERM', () => resolveSignal('SIGTERM'))
        }),
        started.current().exited.then((reason) => {
          throw brokerError(`Kafka broker ${reason}; see ${dev.dataDir}/broker.log`)
        }),
      ])
      log(false, `${signal}: stopping`)
      await started.broker.stop()
      return 0
    }
    default:
      console.error(
        'usage: node scripts/kafka-broker.ts start|stop|status|run\n' +
          '  start   start a broker on 127.0.0.1:9092 (KAFKA_PORT to change; controller on port+1) and leave it running\n' +
          '  stop    stop the broker that `start` left running\n' +
          '  status  tell whether a broker answers on that port\n' +
          '  run     start a broker and keep it in the foreground until Ctrl-C',
      )
      return 2
  }
}
