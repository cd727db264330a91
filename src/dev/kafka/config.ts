// Where a node keeps its files, and the server.properties it runs with.
import { join } from 'node:path'
import { brokerError, HOST } from './common.ts'

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

/**
 * A second PLAINTEXT listener whose advertised port is not its own, for a TCP proxy placed in
 * front of it: a client bootstrapping there is told to reconnect to `advertisedPort` (the proxy),
 * so every byte of its session passes the proxy, while clients of the main listener still get
 * the broker's own port (a Kafka client connects to what the broker advertises, not to where it
 * bootstrapped, so advertising the proxy on the only listener would route everyone through it).
 */
export interface ProxiedListenerOptions {
  /** The port clients are told to connect to: where the proxy listens. */
  advertisedPort: number
  /** The port the broker binds for it (what the proxy forwards to); a free port when omitted. */
  port?: number
}

export interface Layout {
  port: number
  controllerPort: number
  saslSsl: (SaslSslListenerOptions & { port: number }) | undefined
  proxied: { port: number; advertisedPort: number } | undefined
  dataDir: string
  logDir: string
  properties: string
  consoleLog: string
  brokerLog: string
}

export function layout(
  port: number,
  controllerPort: number,
  dataDir: string,
  saslSsl?: SaslSslListenerOptions & { port: number },
  proxied?: { port: number; advertisedPort: number },
): Layout {
  return {
    port,
    controllerPort,
    saslSsl,
    proxied,
    dataDir,
    logDir: join(dataDir, 'kraft'),
    properties: join(dataDir, 'server.properties'),
    consoleLog: join(dataDir, 'broker.out'),
    brokerLog: join(dataDir, 'broker.log'),
  }
}

export function serverProperties(l: Layout): string {
  const plaintext = `${HOST}:${l.port}`
  const controller = `${HOST}:${l.controllerPort}`
  const secured = l.saslSsl ? `,SASL_SSL://${HOST}:${l.saslSsl.port}` : ''
  const proxiedBound = l.proxied ? `,PROXIED://${HOST}:${l.proxied.port}` : ''
  const proxiedAdvertised = l.proxied ? `,PROXIED://${HOST}:${l.proxied.advertisedPort}` : ''
  return `${[
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.bootstrap.servers=${controller}`,
    `listeners=PLAINTEXT://${plaintext},CONTROLLER://${controller}${secured}${proxiedBound}`,
    `advertised.listeners=PLAINTEXT://${plaintext},CONTROLLER://${controller}${secured}${proxiedAdvertised}`,
    'controller.listener.names=CONTROLLER',
    'inter.broker.listener.name=PLAINTEXT',
    `listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT${l.saslSsl ? ',SASL_SSL:SASL_SSL' : ''}${l.proxied ? ',PROXIED:PLAINTEXT' : ''}`,
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
export function scramArguments(listener: SaslSslListenerOptions | undefined): string[] {
  const args: string[] = []
  for (const [name, password] of Object.entries(listener?.scramUsers ?? {})) {
    for (const [what, value] of [
      ['name', name],
      ['password', password],
    ]) {
      if (!/^[\w.@+-]+$/.test(value as string)) {
        throw brokerError(
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

export interface ClusterSettings {
  controllerPort: number
  /** broker.session.timeout.ms, when set. */
  sessionTimeoutMs: number | undefined
  /** replica.lag.time.max.ms, when it differs from the session timeout. */
  replicaLagTimeMs?: number | undefined
  replication: number
  minIsr: number
}

/** server.properties of a cluster node: node 0 is the controller alone, the others are brokers. */
export function clusterNodeProperties(nodeId: number, l: Layout, c: ClusterSettings): string {
  const session = c.sessionTimeoutMs
  const proxied = l.proxied
  const common = [
    `controller.quorum.voters=0@${HOST}:${c.controllerPort}`,
    'controller.listener.names=CONTROLLER',
    `listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT${proxied ? ',PROXIED:PLAINTEXT' : ''}`,
  ]
  return `${(
    nodeId === 0
      ? [
          'process.roles=controller',
          'node.id=0',
          ...common,
          ...(session === undefined ? [] : [`broker.session.timeout.ms=${session}`]),
          `listeners=CONTROLLER://${HOST}:${c.controllerPort}`,
          `log.dirs=${l.logDir}`,
        ]
      : [
          'process.roles=broker',
          `node.id=${nodeId}`,
          ...common,
          `listeners=PLAINTEXT://${HOST}:${l.port}${proxied ? `,PROXIED://${HOST}:${proxied.port}` : ''}`,
          `advertised.listeners=PLAINTEXT://${HOST}:${l.port}${proxied ? `,PROXIED://${HOST}:${proxied.advertisedPort}` : ''}`,
          'inter.broker.listener.name=PLAINTEXT',
          ...(session === undefined
            ? []
            : [`broker.heartbeat.interval.ms=${Math.max(100, Math.floor(session / 6))}`]),
          ...((c.replicaLagTimeMs ?? session) === undefined
            ? []
            : [`replica.lag.time.max.ms=${c.replicaLagTimeMs ?? session}`]),
          `log.dirs=${l.logDir}`,
          `offsets.topic.replication.factor=${c.replication}`,
          `transaction.state.log.replication.factor=${c.replication}`,
          `transaction.state.log.min.isr=${c.minIsr}`,
          `share.coordinator.state.topic.replication.factor=${c.replication}`,
          `share.coordinator.state.topic.min.isr=${c.minIsr}`,
          `default.replication.factor=${c.replication}`,
          `min.insync.replicas=${c.minIsr}`,
          'offsets.topic.num.partitions=1',
          'transaction.state.log.num.partitions=1',
          'num.partitions=1',
          'auto.create.topics.enable=true',
          'group.initial.rebalance.delay.ms=0',
        ]
  ).join('\n')}\n`
}
