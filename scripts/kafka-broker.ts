// A real Apache Kafka broker (KRaft) for tests and demos, run from Maven Central jars because no
// Docker image or OS package is available here: a single node (startKafkaBroker) or a cluster of
// brokers beside a controller (startKafkaCluster). The single broker lives in src/dev/kafka/ (it
// ships, for `k-entity kafka`); the cluster, for tests and chaos only, in scripts/kafka/.
// CLI: node scripts/kafka-broker.ts start|stop|status|run (the same as `k-entity kafka`).
import { cli } from '../src/dev/kafka/cli.ts'
import { errorMessage } from '../src/dev/kafka/common.ts'

export { type KafkaBroker, type KafkaBrokerOptions, startKafkaBroker } from '../src/dev/kafka/broker.ts'
export { KAFKA_VERSION } from '../src/dev/kafka/common.ts'
export type { ProxiedListenerOptions, SaslSslListenerOptions } from '../src/dev/kafka/config.ts'
export {
  type KafkaCluster,
  type KafkaClusterNode,
  type KafkaClusterOptions,
  startKafkaCluster,
} from './kafka/cluster.ts'

if (import.meta.main) {
  cli(process.argv[2]).then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(errorMessage(error))
      process.exit(1)
    },
  )
}
