// One single-node Kafka broker (KRaft, combined broker + controller).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { brokerError, errorMessage, HOST, KAFKA_VERSION, log, READY_TIMEOUT_MS } from './common.ts'
import {
  type Layout,
  layout,
  type ProxiedListenerOptions,
  type SaslSslListenerOptions,
  serverProperties,
} from './config.ts'
import { ensureJars } from './jars.ts'
import { type JvmProfile, jvmGuard, logTail, type Running, spawnJvm, terminate, waitForExit } from './jvm.ts'
import { assertPortFree, freePorts } from './ports.ts'
import { queryClusterId } from './probe.ts'
import { formatStorage } from './storage.ts'

export interface KafkaBrokerOptions {
  /** Client (PLAINTEXT) port; a free port is picked when omitted. */
  port?: number
  /** KRaft controller port; a free port is picked when omitted. */
  controllerPort?: number
  /** Where storage, config and logs live; a fresh temp dir (removed by stop()) when omitted. */
  dataDir?: string
  /** Suppress the progress lines written to stderr. */
  quiet?: boolean
  /**
   * `test` (default): a small heap and the quick JIT only, to start fast and stay light beside a
   * test suite. `server`: Kafka's own default JVM settings (G1, 20 ms pause goal, full JIT), for
   * benchmarks, whose latency figures would otherwise measure the test profile's compiler.
   */
  jvm?: 'test' | 'server'
  /**
   * Also open a SASL_SSL listener (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512) on another port, for
   * testing secured clients; the PLAINTEXT listener stays for everything else.
   */
  saslSsl?: SaslSslListenerOptions
  /**
   * Also open a PLAINTEXT listener that advertises another port (a TCP proxy's, for network fault
   * tests): clients bootstrapping at `proxiedBrokers` talk to the broker only through that port.
   */
  proxiedListener?: ProxiedListenerOptions
}

export interface KafkaBroker {
  /** Bootstrap servers for clients, "127.0.0.1:PORT". */
  readonly brokers: string
  readonly port: number
  /** "127.0.0.1:PORT" of the SASL_SSL listener, when started with `saslSsl`. */
  readonly saslSslBrokers: string | undefined
  readonly saslSslPort: number | undefined
  /** With `proxiedListener`: "127.0.0.1:ADVERTISED", where clients meant to pass the proxy bootstrap. */
  readonly proxiedBrokers: string | undefined
  /** With `proxiedListener`: the port the broker binds for it, the proxy's target. */
  readonly proxiedPort: number | undefined
  readonly dataDir: string
  /** Pid of the current JVM; changes on restart(). */
  readonly pid: number
  /** Stops the JVM (SIGTERM, SIGKILL after 20 s); resolves once the process is gone. */
  stop(): Promise<void>
  /** Stops and starts again on the same ports and data dir, so topics and records survive. */
  restart(): Promise<void>
}

/** Everything one broker needs to launch its JVM again on restart(). */
interface LaunchSettings {
  jarsDir: string
  layout: Layout
  clusterId: string
  quiet: boolean | undefined
  jvm: JvmProfile
}

/** The state of one broker started here: what it runs with, its current JVM, whether it was stopped. */
interface BrokerState {
  readonly settings: LaunchSettings
  readonly ownsDataDir: boolean
  running: Running
  stopped: boolean
}

async function launch(s: LaunchSettings): Promise<Running> {
  const l = s.layout
  await assertPortFree(l.port, 'client')
  await assertPortFree(l.controllerPort, 'controller')
  if (l.saslSsl) await assertPortFree(l.saslSsl.port, 'SASL_SSL')
  if (l.proxied) await assertPortFree(l.proxied.port, 'proxied listener')
  const started = Date.now()
  const { child, pid, exited } = await spawnJvm(s.jarsDir, l, s.jvm)

  const brokers = `${HOST}:${l.port}`
  let exitReason: string | undefined
  void exited.then((reason) => {
    exitReason = reason
  })
  const deadline = started + READY_TIMEOUT_MS
  let lastError = ''
  for (;;) {
    if (exitReason !== undefined) {
      jvmGuard.delete(pid)
      throw brokerError(`Kafka broker (pid ${pid}) ${exitReason} before it answered.\n${await logTail(l)}`)
    }
    try {
      const answeringId = await queryClusterId(brokers, 2_000)
      if (answeringId === s.clusterId) break
      lastError = `${brokers} answers with cluster id ${answeringId}, not ours (${s.clusterId})`
    } catch (error) {
      lastError = errorMessage(error)
    }
    if (Date.now() >= deadline) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // It died on its own just now; the log tail below says why.
      }
      await waitForExit(pid, 5_000)
      jvmGuard.delete(pid)
      throw brokerError(
        `Kafka broker (pid ${pid}) did not answer on ${brokers} within ${READY_TIMEOUT_MS / 1000} s (last error: ${lastError}).\n${await logTail(l)}`,
      )
    }
    await sleep(250)
  }
  log(
    s.quiet,
    `Kafka ${KAFKA_VERSION} ready at ${brokers} in ${((Date.now() - started) / 1000).toFixed(1)} s (pid ${pid}, data ${l.dataDir})`,
  )
  return { child, pid, exited }
}

export interface Started {
  broker: KafkaBroker
  /** The running JVM, for the CLI's foreground mode to notice a broker that dies on its own. */
  current(): Running
}

export async function start(options: KafkaBrokerOptions): Promise<Started> {
  const [freePort, freeControllerPort, freeSaslSslPort, freeProxiedPort] = await freePorts(4)
  const port = options.port ?? (freePort as number)
  const controllerPort = options.controllerPort ?? (freeControllerPort as number)
  if (port === controllerPort)
    throw brokerError(`Kafka's client and controller ports must differ (both are ${port})`)
  const saslSsl = options.saslSsl && {
    ...options.saslSsl,
    port: options.saslSsl.port ?? (freeSaslSslPort as number),
  }
  if (saslSsl) {
    if ([port, controllerPort].includes(saslSsl.port))
      throw brokerError(
        `Kafka's SASL_SSL port ${saslSsl.port} must differ from the client and controller ports`,
      )
    if (!saslSsl.certificateChain?.includes('-----BEGIN CERTIFICATE-----'))
      throw brokerError('saslSsl.certificateChain must be PEM text with at least one certificate')
    if (!saslSsl.privateKey?.includes('-----BEGIN PRIVATE KEY-----'))
      throw brokerError(
        'saslSsl.privateKey must be an unencrypted PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----)',
      )
  }
  const proxied = options.proxiedListener && {
    advertisedPort: options.proxiedListener.advertisedPort,
    port: options.proxiedListener.port ?? (freeProxiedPort as number),
  }
  if (proxied) {
    for (const [name, value] of Object.entries(proxied)) {
      if (!Number.isInteger(value) || value < 1 || value > 65_535)
        throw brokerError(`proxiedListener.${name} must be a TCP port (1-65535), got ${value}`)
    }
    const taken = [port, controllerPort, ...(saslSsl ? [saslSsl.port] : [])]
    if (taken.includes(proxied.port) || taken.includes(proxied.advertisedPort))
      throw brokerError(
        `proxiedListener ports (${proxied.port}, advertised ${proxied.advertisedPort}) must differ from the broker's other ports (${taken.join(', ')})`,
      )
    if (proxied.port === proxied.advertisedPort)
      throw brokerError(
        `proxiedListener.advertisedPort must be the proxy's port, not the listener's own (${proxied.port})`,
      )
  }
  const ownsDataDir = options.dataDir === undefined
  const dataDir = options.dataDir
    ? resolve(options.dataDir)
    : await mkdtemp(join(tmpdir(), 'k-entity-kafka-'))
  await mkdir(dataDir, { recursive: true })

  const l = layout(port, controllerPort, dataDir, saslSsl, proxied)
  await writeFile(l.properties, serverProperties(l))
  const jarsDir = await ensureJars(options.quiet)
  const clusterId = await formatStorage(jarsDir, l)
  const settings: LaunchSettings = {
    jarsDir,
    layout: l,
    clusterId,
    quiet: options.quiet,
    jvm: options.jvm ?? 'test',
  }
  const state: BrokerState = { settings, ownsDataDir, running: await launch(settings), stopped: false }
  const stopProcess = async (): Promise<void> => {
    await terminate(state.running.pid)
    jvmGuard.delete(state.running.pid)
  }
  const broker: KafkaBroker = {
    brokers: `${HOST}:${port}`,
    port,
    saslSslBrokers: saslSsl && `${HOST}:${saslSsl.port}`,
    saslSslPort: saslSsl?.port,
    proxiedBrokers: proxied && `${HOST}:${proxied.advertisedPort}`,
    proxiedPort: proxied?.port,
    dataDir,
    get pid() {
      return state.running.pid
    },
    async stop() {
      if (state.stopped) return
      state.stopped = true
      await stopProcess()
      if (state.ownsDataDir) await rm(dataDir, { recursive: true, force: true })
    },
    async restart() {
      if (state.stopped) throw brokerError('Cannot restart a Kafka broker after stop()')
      await stopProcess()
      state.running = await launch(state.settings)
    },
  }
  return { broker, current: () => state.running }
}

/** Starts a single-node Kafka broker and resolves once it answers metadata requests. */
export async function startKafkaBroker(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
  return (await start(options)).broker
}
