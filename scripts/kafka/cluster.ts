// A KRaft cluster: one controller-only node and several brokers, each a JVM of its own, whose
// brokers a test can kill and restart.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Admin } from '@platformatic/kafka'
import {
  errorMessage,
  HOST,
  KAFKA_VERSION,
  log,
  READY_TIMEOUT_MS,
  STOP_TIMEOUT_MS,
} from '../../src/dev/kafka/common.ts'
import {
  type ClusterSettings,
  clusterNodeProperties,
  type Layout,
  layout,
  type ProxiedListenerOptions,
} from '../../src/dev/kafka/config.ts'
import { ensureJars } from '../../src/dev/kafka/jars.ts'
import {
  isAlive,
  jvmGuard,
  logTail,
  type Running,
  spawnJvm,
  terminate,
  waitForExit,
} from '../../src/dev/kafka/jvm.ts'
import { assertPortFree, freePorts } from '../../src/dev/kafka/ports.ts'
import { queryClusterId } from '../../src/dev/kafka/probe.ts'
import { formatStorage, randomClusterId } from '../../src/dev/kafka/storage.ts'

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
  /**
   * `replica.lag.time.max.ms` when it should differ from `brokerSessionTimeoutMs` (which it
   * follows by default): below it, the in-sync replicas shrink (and live leaders take acks=all
   * writes again) before the controller moves the dead broker's leaders.
   */
  replicaLagTimeMs?: number
  /**
   * One per broker (node ids 1..n in order): a second PLAINTEXT listener, PROXIED, bound on `port`
   * (a free one when omitted) and advertised on `advertisedPort`, where a TCP proxy in front of it
   * listens. A client bootstrapping at `proxiedBrokers` is then sent to the proxies for every
   * broker; one bootstrapping at `brokers` is not. Every broker needs one: metadata names a broker
   * only on the listener the request came in on.
   */
  proxiedListeners?: ProxiedListenerOptions[]
}

export interface KafkaClusterNode {
  readonly nodeId: number
  /** PLAINTEXT port of a broker. */
  readonly port: number
  /** With `proxiedListeners`: the port its PROXIED listener binds, the proxy's target. */
  readonly proxiedPort: number | undefined
  /** Pid of the node's current JVM. */
  readonly pid: number
  readonly alive: boolean
}

export interface KafkaCluster {
  /** Bootstrap servers, one "127.0.0.1:PORT" per broker. */
  readonly brokers: string[]
  /** With `proxiedListeners`: bootstrap servers through the proxies, one per broker. */
  readonly proxiedBrokers: string[] | undefined
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
  const replication = Math.min(3, count)
  const proxiedListeners = options.proxiedListeners
  const isPort = (p: unknown) => Number.isInteger(p) && (p as number) > 0 && (p as number) < 65_536
  if (
    proxiedListeners !== undefined &&
    (proxiedListeners.length !== count ||
      !proxiedListeners.every((l) => isPort(l?.advertisedPort) && (l.port === undefined || isPort(l.port))))
  ) {
    throw new Error(
      `startKafkaCluster: proxiedListeners must hold one { advertisedPort, port? } of TCP ports per broker (${count}), got ${JSON.stringify(proxiedListeners)}`,
    )
  }
  // One call, so that no port is handed out twice.
  const picked = await freePorts(count + 1 + (proxiedListeners === undefined ? 0 : count))
  const ports = picked.slice(0, count + 1)
  const proxied = proxiedListeners?.map((l, i) => ({
    port: l.port ?? (picked[count + 1 + i] as number),
    advertisedPort: l.advertisedPort,
  }))
  const settings: ClusterSettings = {
    controllerPort: ports[0] as number,
    sessionTimeoutMs: options.brokerSessionTimeoutMs,
    replicaLagTimeMs: options.replicaLagTimeMs,
    replication,
    minIsr: Math.min(2, replication),
  }
  const root = await mkdtemp(join(tmpdir(), 'k-entity-kafka-cluster-'))
  const nodes: ClusterNodeState[] = ports.map((port, nodeId) => ({
    nodeId,
    port,
    layout: layout(
      port,
      settings.controllerPort,
      join(root, `node-${nodeId}`),
      undefined,
      nodeId === 0 ? undefined : proxied?.[nodeId - 1],
    ),
    running: undefined,
  }))
  const jarsDir = await ensureJars(options.quiet)
  const state: ClusterState = {
    root,
    jarsDir,
    clusterId: randomClusterId(),
    count,
    brokers: nodes.filter((n) => n.nodeId !== 0).map((n) => `${HOST}:${n.port}`),
    nodes,
    stopped: false,
  }
  await Promise.all(
    nodes.map(async (node) => {
      await mkdir(node.layout.dataDir, { recursive: true })
      await writeFile(node.layout.properties, clusterNodeProperties(node.nodeId, node.layout, settings))
      await formatStorage(jarsDir, node.layout, { id: state.clusterId })
    }),
  )
  const started = Date.now()
  try {
    for (const node of nodes) node.running = await spawnNode(jarsDir, node.layout)
    await waitForCluster(state, started)
  } catch (error) {
    await stopAll(state).catch(() => undefined)
    await rm(root, { recursive: true, force: true })
    throw error
  }
  log(
    options.quiet,
    `Kafka ${KAFKA_VERSION} cluster of ${count} brokers ready at ${state.brokers.join(',')} in ${((Date.now() - started) / 1000).toFixed(1)} s`,
  )
  return {
    brokers: state.brokers,
    proxiedBrokers: proxied?.map((l) => `${HOST}:${l.advertisedPort}`),
    get nodes() {
      return state.nodes
        .filter((n) => n.nodeId !== 0)
        .map((n) => ({
          nodeId: n.nodeId,
          port: n.port,
          proxiedPort: n.layout.proxied?.port,
          pid: n.running?.pid ?? 0,
          alive: n.running !== undefined && isAlive(n.running.pid),
        }))
    },
    kill: (nodeId, signal = 'SIGKILL') => killBroker(state, nodeId, signal),
    restart: (nodeId) => restartBroker(state, nodeId),
    async stop() {
      if (state.stopped) return
      state.stopped = true
      await stopAll(state)
      await rm(state.root, { recursive: true, force: true })
    },
  }
}

interface ClusterNodeState {
  readonly nodeId: number
  readonly port: number
  readonly layout: Layout
  /** The node's JVM; undefined while it is killed or stopped. */
  running: Running | undefined
}

/** The state of one cluster started here. */
interface ClusterState {
  /** Folder holding every node's data dir; removed by stop(). */
  readonly root: string
  readonly jarsDir: string
  readonly clusterId: string
  /** Number of brokers, the controller not counted. */
  readonly count: number
  readonly brokers: string[]
  /** Node 0 (the controller) first, then brokers 1..count. */
  readonly nodes: ClusterNodeState[]
  stopped: boolean
}

function findBroker(state: ClusterState, nodeId: number): ClusterNodeState {
  const node = state.nodes.find((n) => n.nodeId === nodeId && n.nodeId !== 0)
  if (node === undefined) throw new Error(`no broker with node id ${nodeId} (brokers are 1..${state.count})`)
  return node
}

async function killBroker(state: ClusterState, nodeId: number, signal: NodeJS.Signals): Promise<void> {
  const node = findBroker(state, nodeId)
  const running = node.running
  if (running === undefined) return
  process.kill(running.pid, signal)
  if (!(await waitForExit(running.pid, STOP_TIMEOUT_MS)))
    throw new Error(`Kafka node ${nodeId} (pid ${running.pid}) is still alive after ${signal}`)
  jvmGuard.delete(running.pid)
  node.running = undefined
}

async function restartBroker(state: ClusterState, nodeId: number): Promise<void> {
  if (state.stopped) throw new Error('Cannot restart a node after stop()')
  const node = findBroker(state, nodeId)
  await stopNode(node)
  const since = Date.now()
  const running = await spawnNode(state.jarsDir, node.layout, false)
  node.running = running
  // The cluster still lists a freshly killed broker until its session expires: ask this one.
  for (;;) {
    if (!isAlive(running.pid)) {
      throw new Error(`Kafka node ${nodeId} exited on restart.\n${await logTail(node.layout)}`)
    }
    const answer = await queryClusterId(`${HOST}:${node.port}`, 2000).catch(() => undefined)
    if (answer === state.clusterId) break
    if (Date.now() - since > READY_TIMEOUT_MS)
      throw new Error(
        `Kafka node ${nodeId} did not answer within ${READY_TIMEOUT_MS / 1000} s of its restart`,
      )
    await sleep(250)
  }
  await waitForCluster(state, since)
}

async function stopNode(node: ClusterNodeState): Promise<void> {
  const running = node.running
  if (running === undefined) return
  await terminate(running.pid)
  jvmGuard.delete(running.pid)
  node.running = undefined
}

async function stopAll(state: ClusterState): Promise<void> {
  // Brokers first: a broker without its controller waits for it instead of shutting down.
  await Promise.all(state.nodes.filter((n) => n.nodeId !== 0).map(stopNode))
  await stopNode(state.nodes[0] as ClusterNodeState)
}

async function spawnNode(jarsDir: string, l: Layout, fresh = true): Promise<Running> {
  // Not on a restart: the peers' connections to the dead broker's port may linger a while.
  if (fresh && l.port !== l.controllerPort) await assertPortFree(l.port, 'client')
  return spawnJvm(jarsDir, l)
}

/** Until every live broker answers and the metadata lists all of the cluster's brokers. */
async function waitForCluster(state: ClusterState, started: number): Promise<void> {
  const { brokers, count, nodes } = state
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
