// A real single-node Apache Kafka broker (KRaft, combined broker + controller) for tests and demos,
// run from Maven Central jars because no Docker image or OS package is available here.
// Library: startKafkaBroker(). CLI: node scripts/kafka-broker.ts start|stop|status|run.
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join, relative, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { Admin } from '@platformatic/kafka'

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
}

export interface SaslSslListenerOptions {
  /** Port of the SASL_SSL listener; a free port is picked when omitted. */
  port?: number
  /** The broker's certificate chain, PEM text (server certificate first). */
  certificateChain: string
  /** The broker's private key, PEM text, unencrypted PKCS#8 (`-----BEGIN PRIVATE KEY-----`). */
  privateKey: string
  /** Users for SCRAM-SHA-256 and SCRAM-SHA-512, name to password (stored at format time). */
  scramUsers?: Record<string, string>
  /** Users for PLAIN, name to password (in the listener's JAAS config). */
  plainUsers?: Record<string, string>
}

export interface KafkaBroker {
  /** Bootstrap servers for clients, "127.0.0.1:PORT". */
  readonly brokers: string
  readonly port: number
  /** "127.0.0.1:PORT" of the SASL_SSL listener, when started with `saslSsl`. */
  readonly saslSslBrokers: string | undefined
  readonly saslSslPort: number | undefined
  readonly dataDir: string
  /** Pid of the current JVM; changes on restart(). */
  readonly pid: number
  /** Stops the JVM (SIGTERM, SIGKILL after 20 s); resolves once the process is gone. */
  stop(): Promise<void>
  /** Stops and starts again on the same ports and data dir, so topics and records survive. */
  restart(): Promise<void>
}

const execFileAsync = promisify(execFile)

const REPO_ROOT = resolve(import.meta.dirname, '..')
const POM = join(REPO_ROOT, 'scripts', 'kafka', 'pom.xml')
const LOG4J_CONFIG = join(REPO_ROOT, 'scripts', 'kafka', 'log4j2.xml')
const READY_TIMEOUT_MS = 90_000
const STOP_TIMEOUT_MS = 20_000
const LOG_TAIL_LINES = 40
const HOST = '127.0.0.1'

export const KAFKA_VERSION = readPomProperty('kafka.version')

function readPomProperty(name: string): string {
  const match = new RegExp(`<${name}>([^<]+)</${name}>`).exec(readFileSync(POM, 'utf8'))
  if (!match?.[1]) throw new Error(`${POM} has no <${name}> property`)
  return match[1].trim()
}

function log(quiet: boolean | undefined, message: string): void {
  if (!quiet) process.stderr.write(`kafka-broker: ${message}\n`)
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/** execFile's error message names the command; what the command printed explains the failure. */
function describeExecError(error: unknown): string {
  const printed = (key: 'stdout' | 'stderr'): string =>
    typeof error === 'object' && error !== null && key in error
      ? String((error as Record<string, unknown>)[key])
      : ''
  return [errorMessage(error), printed('stdout').trimEnd(), printed('stderr').trimEnd()]
    .filter(Boolean)
    .join('\n')
}

function javaBinary(): string {
  return process.env.JAVA_HOME ? join(process.env.JAVA_HOME, 'bin', 'java') : 'java'
}

// ---------------------------------------------------------------------------------------------
// Jars

/**
 * Returns the folder holding the broker's classpath, running Maven only when the folder is
 * missing or was filled from a different pom (the marker holds the pom's text).
 */
async function ensureJars(quiet: boolean | undefined): Promise<string> {
  const jarsDir = join(REPO_ROOT, '.kafka', `jars-${KAFKA_VERSION}`)
  const marker = join(jarsDir, '.complete')
  const pom = await readFile(POM, 'utf8')
  const isComplete = async () => existsSync(marker) && (await readFile(marker, 'utf8')) === pom
  if (await isComplete()) return jarsDir

  log(quiet, `fetching Kafka ${KAFKA_VERSION} jars with Maven into ${relative(REPO_ROOT, jarsDir)}/`)
  const started = Date.now()
  // Copy into a private folder and rename it into place, so a concurrent start (a test run
  // beside `npm run kafka start`) never sees a half-filled classpath.
  const staging = `${jarsDir}.tmp-${process.pid}`
  await rm(staging, { recursive: true, force: true })
  try {
    await execFileAsync(
      'mvn',
      [
        '-B',
        '-q',
        '-f',
        POM,
        'dependency:copy-dependencies',
        '-DincludeScope=runtime',
        `-DoutputDirectory=${staging}`,
      ],
      { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 },
    )
  } catch (error) {
    await rm(staging, { recursive: true, force: true })
    throw new Error(
      `Could not fetch the Kafka broker jars with Maven (is mvn installed and Maven Central reachable?): ${describeExecError(error)}`,
    )
  }
  if (!(await readdir(staging)).some((file) => file.startsWith('kafka_2.13-'))) {
    throw new Error(`Maven finished but ${staging} holds no kafka_2.13 jar`)
  }
  await writeFile(join(staging, '.complete'), pom)
  if (await isComplete()) {
    // A concurrent start finished first and may already run a JVM from that folder: keep it.
    await rm(staging, { recursive: true, force: true })
  } else {
    await rm(jarsDir, { recursive: true, force: true })
    await rename(staging, jarsDir)
  }
  log(quiet, `jars ready in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  return jarsDir
}

// ---------------------------------------------------------------------------------------------
// Ports

function listen(port: number): Promise<Server> {
  return new Promise((resolveListen, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen({ port, host: HOST, exclusive: true }, () => resolveListen(server))
  })
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolveClose) => server.close(() => resolveClose()))
}

/** Picks free ports, holding all of them open at once so the same port is never returned twice. */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: count }, () => listen(0)))
  const ports = servers.map((server) => {
    const address = server.address()
    if (address === null || typeof address === 'string') throw new Error('listen(0) gave no TCP port')
    return address.port
  })
  await Promise.all(servers.map(closeServer))
  return ports
}

/**
 * Fails when a port is taken: otherwise the readiness probe could mistake someone else's broker
 * on that port for ours during the seconds before our JVM fails to bind.
 */
async function assertPortFree(port: number, what: string): Promise<void> {
  try {
    await closeServer(await listen(port))
  } catch (error) {
    throw new Error(
      `Cannot start Kafka: ${what} port ${HOST}:${port} is already in use (${errorMessage(error)})`,
    )
  }
}

// ---------------------------------------------------------------------------------------------
// Storage and config

interface Layout {
  port: number
  controllerPort: number
  saslSsl: (SaslSslListenerOptions & { port: number }) | undefined
  dataDir: string
  logDir: string
  properties: string
  consoleLog: string
  brokerLog: string
}

function layout(
  port: number,
  controllerPort: number,
  dataDir: string,
  saslSsl?: SaslSslListenerOptions & { port: number },
): Layout {
  return {
    port,
    controllerPort,
    saslSsl,
    dataDir,
    logDir: join(dataDir, 'kraft'),
    properties: join(dataDir, 'server.properties'),
    consoleLog: join(dataDir, 'broker.out'),
    brokerLog: join(dataDir, 'broker.log'),
  }
}

function serverProperties(l: Layout): string {
  const plaintext = `${HOST}:${l.port}`
  const controller = `${HOST}:${l.controllerPort}`
  const secured = l.saslSsl ? `,SASL_SSL://${HOST}:${l.saslSsl.port}` : ''
  return `${[
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.bootstrap.servers=${controller}`,
    `listeners=PLAINTEXT://${plaintext},CONTROLLER://${controller}${secured}`,
    `advertised.listeners=PLAINTEXT://${plaintext},CONTROLLER://${controller}${secured}`,
    'controller.listener.names=CONTROLLER',
    'inter.broker.listener.name=PLAINTEXT',
    `listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT${l.saslSsl ? ',SASL_SSL:SASL_SSL' : ''}`,
    ...(l.saslSsl ? saslSslProperties(l.saslSsl) : []),
    `log.dirs=${l.logDir}`,
    // One node: every internal topic must accept a replication factor of 1.
    'offsets.topic.replication.factor=1',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'share.coordinator.state.topic.replication.factor=1',
    'share.coordinator.state.topic.min.isr=1',
    'default.replication.factor=1',
    'min.insync.replicas=1',
    // Internal topics default to 50 partitions, which makes the first group join or transaction
    // wait for 50 leader elections; one partition is plenty for tests.
    'offsets.topic.num.partitions=1',
    'transaction.state.log.num.partitions=1',
    'num.partitions=1',
    'auto.create.topics.enable=true',
    // A lone consumer should get its partitions at once instead of after the default 3 s.
    'group.initial.rebalance.delay.ms=0',
  ].join('\n')}\n`
}

/** A value for a .properties file: backslash escapes keep PEM newlines and JAAS quotes intact. */
function propertyValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\r?\n/g, '\\n')
}

function saslSslProperties(listener: SaslSslListenerOptions): string[] {
  const prefix = 'listener.name.sasl_ssl'
  const plainUsers = Object.entries(listener.plainUsers ?? {})
    .map(([name, password]) => ` user_${name}=${JSON.stringify(password)}`)
    .join('')
  return [
    `${prefix}.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512`,
    `${prefix}.plain.sasl.jaas.config=${propertyValue(`org.apache.kafka.common.security.plain.PlainLoginModule required${plainUsers};`)}`,
    `${prefix}.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;`,
    `${prefix}.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;`,
    // PEM given inline: a PEM file keystore would require an encrypted key and its password.
    `${prefix}.ssl.keystore.type=PEM`,
    `${prefix}.ssl.keystore.certificate.chain=${propertyValue(listener.certificateChain.trim())}`,
    `${prefix}.ssl.keystore.key=${propertyValue(listener.privateKey.trim())}`,
  ]
}

/** Kafka's `--add-scram` syntax has no quoting: reject what it would misparse. */
function scramArguments(listener: SaslSslListenerOptions | undefined): string[] {
  const args: string[] = []
  for (const [name, password] of Object.entries(listener?.scramUsers ?? {})) {
    for (const [what, value] of [
      ['name', name],
      ['password', password],
    ]) {
      if (!/^[\w.@+-]+$/.test(value as string)) {
        throw new Error(
          `saslSsl.scramUsers: a SCRAM user ${what} may only hold letters, digits and . @ + - _ (Kafka's --add-scram cannot quote)`,
        )
      }
    }
    for (const mechanism of ['SCRAM-SHA-256', 'SCRAM-SHA-512']) {
      args.push('--add-scram', `${mechanism}=[name=${name},password=${password}]`)
    }
  }
  return args
}

const JVM_PROFILES = {
  test: ['-Xms256m', '-Xmx512m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1'],
  // KAFKA_HEAP_OPTS and KAFKA_JVM_PERFORMANCE_OPTS as bin/kafka-run-class.sh sets them by default.
  server: [
    '-Xmx1g',
    '-Xms1g',
    '-server',
    '-XX:+UseG1GC',
    '-XX:MaxGCPauseMillis=20',
    '-XX:InitiatingHeapOccupancyPercent=35',
    '-XX:+ExplicitGCInvokesConcurrent',
  ],
}

function jvmArgs(jarsDir: string, l: Layout, profile: 'test' | 'server' = 'test'): string[] {
  return [
    ...JVM_PROFILES[profile],
    `-Dlog4j2.configurationFile=${LOG4J_CONFIG}`,
    `-Dkafka.logs.dir=${l.dataDir}`,
    '-cp',
    `${jarsDir}/*`,
  ]
}

/** Kafka's Uuid: 16 random bytes, base64url; ids whose text starts with '-' are rejected by its CLI. */
function randomClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url')
    if (!id.startsWith('-')) return id
  }
}

async function readClusterId(l: Layout): Promise<string | undefined> {
  const metaFile = join(l.logDir, 'meta.properties')
  if (!existsSync(metaFile)) return undefined
  return /^cluster\.id=(.+)$/m.exec(await readFile(metaFile, 'utf8'))?.[1]?.trim()
}

/** Formats the KRaft storage unless an earlier run did, and returns the cluster id stored there. */
async function formatStorage(jarsDir: string, l: Layout, cluster?: { id: string }): Promise<string> {
  const existing = await readClusterId(l)
  if (existing) return existing
  try {
    await execFileAsync(
      javaBinary(),
      [
        ...jvmArgs(jarsDir, l),
        'kafka.tools.StorageTool',
        'format',
        '-t',
        cluster?.id ?? randomClusterId(),
        '-c',
        l.properties,
        // A cluster names its controller in controller.quorum.voters, with which --standalone is refused.
        ...(cluster === undefined ? ['--standalone'] : []),
        '--ignore-formatted',
        ...scramArguments(l.saslSsl),
      ],
      { cwd: l.dataDir },
    )
  } catch (error) {
    throw new Error(`Formatting Kafka storage in ${l.logDir} failed: ${describeExecError(error)}`)
  }
  const formatted = await readClusterId(l)
  if (!formatted)
    throw new Error(`Kafka's StorageTool ran but wrote no cluster.id to ${l.logDir}/meta.properties`)
  return formatted
}

async function logTail(l: Layout): Promise<string> {
  const parts: string[] = []
  for (const file of [l.consoleLog, l.brokerLog]) {
    const text = existsSync(file) ? (await readFile(file, 'utf8')).trimEnd() : ''
    if (!text) continue
    parts.push(
      `--- last ${LOG_TAIL_LINES} lines of ${file} ---\n${text.split('\n').slice(-LOG_TAIL_LINES).join('\n')}`,
    )
  }
  return parts.length > 0 ? parts.join('\n') : `(no broker output in ${l.dataDir})`
}

// ---------------------------------------------------------------------------------------------
// Process control

/** JVMs that must not outlive this Node process (a crashed test run would otherwise leak them). */
const killOnExit = new Set<number>()

function killAll(): void {
  for (const pid of killOnExit) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // Already gone.
    }
  }
}
process.on('exit', killAll)

// A signal with no listener ends Node without an 'exit' event, and the detached JVM would live
// on. So while we own JVMs we listen, but only act when nobody else does: a host that handles
// the signal itself (scripts/test.ts, the CLI's run) stops its brokers or exits through 'exit'.
const FATAL_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

function onFatalSignal(signal: NodeJS.Signals): void {
  if (process.listenerCount(signal) > 1) return
  killAll()
  for (const s of FATAL_SIGNALS) process.removeListener(s, onFatalSignal)
  process.kill(process.pid, signal)
}

function guard(pid: number): void {
  if (killOnExit.size === 0) for (const s of FATAL_SIGNALS) process.on(s, onFatalSignal)
  killOnExit.add(pid)
}

function unguard(pid: number): void {
  killOnExit.delete(pid)
  if (killOnExit.size === 0) for (const s of FATAL_SIGNALS) process.removeListener(s, onFatalSignal)
}

/** True while the pid names a process that has not exited; a zombie has exited. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    // Field 3 of /proc/PID/stat is the state; the command name before it may contain spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (isAlive(pid)) {
    if (Date.now() >= deadline) return false
    await sleep(100)
  }
  return true
}

/** SIGTERM for a clean shutdown (so logs are flushed), SIGKILL if that takes too long. */
async function terminate(pid: number): Promise<void> {
  if (!isAlive(pid)) return
  process.kill(pid, 'SIGTERM')
  if (await waitForExit(pid, STOP_TIMEOUT_MS)) return
  process.kill(pid, 'SIGKILL')
  if (!(await waitForExit(pid, 5_000))) throw new Error(`Kafka broker pid ${pid} survived SIGKILL`)
}

/** The cluster id a broker reports, or an error if nothing answers in time. */
async function queryClusterId(brokers: string, timeoutMs: number): Promise<string> {
  const admin = new Admin({
    clientId: 'k-entity-kafka-broker',
    bootstrapBrokers: [brokers],
    retries: 0,
    connectTimeout: timeoutMs,
    requestTimeout: timeoutMs,
  })
  try {
    const metadata = await admin.metadata({ topics: [] })
    if (metadata.brokers.size === 0) throw new Error('the broker reports no live brokers yet')
    return metadata.id
  } finally {
    await admin.close().catch(() => undefined)
  }
}

interface Running {
  child: ChildProcess
  pid: number
  /** Settles with a description of how the JVM ended. */
  exited: Promise<string>
}

interface LaunchSettings {
  jarsDir: string
  layout: Layout
  clusterId: string
  quiet: boolean | undefined
  jvm: 'test' | 'server'
}

async function launch(s: LaunchSettings): Promise<Running> {
  const l = s.layout
  await assertPortFree(l.port, 'client')
  await assertPortFree(l.controllerPort, 'controller')
  if (l.saslSsl) await assertPortFree(l.saslSsl.port, 'SASL_SSL')
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
      unguard(pid)
      throw new Error(`Kafka broker (pid ${pid}) ${exitReason} before it answered.\n${await logTail(l)}`)
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
      unguard(pid)
      throw new Error(
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

interface Started {
  broker: KafkaBroker
  /** The running JVM, for the CLI's foreground mode to notice a broker that dies on its own. */
  current(): Running
}

async function start(options: KafkaBrokerOptions): Promise<Started> {
  const [freePort, freeControllerPort, freeSaslSslPort] = await freePorts(3)
  const port = options.port ?? (freePort as number)
  const controllerPort = options.controllerPort ?? (freeControllerPort as number)
  if (port === controllerPort)
    throw new Error(`Kafka's client and controller ports must differ (both are ${port})`)
  const saslSsl = options.saslSsl && {
    ...options.saslSsl,
    port: options.saslSsl.port ?? (freeSaslSslPort as number),
  }
  if (saslSsl) {
    if ([port, controllerPort].includes(saslSsl.port))
      throw new Error(
        `Kafka's SASL_SSL port ${saslSsl.port} must differ from the client and controller ports`,
      )
    if (!saslSsl.certificateChain?.includes('-----BEGIN CERTIFICATE-----'))
      throw new Error('saslSsl.certificateChain must be PEM text with at least one certificate')
    if (!saslSsl.privateKey?.includes('-----BEGIN PRIVATE KEY-----'))
      throw new Error(
        'saslSsl.privateKey must be an unencrypted PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----)',
      )
  }
  const ownsDataDir = options.dataDir === undefined
  const dataDir = options.dataDir
    ? resolve(options.dataDir)
    : await mkdtemp(join(tmpdir(), 'k-entity-kafka-'))
  await mkdir(dataDir, { recursive: true })

  const l = layout(port, controllerPort, dataDir, saslSsl)
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

  let running = await launch(settings)
  let stopped = false
  const stopProcess = async (): Promise<void> => {
    await terminate(running.pid)
    unguard(running.pid)
  }
  const broker: KafkaBroker = {
    brokers: `${HOST}:${port}`,
    port,
    saslSslBrokers: saslSsl && `${HOST}:${saslSsl.port}`,
    saslSslPort: saslSsl?.port,
    dataDir,
    get pid() {
      return running.pid
    },
    async stop() {
      if (stopped) return
      stopped = true
      await stopProcess()
      if (ownsDataDir) await rm(dataDir, { recursive: true, force: true })
    },
    async restart() {
      if (stopped) throw new Error('Cannot restart a Kafka broker after stop()')
      await stopProcess()
      running = await launch(settings)
    },
  }
  return { broker, current: () => running }
}

/** Starts a single-node Kafka broker and resolves once it answers metadata requests. */
export async function startKafkaBroker(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
  return (await start(options)).broker
}

// ---------------------------------------------------------------------------------------------
// Cluster

export interface KafkaClusterOptions {
  /** Number of brokers (default 3), node ids 1..n; a controller-only node (id 0) runs beside them. */
  brokers?: number
  /** Suppress the progress lines written to stderr. */
  quiet?: boolean
  /**
   * How long the controller waits for a silent broker before it fences it, moves its leaders and
   * drops it from the in-sync replicas (`broker.session.timeout.ms`, Kafka's default 9000). Until
   * then acks=all produce requests wait on every partition that has the dead broker in its ISR,
   * not only on the partitions it led.
   */
  brokerSessionTimeoutMs?: number
}

export interface KafkaClusterNode {
  readonly nodeId: number
  /** PLAINTEXT port of a broker. */
  readonly port: number
  /** Pid of the node's current JVM. */
  readonly pid: number
  readonly alive: boolean
}

export interface KafkaCluster {
  /** Bootstrap servers, one "127.0.0.1:PORT" per broker. */
  readonly brokers: string[]
  readonly nodes: readonly KafkaClusterNode[]
  /** Sends the signal to one broker's JVM (SIGKILL: it dies at once, as on a crash) and waits until it is gone. */
  kill(nodeId: number, signal?: NodeJS.Signals): Promise<void>
  /** Starts a killed broker again on its own storage and port; resolves when the cluster has every broker back. */
  restart(nodeId: number): Promise<void>
  /** Stops every node (SIGTERM, SIGKILL after 20 s) and removes their data. */
  stop(): Promise<void>
}

/**
 * A KRaft cluster of `brokers` brokers and one controller-only node, each a JVM on free ports of
 * its own, for tests of a broker that dies: new topics get replication factor min(3, brokers)
 * and min.insync.replicas 2, so a topic survives one dead broker and still acknowledges with acks=all.
 */
export async function startKafkaCluster(options: KafkaClusterOptions = {}): Promise<KafkaCluster> {
  const count = options.brokers ?? 3
  if (!Number.isInteger(count) || count < 1 || count > 9) {
    throw new Error(`startKafkaCluster: brokers must be an integer from 1 to 9, got ${count}`)
  }
  const session = options.brokerSessionTimeoutMs
  const replication = Math.min(3, count)
  const minIsr = Math.min(2, replication)
  const ports = await freePorts(count + 1)
  const controllerPort = ports[0] as number
  const root = await mkdtemp(join(tmpdir(), 'k-entity-kafka-cluster-'))
  const voters = `0@${HOST}:${controllerPort}`
  const common = [
    `controller.quorum.voters=${voters}`,
    'controller.listener.names=CONTROLLER',
    'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
  ]
  const nodes: Array<{ nodeId: number; port: number; layout: Layout; running: Running | undefined }> = []
  const controllerLayout = layout(controllerPort, controllerPort, join(root, 'node-0'))
  nodes.push({ nodeId: 0, port: controllerPort, layout: controllerLayout, running: undefined })
  for (let i = 1; i <= count; i++) {
    const port = ports[i] as number
    nodes.push({
      nodeId: i,
      port,
      layout: layout(port, controllerPort, join(root, `node-${i}`)),
      running: undefined,
    })
  }
  const properties = (nodeId: number, l: Layout): string =>
    `${(
      nodeId === 0
        ? [
            'process.roles=controller',
            'node.id=0',
            ...common,
            ...(session === undefined ? [] : [`broker.session.timeout.ms=${session}`]),
            `listeners=CONTROLLER://${HOST}:${controllerPort}`,
            `log.dirs=${l.logDir}`,
          ]
        : [
            'process.roles=broker',
            `node.id=${nodeId}`,
            ...common,
            `listeners=PLAINTEXT://${HOST}:${l.port}`,
            `advertised.listeners=PLAINTEXT://${HOST}:${l.port}`,
            'inter.broker.listener.name=PLAINTEXT',
            ...(session === undefined
              ? []
              : [
                  `broker.heartbeat.interval.ms=${Math.max(100, Math.floor(session / 6))}`,
                  `replica.lag.time.max.ms=${session}`,
                ]),
            `log.dirs=${l.logDir}`,
            `offsets.topic.replication.factor=${replication}`,
            `transaction.state.log.replication.factor=${replication}`,
            `transaction.state.log.min.isr=${minIsr}`,
            `share.coordinator.state.topic.replication.factor=${replication}`,
            `share.coordinator.state.topic.min.isr=${minIsr}`,
            `default.replication.factor=${replication}`,
            `min.insync.replicas=${minIsr}`,
            'offsets.topic.num.partitions=1',
            'transaction.state.log.num.partitions=1',
            'num.partitions=1',
            'auto.create.topics.enable=true',
            'group.initial.rebalance.delay.ms=0',
          ]
    ).join('\n')}\n`
  const jarsDir = await ensureJars(options.quiet)
  const clusterId = randomClusterId()
  await Promise.all(
    nodes.map(async (node) => {
      await mkdir(node.layout.dataDir, { recursive: true })
      await writeFile(node.layout.properties, properties(node.nodeId, node.layout))
      await formatStorage(jarsDir, node.layout, { id: clusterId })
    }),
  )
  const started = Date.now()
  const brokers = nodes.filter((n) => n.nodeId !== 0).map((n) => `${HOST}:${n.port}`)
  const stopAll = async () => {
    // Brokers first: a broker without its controller waits for it instead of shutting down.
    await Promise.all(nodes.filter((n) => n.nodeId !== 0).map((n) => stopNode(n)))
    await stopNode(nodes[0] as (typeof nodes)[number])
  }
  const stopNode = async (node: (typeof nodes)[number]) => {
    const running = node.running
    if (running === undefined) return
    await terminate(running.pid)
    unguard(running.pid)
    node.running = undefined
  }
  try {
    for (const node of nodes) node.running = await spawnNode(jarsDir, node.layout)
    await waitForCluster(brokers, count, nodes, started)
  } catch (error) {
    await stopAll().catch(() => undefined)
    await rm(root, { recursive: true, force: true })
    throw error
  }
  log(
    options.quiet,
    `Kafka ${KAFKA_VERSION} cluster of ${count} brokers ready at ${brokers.join(',')} in ${((Date.now() - started) / 1000).toFixed(1)} s`,
  )
  let stopped = false
  const find = (nodeId: number) => {
    const node = nodes.find((n) => n.nodeId === nodeId && n.nodeId !== 0)
    if (node === undefined) throw new Error(`no broker with node id ${nodeId} (brokers are 1..${count})`)
    return node
  }
  return {
    brokers,
    get nodes() {
      return nodes
        .filter((n) => n.nodeId !== 0)
        .map((n) => ({
          nodeId: n.nodeId,
          port: n.port,
          pid: n.running?.pid ?? 0,
          alive: n.running !== undefined && isAlive(n.running.pid),
        }))
    },
    async kill(nodeId, signal = 'SIGKILL') {
      const node = find(nodeId)
      const running = node.running
      if (running === undefined) return
      process.kill(running.pid, signal)
      if (!(await waitForExit(running.pid, STOP_TIMEOUT_MS)))
        throw new Error(`Kafka node ${nodeId} (pid ${running.pid}) is still alive after ${signal}`)
      unguard(running.pid)
      node.running = undefined
    },
    async restart(nodeId) {
      if (stopped) throw new Error('Cannot restart a node after stop()')
      const node = find(nodeId)
      await stopNode(node)
      const since = Date.now()
      node.running = await spawnNode(jarsDir, node.layout, false)
      // The cluster still lists a freshly killed broker until its session expires: ask this one.
      for (;;) {
        if (!isAlive(node.running.pid)) {
          throw new Error(`Kafka node ${nodeId} exited on restart.\n${await logTail(node.layout)}`)
        }
        const answer = await queryClusterId(`${HOST}:${node.port}`, 2000).catch(() => undefined)
        if (answer === clusterId) break
        if (Date.now() - since > READY_TIMEOUT_MS)
          throw new Error(
            `Kafka node ${nodeId} did not answer within ${READY_TIMEOUT_MS / 1000} s of its restart`,
          )
        await sleep(250)
      }
      await waitForCluster(brokers, count, nodes, since)
    },
    async stop() {
      if (stopped) return
      stopped = true
      await stopAll()
      await rm(root, { recursive: true, force: true })
    },
  }
}

async function spawnNode(jarsDir: string, l: Layout, fresh = true): Promise<Running> {
  // Not on a restart: the peers' connections to the dead broker's port may linger a while.
  if (fresh && l.port !== l.controllerPort) await assertPortFree(l.port, 'client')
  return spawnJvm(jarsDir, l)
}

/** Starts one Kafka JVM on its layout, guarded so it is killed if this process dies. */
async function spawnJvm(jarsDir: string, l: Layout, profile: 'test' | 'server' = 'test'): Promise<Running> {
  const out = openSync(l.consoleLog, 'a')
  let child: ChildProcess
  try {
    // Detached (own process group): a Ctrl-C aimed at the test runner must not kill the broker
    // before the runner has closed its clients and stopped it in order.
    child = spawn(javaBinary(), [...jvmArgs(jarsDir, l, profile), 'kafka.Kafka', l.properties], {
      cwd: l.dataDir,
      detached: true,
      stdio: ['ignore', out, out],
    })
  } finally {
    closeSync(out)
  }
  const exited = new Promise<string>((resolveExit) => {
    child.once('error', (error) => resolveExit(`could not be started: ${error.message}`))
    child.once('exit', (code, signal) =>
      resolveExit(signal ? `was killed by ${signal}` : `exited with code ${code}`),
    )
  })
  child.unref()
  const pid = await new Promise<number>((resolveSpawn, reject) => {
    child.once('spawn', () => resolveSpawn(child.pid as number))
    child.once('error', (error) => reject(new Error(`Could not run ${javaBinary()}: ${error.message}`)))
  })
  guard(pid)
  return { child, pid, exited }
}

/** Until every live broker answers and the metadata lists all `count` brokers. */
async function waitForCluster(
  brokers: string[],
  count: number,
  nodes: Array<{ nodeId: number; layout: Layout; running: Running | undefined }>,
  started: number,
): Promise<void> {
  let lastError = ''
  for (;;) {
    for (const node of nodes) {
      if (node.running !== undefined && !isAlive(node.running.pid)) {
        throw new Error(
          `Kafka node ${node.nodeId} (pid ${node.running.pid}) exited before the cluster was ready.\n${await logTail(node.layout)}`,
        )
      }
    }
    const admin = new Admin({
      clientId: 'k-entity-kafka-cluster',
      bootstrapBrokers: brokers,
      retries: 0,
      connectTimeout: 2000,
      requestTimeout: 2000,
    })
    try {
      const metadata = await admin.metadata({ topics: [] })
      if (metadata.brokers.size >= count) return
      lastError = `${metadata.brokers.size} of ${count} brokers registered`
    } catch (error) {
      lastError = errorMessage(error)
    } finally {
      await admin.close().catch(() => undefined)
    }
    if (Date.now() - started > READY_TIMEOUT_MS) {
      throw new Error(`Kafka cluster not ready within ${READY_TIMEOUT_MS / 1000} s (last: ${lastError})`)
    }
    await sleep(250)
  }
}

// ---------------------------------------------------------------------------------------------
// CLI

function devSettings(): { port: number; controllerPort: number; dataDir: string; pidFile: string } {
  const port = process.env.KAFKA_PORT ? Number(process.env.KAFKA_PORT) : 9092
  if (!Number.isInteger(port) || port <= 0 || port > 65534) {
    throw new Error(`KAFKA_PORT must be a TCP port number, got "${process.env.KAFKA_PORT}"`)
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

async function cli(command: string | undefined): Promise<number> {
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
        unguard(broker.pid)
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
          throw new Error(`Kafka broker ${reason}; see ${dev.dataDir}/broker.log`)
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

if (import.meta.main) {
  cli(process.argv[2]).then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(errorMessage(error))
      process.exit(1)
    },
  )
}
